"""More of custom sampling's σ nodes: the polyexponential, Laplace, VP, beta and Align-Your-Steps
schedules, and SplitSigmasDenoise, FlipSigmas, SetFirstSigma, ExtendIntermediateSigmas and
SamplingPercentToSigma."""
from __future__ import annotations

from typing import Literal

from engine import Link, Node, Widget

from ..sd.models import DiffusionModel
from .custom_sampling import Sigmas, SigmasOut, SplitOut
from .primitives import FloatOut

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


class LaplaceScheduler(Node):
    class_type = "LaplaceScheduler"
    display_name = "LaplaceScheduler"
    category = CATEGORY

    steps: int = Widget(20, ge=1, le=10000)
    sigma_max: float = Widget(14.614642, ge=0.0, le=5000.0, step=0.01)
    sigma_min: float = Widget(0.0291675, ge=0.0, le=5000.0, step=0.01)
    mu: float = Widget(0.0, ge=-10.0, le=10.0, step=0.1)
    beta: float = Widget(0.5, ge=0.0, le=10.0, step=0.1)

    def execute(self, ctx) -> SigmasOut:
        from ..sampling.schedules import laplace

        return SigmasOut(Sigmas(laplace(self.steps, self.sigma_min, self.sigma_max, self.mu, self.beta)))


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


class ExtendIntermediateSigmas(Node):
    """More steps inside part of a schedule: each interval starting within [end, start] split."""

    class_type = "ExtendIntermediateSigmas"
    display_name = "ExtendIntermediateSigmas"
    category = "sampling/custom_sampling/sigmas"

    sigmas: Sigmas = Link()
    steps: int = Widget(2, ge=1, le=100)
    start_at_sigma: float = Widget(-1.0, ge=-1.0, le=20000.0, step=0.01)
    end_at_sigma: float = Widget(12.0, ge=0.0, le=20000.0, step=0.01)
    spacing: Literal["linear", "cosine", "sine"] = Widget("linear")

    def execute(self, ctx) -> SigmasOut:
        from ..sampling.schedules import extended

        return SigmasOut(Sigmas(extended(self.sigmas.sigmas, self.steps, self.start_at_sigma, self.end_at_sigma,
                                         self.spacing)))


class SamplingPercentToSigma(Node):
    """The model's σ at a fraction of sampling; 0 and 1 give the window bounds other nodes use
    (a huge σ and 0) unless `return_actual_sigma` asks for σ_max and σ_min."""

    class_type = "SamplingPercentToSigma"
    display_name = "SamplingPercentToSigma"
    category = "sampling/custom_sampling/sigmas"
    output_names = ("sigma_value",)

    model: DiffusionModel = Link()
    sampling_percent: float = Widget(0.0, ge=0.0, le=1.0, step=0.0001)
    return_actual_sigma: bool = Widget(False)

    def execute(self, ctx) -> FloatOut:
        sampling = self.model.model_sampling()
        sigma = sampling.percent_to_sigma(self.sampling_percent)
        if self.return_actual_sigma and self.sampling_percent in (0.0, 1.0):
            sigma = sampling.sigma_max if self.sampling_percent == 0.0 else sampling.sigma_min
        return FloatOut(float(sigma))
