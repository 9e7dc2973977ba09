"""KSampler and KSamplerAdvanced."""
from __future__ import annotations

from typing import Literal

from engine import Link, Node, Widget

from ..sampling.conditioning import Conditioning
from ..sampling.names import SAMPLER_NAMES, SCHEDULERS
from ..sd.models import DiffusionModel
from ..types import Latent
from .latent import LatentOut

SamplerName = Literal[SAMPLER_NAMES]  # type: ignore[valid-type]
SchedulerName = Literal[SCHEDULERS]  # type: ignore[valid-type]


def run_sampler(node, ctx, *, seed: int, steps, add_noise: bool = True) -> LatentOut:
    from ..sampling.ksampler import sample
    from ..sd.lora import sampling_with_loras

    latent = node.latent_image
    with sampling_with_loras(ctx, node.model, node.positive, node.negative) as model:
        samples = sample(model, latent.samples, positive=list(node.positive.entries),
                         negative=list(node.negative.entries), seed=seed, cfg=node.cfg,
                         sampler_name=node.sampler_name, scheduler=node.scheduler, steps=steps,
                         add_noise=add_noise, noise_mask=latent.noise_mask,
                         batch_index=list(latent.batch_index) if latent.batch_index else None,
                         on_step=ctx.progress)
    return LatentOut(Latent(samples, latent.noise_mask, latent.batch_index))


class KSampler(Node):
    """Denoise a latent with a model, positive and negative conditioning."""

    class_type = "KSampler"
    display_name = "KSampler"
    category = "sampling"

    model: DiffusionModel = Link()
    seed: int = Widget(0, ge=0, le=2**64 - 1)
    steps: int = Widget(20, ge=1, le=10000)
    cfg: float = Widget(8.0, ge=0.0, le=100.0, step=0.1)
    sampler_name: SamplerName = Widget("euler")
    scheduler: SchedulerName = Widget("simple")
    positive: Conditioning = Link()
    negative: Conditioning = Link()
    latent_image: Latent = Link()
    denoise: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> LatentOut:
        from ..sampling.ksampler import Steps

        return run_sampler(self, ctx, seed=self.seed, steps=Steps(self.steps, self.denoise))


class KSamplerAdvanced(Node):
    """KSampler over a window of the schedule, optionally leaving the remaining noise in."""

    class_type = "KSamplerAdvanced"
    display_name = "KSampler (Advanced)"
    category = "sampling"

    model: DiffusionModel = Link()
    add_noise: Literal["enable", "disable"] = Widget("enable")
    noise_seed: int = Widget(0, ge=0, le=2**64 - 1)
    steps: int = Widget(20, ge=1, le=10000)
    cfg: float = Widget(8.0, ge=0.0, le=100.0, step=0.1)
    sampler_name: SamplerName = Widget("euler")
    scheduler: SchedulerName = Widget("simple")
    positive: Conditioning = Link()
    negative: Conditioning = Link()
    latent_image: Latent = Link()
    start_at_step: int = Widget(0, ge=0, le=10000)
    end_at_step: int = Widget(10000, ge=0, le=10000)
    return_with_leftover_noise: Literal["disable", "enable"] = Widget("disable")

    def execute(self, ctx) -> LatentOut:
        from ..sampling.ksampler import Steps

        window = Steps(self.steps, 1.0, self.start_at_step, self.end_at_step,
                       force_full_denoise=self.return_with_leftover_noise != "enable")
        return run_sampler(self, ctx, seed=self.noise_seed, steps=window, add_noise=self.add_noise == "enable")
