"""Self-Attention Guidance (Hong et al. 2023) as ComfyUI's SelfAttentionGuidance computes it.

During the unconditional evaluation the first self-attention of the middle block keeps its
attention probabilities. After CFG, the unconditional x0 estimate is blurred where that map says
the model looks most (keys that receive more than their share, summed over the queries); the
blurred estimate, noised back to σ, is evaluated unconditionally again, and the gap between it
and that prediction is added, times the scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

THRESHOLD = 1.0
KERNEL_SIZE = 9


@dataclass(frozen=True)
class SelfAttentionGuidance:
    """A post-CFG step (post_cfg.py); it needs the negative side even at CFG 1."""

    scale: float
    blur_sigma: float
    needs_negative = True

    def __call__(self, args) -> torch.Tensor:
        attention = args.attention()
        if min(args.denoised.shape[2:]) <= 4 or attention is None:  # too small for the blur's reflected padding
            return args.denoised
        degraded = blur_map(args.uncond, attention, self.blur_sigma)
        return args.denoised + (degraded - args.negative_at(degraded + args.x - args.uncond)) * self.scale


def gaussian_blur_2d(image: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Per channel, a separable Gaussian on integer offsets, reflected at the borders."""
    half = (kernel_size - 1) * 0.5
    offsets = torch.linspace(-half, half, steps=kernel_size)
    pdf = torch.exp(-0.5 * (offsets / sigma).pow(2))
    kernel = (pdf / pdf.sum()).to(device=image.device, dtype=image.dtype)
    kernel2d = torch.mm(kernel[:, None], kernel[None, :]).expand(image.shape[-3], 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    padded = F.pad(image, [pad, pad, pad, pad], mode="reflect")
    return F.conv2d(padded, kernel2d, groups=image.shape[-3])


def blur_map(x0: torch.Tensor, attention: torch.Tensor, sigma: float, threshold: float = THRESHOLD) -> torch.Tensor:
    """x0 blurred where the keys' summed attention (mean over heads) exceeds the threshold."""
    _, queries, keys = attention.shape
    batch, _, height, width = x0.shape
    attention = attention.reshape(batch, -1, queries, keys)
    mask = attention.mean(1).sum(1) > threshold
    # the middle block's grid: the latent halved as often as it takes to hold `queries` tokens
    ratio = 2 ** (math.ceil(math.sqrt(height * width / queries)) - 1).bit_length()
    mask = mask.reshape(batch, math.ceil(height / ratio), math.ceil(width / ratio)).unsqueeze(1).to(attention.dtype)
    mask = F.interpolate(mask, (height, width))
    blurred = gaussian_blur_2d(x0, KERNEL_SIZE, sigma)
    return blurred * mask + x0 * (1 - mask)
