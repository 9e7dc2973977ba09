"""Canny: edge maps for ControlNets, computed as ComfyUI computes them (kornia's `canny` with its
defaults: 5×5 Gaussian of σ 1, Sobel gradients, non-maximum suppression over 8 directions,
thresholds, then hysteresis until nothing changes). kornia is not a dependency; the steps are
written out here with the same padding rules (reflect for the blur, replicate for Sobel)."""
from __future__ import annotations

import math

from engine import Link, Node, Widget

from ..types import Image
from .vae import ImageOut

_GREY = (0.299, 0.587, 0.114)
# The neighbour a pixel is compared with, for each of the 8 directions (0°, 45°, … 315°),
# as (dy, dx) in image rows and columns
_NEIGHBOURS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))


def _blurred(grey, size: int = 5, sigma: float = 1.0):
    import torch
    import torch.nn.functional as F

    offsets = torch.arange(size, dtype=grey.dtype) - size // 2
    weights = torch.exp(-offsets.pow(2) / (2 * sigma ** 2))
    weights = (weights / weights.sum()).to(grey.device)
    half = size // 2
    rows = F.conv2d(F.pad(grey, [half, half, 0, 0], mode="reflect"), weights.reshape(1, 1, 1, size))
    return F.conv2d(F.pad(rows, [0, 0, half, half], mode="reflect"), weights.reshape(1, 1, size, 1))


def _sobel(image):
    import torch
    import torch.nn.functional as F

    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=image.dtype, device=image.device)
    kernels = torch.stack([kx, kx.T])[:, None]
    out = F.conv2d(F.pad(image, [1, 1, 1, 1], mode="replicate"), kernels)
    return out[:, :1], out[:, 1:]


def _shifted(x, dy: int, dx: int):
    """x at (y + dy, x + dx), zero outside (a 3×3 convolution's zero padding)."""
    import torch.nn.functional as F

    padded = F.pad(x, [1, 1, 1, 1])
    height, width = x.shape[-2:]
    return padded[..., 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]


def canny_edges(image, low: float, high: float):
    """[B, 3, H, W] in [0, 1] → edges [B, 1, H, W]: 1 on edges, 0 elsewhere."""
    import torch

    grey = sum(w * image[:, c:c + 1] for c, w in enumerate(_GREY)) if image.shape[1] == 3 else image
    gx, gy = _sobel(_blurred(grey))
    magnitude = torch.sqrt(gx * gx + gy * gy + 1e-6)
    direction = torch.round(180.0 * torch.atan2(gy, gx) / math.pi / 45)  # in eighths of a turn
    forward, backward = (direction % 8).long(), ((direction + 4) % 8).long()
    # a pixel survives if it is strictly above its neighbours along its gradient, both ways
    above = torch.stack([magnitude - _shifted(magnitude, dy, dx) for dy, dx in _NEIGHBOURS], dim=1)[:, :, 0]
    is_max = torch.minimum(above.gather(1, forward), above.gather(1, backward)) > 0.0
    magnitude = magnitude * is_max
    edges = (magnitude > low) * 0.5 + (magnitude > high) * 0.5
    edges = edges.to(image.dtype)
    # hysteresis: a weak pixel becomes strong next to a strong one, until nothing changes
    while True:
        weak, strong = (edges == 0.5).to(edges.dtype), (edges == 1).to(edges.dtype)
        touching = torch.stack([_shifted(edges, dy, dx) == 1 for dy, dx in _NEIGHBOURS]).any(0).to(edges.dtype)
        grown = touching * weak + strong
        following = grown + (grown == 0) * weak * 0.5
        if torch.equal(following, edges):
            return grown
        edges = following


class Canny(Node):
    """Edge map of an image (white edges on black), for edge ControlNets."""

    class_type = "Canny"
    display_name = "Canny"
    category = "image/preprocessors"

    image: Image = Link()
    low_threshold: float = Widget(0.4, ge=0.01, le=0.99, step=0.01)
    high_threshold: float = Widget(0.8, ge=0.01, le=0.99, step=0.01)

    def execute(self, ctx) -> ImageOut:
        edges = canny_edges(self.image.pixels.movedim(-1, 1).float(), self.low_threshold, self.high_threshold)
        return ImageOut(Image(edges.repeat(1, 3, 1, 1).movedim(1, -1).cpu()))
