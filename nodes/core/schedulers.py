"""More of custom sampling's σ nodes: the polyexponential, VP, beta and Align-Your-Steps
schedules, and SplitSigmasDenoise, FlipSigmas and SetFirstSigma."""
from __future__ import annotations

from typing import Literal

from engine import Link, Node, Widget

from ..sd.models import DiffusionModel
from .custom_sampling import Sigmas, SigmasOut, SplitOut

CATEGORY = "sampling/custom_sampling/schedulers"


class PolyexponentialScheduler(Node):
    class_type = "PolyexponentialScheduler"
    display_name = "PolyexponentialScheduler"
    category = CATEGORY

    steps: int = Widget(20, ge=1, le=10000)
    sigma_max: float = Widget(14.614642, ge=0.0, le=5000.0, step=0.01)
    sigma_min: float = Widget(0.0291675, ge=0.0, le=5000.0, step=0.01)
    rho: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)

    def execute(self, ctx) -> SigmasOut:
        from ..sampling.schedules import polyexponential

        return SigmasOut(Sigmas(polyexponential(self.steps, self.sigma_min, self.sigma_max, self.rho)))


class VPScheduler(Node):
    class_type = "VPScheduler"
    display_name = "VPScheduler"
    category = CATEGORY

    steps: int = Widget(20, ge=1, le=10000)
    beta_d: float = Widget(19.9, ge=0.0, le=5000.0, step=0.01)
    beta_min: float = Widget(0.1, ge=0.0, le=5000.0, step=0.01)
    eps_s: float = Widget(0.001, ge=0.0, le=1.0, step=0.0001)

    def execute(self, ctx) -> SigmasOut:
        from ..sampling.schedules import variance_preserving

        return SigmasOut(Sigmas(variance_preserving(self.steps, self.beta_d, self.beta_min, self.eps_s)))


class BetaSamplingScheduler(Node):
    """The beta schedule with its two shape parameters exposed."""

    class_type = "BetaSamplingScheduler"
    display_name = "BetaSamplingScheduler"
    category = CATEGORY

    model: DiffusionModel = Link()
    steps: int = Widget(20, ge=1, le=10000)
    alpha: float = Widget(0.6, ge=0.0, le=50.0, step=0.01)
    beta: float = Widget(0.6, ge=0.0, le=50.0, step=0.01)

    def execute(self, ctx) -> SigmasOut:
        from ..sampling.schedules import _beta

        return SigmasOut(Sigmas(_beta(self.model.model_sampling(), self.steps, self.alpha, self.beta)))


class AlignYourStepsScheduler(Node):
    """NVIDIA's optimised 10-step σ for SD1.x, SDXL and SVD, interpolated to any step count."""

    class_type = "AlignYourStepsScheduler"
    display_name = "AlignYourStepsScheduler"
    category = CATEGORY

    model_type: Literal["SD1", "SDXL", "SVD"] = Widget("SD1")
    steps: int = Widget(10, ge=1, le=10000)
    denoise: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> SigmasOut:
        from ..sampling.schedules import align_your_steps

        return SigmasOut(Sigmas(align_your_steps(self.model_type, self.steps, self.denoise)))


class SplitSigmasDenoise(Node):
    """The last `denoise` fraction of the steps as low_sigmas, the rest as high_sigmas."""

    class_type = "SplitSigmasDenoise"
    display_name = "SplitSigmasDenoise"
    category = "sampling/custom_sampling/sigmas"

    sigmas: Sigmas = Link()
    denoise: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> SplitOut:
        sigmas = self.sigmas.sigmas
        total = round(max(sigmas.shape[-1] - 1, 0) * self.denoise)
        # ComfyUI's slices, the empty high part at denoise 0 (σ[:-0]) included
        return SplitOut(Sigmas(sigmas[:-total]), Sigmas(sigmas[-(total + 1):]))


class FlipSigmas(Node):
    """σ reversed (a first σ of 0 becomes 0.0001): for unsampling."""

    class_type = "FlipSigmas"
    display_name = "FlipSigmas"
    category = "sampling/custom_sampling/sigmas"

    sigmas: Sigmas = Link()

    def execute(self, ctx) -> SigmasOut:
        sigmas = self.sigmas.sigmas
        if len(sigmas) == 0:
            return SigmasOut(self.sigmas)
        flipped = sigmas.flip(0)
        if flipped[0] == 0:
            flipped[0] = 0.0001
        return SigmasOut(Sigmas(flipped))


class SetFirstSigma(Node):
    class_type = "SetFirstSigma"
    display_name = "SetFirstSigma"
    category = "sampling/custom_sampling/sigmas"

    sigmas: Sigmas = Link()
    sigma: float = Widget(136.0, ge=0.0, le=20000.0, step=0.001)

    def execute(self, ctx) -> SigmasOut:
        sigmas = self.sigmas.sigmas.clone()
        sigmas[0] = self.sigma
        return SigmasOut(Sigmas(sigmas))
