"""The Sampler… nodes of custom sampling: a sampler with its own settings (eta, s_noise, order,
the SDE's noise device), as ComfyUI's ksampler(name, options) builds it."""
from __future__ import annotations

from typing import Literal

from engine import Node, Widget

from .custom_sampling import Sampler, SamplerOut

CATEGORY = "sampling/custom_sampling/samplers"
NoiseDevice = Literal["gpu", "cpu"]


def _sampler(name: str, **options) -> SamplerOut:
    return SamplerOut(Sampler(name, tuple(sorted(options.items()))))


class SamplerEulerAncestral(Node):
    class_type = "SamplerEulerAncestral"
    display_name = "SamplerEulerAncestral"
    category = CATEGORY

    eta: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)
    s_noise: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)

    def execute(self, ctx) -> SamplerOut:
        return _sampler("euler_ancestral", eta=self.eta, s_noise=self.s_noise)


class SamplerEulerAncestralCFGPP(Node):
    class_type = "SamplerEulerAncestralCFGPP"
    display_name = "SamplerEulerAncestralCFG++"
    category = CATEGORY

    eta: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)
    s_noise: float = Widget(1.0, ge=0.0, le=10.0, step=0.01)

    def execute(self, ctx) -> SamplerOut:
        return _sampler("euler_ancestral_cfg_pp", eta=self.eta, s_noise=self.s_noise)


class SamplerLMS(Node):
    class_type = "SamplerLMS"
    display_name = "SamplerLMS"
    category = CATEGORY

    order: int = Widget(4, ge=1, le=100)

    def execute(self, ctx) -> SamplerOut:
        return _sampler("lms", order=self.order)


class SamplerDPMPP_2S_Ancestral(Node):  # noqa: N801 - ComfyUI's node names
    class_type = "SamplerDPMPP_2S_Ancestral"
    display_name = "SamplerDPMPP_2S_Ancestral"
    category = CATEGORY

    eta: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)
    s_noise: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)

    def execute(self, ctx) -> SamplerOut:
        return _sampler("dpmpp_2s_ancestral", eta=self.eta, s_noise=self.s_noise)


class SamplerDPMPP_SDE(Node):  # noqa: N801
    class_type = "SamplerDPMPP_SDE"
    display_name = "SamplerDPMPP_SDE"
    category = CATEGORY

    eta: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)
    s_noise: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)
    r: float = Widget(0.5, ge=0.0, le=100.0, step=0.01)
    noise_device: NoiseDevice = Widget("gpu")

    def execute(self, ctx) -> SamplerOut:
        name = "dpmpp_sde" if self.noise_device == "cpu" else "dpmpp_sde_gpu"
        return _sampler(name, eta=self.eta, s_noise=self.s_noise, r=self.r)


class SamplerDPMPP_2M_SDE(Node):  # noqa: N801
    class_type = "SamplerDPMPP_2M_SDE"
    display_name = "SamplerDPMPP_2M_SDE"
    category = CATEGORY

    solver_type: Literal["midpoint", "heun"] = Widget("midpoint")
    eta: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)
    s_noise: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)
    noise_device: NoiseDevice = Widget("gpu")

    def execute(self, ctx) -> SamplerOut:
        name = "dpmpp_2m_sde" if self.noise_device == "cpu" else "dpmpp_2m_sde_gpu"
        return _sampler(name, eta=self.eta, s_noise=self.s_noise, solver_type=self.solver_type)


class SamplerDPMPP_3M_SDE(Node):  # noqa: N801
    class_type = "SamplerDPMPP_3M_SDE"
    display_name = "SamplerDPMPP_3M_SDE"
    category = CATEGORY

    eta: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)
    s_noise: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)
    noise_device: NoiseDevice = Widget("gpu")

    def execute(self, ctx) -> SamplerOut:
        name = "dpmpp_3m_sde" if self.noise_device == "cpu" else "dpmpp_3m_sde_gpu"
        return _sampler(name, eta=self.eta, s_noise=self.s_noise)
