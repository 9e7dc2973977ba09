"""What ComfyUI runs after CFG (`sampler_post_cfg_function`), in the order the model's nodes added
them: PerturbedAttentionGuidance, SelfAttentionGuidance (sag.py), Epsilon Scaling, CFGZeroStar,
CFGNorm and Mahiro. Each step takes the guided x0 estimate and returns a new one; the settings live on the
MODEL handle, the callables the sampler gives them here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class PostCfgArgs:
    """ComfyUI's post-CFG `args`: the guided estimate so far, both sides' estimates (the negative's
    is zeros where CFG 1 left it out), the CFG scale, the input and σ, and what some steps evaluate."""

    denoised: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor
    cfg: float
    x: torch.Tensor
    sigma: torch.Tensor
    perturbed_positive: Callable[[], torch.Tensor]  # the positive side with the middle self-attention perturbed
    negative_at: Callable[[torch.Tensor], torch.Tensor]  # the negative side's estimate at another input
    attention: Callable[[], torch.Tensor | None]  # SAG's recorded attention map


@dataclass(frozen=True)
class PerturbedAttention:
    """PAG: the gap between the positive estimate and the one with perturbed attention, × scale."""

    scale: float
    needs_negative = False

    def __call__(self, args: PostCfgArgs) -> torch.Tensor:
        if self.scale == 0:
            return args.denoised
        return args.denoised + (args.cond - args.perturbed_positive()) * self.scale


@dataclass(frozen=True)
class EpsilonScaling:
    """The noise the guided estimate implies divided by the factor (Ning et al.'s exposure-bias fix)."""

    factor: float
    needs_negative = False

    def __call__(self, args: PostCfgArgs) -> torch.Tensor:
        return args.x - (args.x - args.denoised) / (self.factor or 1e-9)


def optimized_scale(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """CFG-Zero*'s per-image projection coefficient ⟨p, n⟩ / ‖n‖²."""
    flat_p, flat_n = positive.reshape(positive.shape[0], -1), negative.reshape(negative.shape[0], -1)
    scale = (flat_p * flat_n).sum(dim=1, keepdim=True) / ((flat_n ** 2).sum(dim=1, keepdim=True) + 1e-8)
    return scale.reshape([positive.shape[0]] + [1] * (positive.ndim - 1))


@dataclass(frozen=True)
class CFGZeroStar:
    """CFG-Zero*: the negative's estimate scaled by its optimal projection onto the positive's."""

    needs_negative = False

    def __call__(self, args: PostCfgArgs) -> torch.Tensor:
        alpha = optimized_scale(args.x - args.cond, args.x - args.uncond)
        return args.denoised + args.uncond * (alpha - 1.0) + args.cfg * args.uncond * (1.0 - alpha)


@dataclass(frozen=True)
class CFGNorm:
    """The guided estimate's per-pixel channel norm capped at the positive estimate's, × strength."""

    strength: float
    needs_negative = False

    def __call__(self, args: PostCfgArgs) -> torch.Tensor:
        cond_norm = torch.norm(args.cond, dim=1, keepdim=True)
        guided_norm = torch.norm(args.denoised, dim=1, keepdim=True)
        return args.denoised * (cond_norm / (guided_norm + 1e-8)).clamp(min=0.0, max=1.0) * self.strength


@dataclass(frozen=True)
class Mahiro:
    """Mahiro: the guided estimate pulled towards the positive's own `cfg`× leap, the more so the
    less the negative's leap points the way of their mean (cosine over channels)."""

    needs_negative = False

    def __call__(self, args: PostCfgArgs) -> torch.Tensor:
        leap, negative_leap = args.cond * args.cfg, args.uncond * args.cfg
        merged = (leap + args.denoised) / 2
        similarity = torch.nn.functional.cosine_similarity(negative_leap.abs().sqrt() * negative_leap.sign(),
                                                           merged.abs().sqrt() * merged.sign()).mean()
        weight = 2 * (similarity + 1)
        return (weight * args.denoised + (4 - weight) * leap) / 4
