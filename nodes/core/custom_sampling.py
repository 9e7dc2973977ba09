"""SamplerCustom(Advanced) and their parts: noise, guiders, samplers and σ schedules as values."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from engine import EdgeValue, Link, Node, NodeOutput, Widget

from ..sampling.conditioning import Conditioning
from ..sampling.names import SAMPLER_NAMES, SCHEDULERS
from ..sd.models import DiffusionModel
from ..types import Latent
from .latent import LatentOut


@dataclass(frozen=True)
class Sampler(EdgeValue):
    comfy_type = "SAMPLER"
    name: str
    options: tuple = ()  # (name, value) pairs: the Sampler… nodes' eta, s_noise, order…


@dataclass(frozen=True, eq=False)
class Sigmas(EdgeValue):
    comfy_type = "SIGMAS"
    sigmas: Any  # float32 [n + 1], ending at 0 unless split


@dataclass(frozen=True)
class Noise(EdgeValue):
    comfy_type = "NOISE"
    seed: int | None  # None: no noise (DisableNoise)


@dataclass(frozen=True, eq=False)
class Guider(EdgeValue):
    comfy_type = "GUIDER"
    model: DiffusionModel
    positive: Conditioning
    negative: Conditioning | None
    cfg: float
    empty: Conditioning | None = None  # PerpNegGuider's empty prompt
    neg_scale: float = 1.0
    middle: Conditioning | None = None  # DualCFGGuider's cond2 (cfg is then its cfg_conds)
    middle_cfg: float = 1.0  # DualCFGGuider's cfg_cond2_negative
    nested: bool = False  # DualCFGGuider's "nested" style


@dataclass(frozen=True)
class SamplerOut(NodeOutput):
    SAMPLER: Sampler


@dataclass(frozen=True)
class SigmasOut(NodeOutput):
    SIGMAS: Sigmas


@dataclass(frozen=True)
class SplitOut(NodeOutput):
    high_sigmas: Sigmas
    low_sigmas: Sigmas


@dataclass(frozen=True)
class NoiseOut(NodeOutput):
    NOISE: Noise


@dataclass(frozen=True)
class GuiderOut(NodeOutput):
    GUIDER: Guider


@dataclass(frozen=True)
class TwoLatents(NodeOutput):
    output: Latent
    denoised_output: Latent


class KSamplerSelect(Node):
    class_type = "KSamplerSelect"
    display_name = "KSamplerSelect"
    category = "sampling/custom_sampling/samplers"

    sampler_name: Literal[SAMPLER_NAMES] = Widget("euler")  # type: ignore[valid-type]

    def execute(self, ctx) -> SamplerOut:
        return SamplerOut(Sampler(self.sampler_name))


class BasicScheduler(Node):
    """The model's schedule; with denoise < 1 the last `steps + 1` σ of a longer one."""

    class_type = "BasicScheduler"
    display_name = "BasicScheduler"
    category = "sampling/custom_sampling/schedulers"

    model: DiffusionModel = Link()
    scheduler: Literal[SCHEDULERS] = Widget("simple")  # type: ignore[valid-type]
    steps: int = Widget(20, ge=1, le=10000)
    denoise: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> SigmasOut:
        import torch

        from ..sampling.schedules import schedule

        if self.denoise <= 0.0:
            return SigmasOut(Sigmas(torch.zeros(0)))
        total = self.steps if self.denoise >= 1.0 else int(self.steps / self.denoise)
        return SigmasOut(Sigmas(schedule(self.model.model_sampling(), self.scheduler, total)[-(self.steps + 1):]))


class KarrasScheduler(Node):
    class_type = "KarrasScheduler"
    display_name = "KarrasScheduler"
    category = "sampling/custom_sampling/schedulers"

    steps: int = Widget(20, ge=1, le=10000)
    sigma_max: float = Widget(14.614642, ge=0.0, le=5000.0, step=0.01)
    sigma_min: float = Widget(0.0291675, ge=0.0, le=5000.0, step=0.01)
    rho: float = Widget(7.0, ge=0.0, le=100.0, step=0.01)

    def execute(self, ctx) -> SigmasOut:
        from ..sampling.schedules import karras

        return SigmasOut(Sigmas(karras(self.steps, self.sigma_min, self.sigma_max, self.rho)))


class ExponentialScheduler(Node):
    class_type = "ExponentialScheduler"
    display_name = "ExponentialScheduler"
    category = "sampling/custom_sampling/schedulers"

    steps: int = Widget(20, ge=1, le=10000)
    sigma_max: float = Widget(14.614642, ge=0.0, le=5000.0, step=0.01)
    sigma_min: float = Widget(0.0291675, ge=0.0, le=5000.0, step=0.01)

    def execute(self, ctx) -> SigmasOut:
        from ..sampling.schedules import exponential

        return SigmasOut(Sigmas(exponential(self.steps, self.sigma_min, self.sigma_max)))


class SDTurboScheduler(Node):
    """SD-Turbo's timesteps 999, 899, …: `steps` of them, starting later for denoise < 1."""

    class_type = "SDTurboScheduler"
    display_name = "SDTurboScheduler"
    category = "sampling/custom_sampling/schedulers"

    model: DiffusionModel = Link()
    steps: int = Widget(1, ge=1, le=10)
    denoise: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> SigmasOut:
        import torch

        start = 10 - int(10 * self.denoise)
        timesteps = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start:start + self.steps]
        sigmas = self.model.model_sampling().sigma(timesteps)
        return SigmasOut(Sigmas(torch.cat([sigmas, sigmas.new_zeros([1])])))


class SplitSigmas(Node):
    """σ[:step+1] and σ[step:]: two stages that share the σ at the split."""

    class_type = "SplitSigmas"
    display_name = "SplitSigmas"
    category = "sampling/custom_sampling/sigmas"

    sigmas: Sigmas = Link()
    step: int = Widget(0, ge=0, le=10000)

    def execute(self, ctx) -> SplitOut:
        sigmas = self.sigmas.sigmas
        return SplitOut(Sigmas(sigmas[:self.step + 1]), Sigmas(sigmas[self.step:]))


class RandomNoise(Node):
    class_type = "RandomNoise"
    display_name = "RandomNoise"
    category = "sampling/custom_sampling/noise"

    noise_seed: int = Widget(0, ge=0, le=2**64 - 1)

    def execute(self, ctx) -> NoiseOut:
        return NoiseOut(Noise(self.noise_seed))


class DisableNoise(Node):
    class_type = "DisableNoise"
    display_name = "DisableNoise"
    category = "sampling/custom_sampling/noise"

    def execute(self, ctx) -> NoiseOut:
        return NoiseOut(Noise(None))


class CFGGuider(Node):
    class_type = "CFGGuider"
    display_name = "CFGGuider"
    category = "sampling/custom_sampling/guiders"

    model: DiffusionModel = Link()
    positive: Conditioning = Link()
    negative: Conditioning = Link()
    cfg: float = Widget(8.0, ge=0.0, le=100.0, step=0.1)

    def execute(self, ctx) -> GuiderOut:
        return GuiderOut(Guider(self.model, self.positive, self.negative, self.cfg))


class PerpNegGuider(Node):
    """CFG whose negative only pushes perpendicular to the positive (Perp-Neg), measured from an
    empty prompt."""

    class_type = "PerpNegGuider"
    display_name = "PerpNegGuider"
    category = "_for_testing"

    model: DiffusionModel = Link()
    positive: Conditioning = Link()
    negative: Conditioning = Link()
    empty_conditioning: Conditioning = Link()
    cfg: float = Widget(8.0, ge=0.0, le=100.0, step=0.1)
    neg_scale: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)

    def execute(self, ctx) -> GuiderOut:
        return GuiderOut(Guider(self.model, self.positive, self.negative, self.cfg, self.empty_conditioning,
                                self.neg_scale))


class DualCFGGuider(Node):
    """Two conditionings against a negative: regular, cond2 guided away from the negative (cfg2)
    plus cfg1 times cond1's gap from cond2; nested, cond1 guided away from cond2 (cfg1), then
    that away from the negative (cfg2). For edit models: the image, then the instruction."""

    class_type = "DualCFGGuider"
    display_name = "DualCFGGuider"
    category = "sampling/custom_sampling/guiders"

    model: DiffusionModel = Link()
    cond1: Conditioning = Link()
    cond2: Conditioning = Link()
    negative: Conditioning = Link()
    cfg_conds: float = Widget(8.0, ge=0.0, le=100.0, step=0.1)
    cfg_cond2_negative: float = Widget(8.0, ge=0.0, le=100.0, step=0.1)
    # Added to ComfyUI's node after its first version: older workflows run "regular"
    style: Literal["regular", "nested"] = Widget("regular", optional=True)

    def execute(self, ctx) -> GuiderOut:
        return GuiderOut(Guider(self.model, self.cond1, self.negative, self.cfg_conds, middle=self.cond2,
                                middle_cfg=self.cfg_cond2_negative, nested=self.style == "nested"))


class BasicGuider(Node):
    """The conditioning alone, no CFG."""

    class_type = "BasicGuider"
    display_name = "BasicGuider"
    category = "sampling/custom_sampling/guiders"

    model: DiffusionModel = Link()
    conditioning: Conditioning = Link()

    def execute(self, ctx) -> GuiderOut:
        return GuiderOut(Guider(self.model, self.conditioning, None, 1.0))


def run_custom(ctx, guider: Guider, noise: Noise, sampler: Sampler, sigmas: Sigmas, latent: Latent) -> TwoLatents:
    import torch

    from ..sampling.ksampler import sample_sigmas
    from ..sampling.noise import initial_noise
    from ..sd.lora import sampling_with_loras

    if len(sigmas.sigmas) <= 1:  # nothing to run
        return TwoLatents(latent, latent)
    samples = latent.samples
    batch_index = list(latent.batch_index) if latent.batch_index else None
    generator = None if noise.seed is None else torch.Generator("cpu")
    unit_noise = torch.zeros_like(samples) if noise.seed is None else \
        initial_noise(samples.shape, noise.seed, batch_index, generator)
    perp_neg = None if guider.empty is None else (list(guider.empty.entries), guider.neg_scale)
    dual = None if guider.middle is None else (list(guider.middle.entries), guider.middle_cfg, guider.nested)
    with sampling_with_loras(ctx, guider.model, guider.positive, guider.negative, guider.empty,
                             guider.middle) as model:
        out, denoised = sample_sigmas(
            model, samples, sigmas.sigmas, unit_noise,
            positive=list(guider.positive.entries),
            negative=list(guider.negative.entries) if guider.negative is not None else [],
            seed=noise.seed or 0, cfg=guider.cfg, sampler_name=sampler.name, noise_mask=latent.noise_mask,
            on_step=ctx.progress, sampler_options=dict(sampler.options), perp_neg=perp_neg, dual=dual,
            generator=generator)
    return TwoLatents(Latent(out, latent.noise_mask, latent.batch_index),
                      Latent(denoised, latent.noise_mask, latent.batch_index))


class SamplerCustom(Node):
    """Sample with a chosen sampler over explicit σ, with CFG."""

    class_type = "SamplerCustom"
    display_name = "SamplerCustom"
    category = "sampling/custom_sampling"

    model: DiffusionModel = Link()
    add_noise: bool = Widget(True)
    noise_seed: int = Widget(0, ge=0, le=2**64 - 1)
    cfg: float = Widget(8.0, ge=0.0, le=100.0, step=0.1)
    positive: Conditioning = Link()
    negative: Conditioning = Link()
    sampler: Sampler = Link()
    sigmas: Sigmas = Link()
    latent_image: Latent = Link()

    def execute(self, ctx) -> TwoLatents:
        noise = Noise(self.noise_seed if self.add_noise else None)
        guider = Guider(self.model, self.positive, self.negative, self.cfg)
        return run_custom(ctx, guider, noise, self.sampler, self.sigmas, self.latent_image)


class SamplerCustomAdvanced(Node):
    """Sample with separate noise, guider, sampler and σ nodes."""

    class_type = "SamplerCustomAdvanced"
    display_name = "SamplerCustomAdvanced"
    category = "sampling/custom_sampling"

    noise: Noise = Link()
    guider: Guider = Link()
    sampler: Sampler = Link()
    sigmas: Sigmas = Link()
    latent_image: Latent = Link()

    def execute(self, ctx) -> TwoLatents:
        return run_custom(ctx, self.guider, self.noise, self.sampler, self.sigmas, self.latent_image)


class AddNoise(Node):
    """The latent with the seed's noise added at the schedule's span (|σ_first − σ_last|), as
    ComfyUI's experimental node does; an all-zero latent is not scaled first."""

    class_type = "AddNoise"
    display_name = "AddNoise"
    category = "_for_testing/custom_sampling/noise"

    model: DiffusionModel = Link()
    noise: Noise = Link()
    sigmas: Sigmas = Link()
    latent_image: Latent = Link()

    def execute(self, ctx) -> LatentOut:
        import dataclasses

        import torch

        from ..sampling.noise import initial_noise

        sigmas, latent = self.sigmas.sigmas, self.latent_image
        if len(sigmas) == 0:
            return LatentOut(latent)
        samples = latent.samples
        batch_index = list(latent.batch_index) if latent.batch_index else None
        noise = torch.zeros_like(samples) if self.noise.seed is None else \
            initial_noise(samples.shape, self.noise.seed, batch_index)
        scale = (sigmas[0] - sigmas[-1]).abs() if len(sigmas) > 1 else sigmas[0]
        latent_format = self.model.latent_format()
        scaled = latent_format.process_in(samples) if torch.count_nonzero(samples) > 0 else samples
        noisy = latent_format.process_out(self.model.model_sampling().noise_scaling(scale, noise, scaled))
        noisy = torch.nan_to_num(noisy, nan=0.0, posinf=0.0, neginf=0.0)
        return LatentOut(dataclasses.replace(latent, samples=noisy))
