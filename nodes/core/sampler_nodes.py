"""The Sampler… nodes of custom sampling: a sampler with its own settings (eta, s_noise, order,
the SDE's noise device, DPM-Solver's step-size control, ER-SDE's and SA-Solver's variants), as
ComfyUI's ksampler(name, options) builds it."""
from __future__ import annotations

from typing import Literal

from engine import Link, Node, Widget

from ..sd.models import DiffusionModel
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


class SamplerEulerCFGpp(Node):
    """Euler CFG++: `regular` is the euler_cfg_pp sampler; `alternative` steps along
    (x − D + D_uncond − D)/σ."""

    class_type = "SamplerEulerCFGpp"
    display_name = "SamplerEulerCFG++"
    category = "_for_testing"

    version: Literal["regular", "alternative"] = Widget("regular")

    def execute(self, ctx) -> SamplerOut:
        return _sampler("euler_cfg_pp" if self.version == "regular" else "euler_cfg_pp_alternative")


class SamplerLCMUpscale(Node):
    """LCM that enlarges the latent between steps to `scale_ratio` times its size, over
    `scale_steps` steps (-1: about half of them)."""

    class_type = "SamplerLCMUpscale"
    display_name = "SamplerLCMUpscale"
    category = CATEGORY

    scale_ratio: float = Widget(1.0, ge=0.1, le=20.0, step=0.01)
    scale_steps: int = Widget(-1, ge=-1, le=1000, step=1)
    upscale_method: Literal["bislerp", "nearest-exact", "bilinear", "area", "bicubic"] = Widget("bislerp")

    def execute(self, ctx) -> SamplerOut:
        return _sampler("lcm_upscale", total_upscale=self.scale_ratio, upscale_method=self.upscale_method,
                        upscale_steps=None if self.scale_steps < 0 else self.scale_steps)


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


class SamplerDPMAdaptative(Node):
    """DPM-Solver-12/23 with an adaptive step size (its PID controller's settings), and eta."""

    class_type = "SamplerDPMAdaptative"
    display_name = "SamplerDPMAdaptative"
    category = CATEGORY

    order: int = Widget(3, ge=2, le=3)
    rtol: float = Widget(0.05, ge=0.0, le=100.0, step=0.01)
    atol: float = Widget(0.0078, ge=0.0, le=100.0, step=0.01)
    h_init: float = Widget(0.05, ge=0.0, le=100.0, step=0.01)
    pcoeff: float = Widget(0.0, ge=0.0, le=100.0, step=0.01)
    icoeff: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)
    dcoeff: float = Widget(0.0, ge=0.0, le=100.0, step=0.01)
    accept_safety: float = Widget(0.81, ge=0.0, le=100.0, step=0.01)
    eta: float = Widget(0.0, ge=0.0, le=100.0, step=0.01)
    s_noise: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)

    def execute(self, ctx) -> SamplerOut:
        return _sampler("dpm_adaptive", order=self.order, rtol=self.rtol, atol=self.atol, h_init=self.h_init,
                        pcoeff=self.pcoeff, icoeff=self.icoeff, dcoeff=self.dcoeff,
                        accept_safety=self.accept_safety, eta=self.eta, s_noise=self.s_noise)


class SamplerER_SDE(Node):  # noqa: N801
    """ER-SDE with its own noise scaler, or the plain reverse-time SDE (λ^(η+1)); ODE is that
    with η = 0 and no noise."""

    class_type = "SamplerER_SDE"
    display_name = "SamplerER_SDE"
    category = CATEGORY

    solver_type: Literal["ER-SDE", "Reverse-time SDE", "ODE"] = Widget("ER-SDE")
    max_stage: int = Widget(3, ge=1, le=3)
    eta: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)
    s_noise: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)

    def execute(self, ctx) -> SamplerOut:
        eta, s_noise = self.eta, self.s_noise
        if self.solver_type == "ODE" or (self.solver_type == "Reverse-time SDE" and eta == 0):
            eta, s_noise = 0.0, 0.0
        reverse_time_eta = None if self.solver_type == "ER-SDE" else eta
        return _sampler("er_sde", s_noise=s_noise, max_stage=self.max_stage, reverse_time_eta=reverse_time_eta)


class SamplerSASolver(Node):
    """SA-Solver with its stochastic window (as fractions of the model's schedule), orders and
    PECE."""

    class_type = "SamplerSASolver"
    display_name = "SamplerSASolver"
    category = CATEGORY

    model: DiffusionModel = Link()
    eta: float = Widget(1.0, ge=0.0, le=10.0, step=0.01)
    sde_start_percent: float = Widget(0.2, ge=0.0, le=1.0, step=0.001)
    sde_end_percent: float = Widget(0.8, ge=0.0, le=1.0, step=0.001)
    s_noise: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)
    predictor_order: int = Widget(3, ge=1, le=6)
    corrector_order: int = Widget(4, ge=0, le=6)
    use_pece: bool = Widget(False)
    simple_order_2: bool = Widget(False)

    def execute(self, ctx) -> SamplerOut:
        sampling = self.model.model_sampling()
        window = (sampling.percent_to_sigma(self.sde_start_percent), sampling.percent_to_sigma(self.sde_end_percent),
                  self.eta)
        return _sampler("sa_solver", tau_window=window, s_noise=self.s_noise, predictor_order=self.predictor_order,
                        corrector_order=self.corrector_order, pece=self.use_pece, simple_order_2=self.simple_order_2)
