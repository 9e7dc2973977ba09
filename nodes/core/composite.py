"""ImageCompositeMasked and LatentCompositeMasked: paste a source into a destination at (x, y),
through an optional mask (ComfyUI's `composite`)."""
from __future__ import annotations

import dataclasses

from engine import Link, Node, Widget

from ..types import Image, Latent, Mask
from .latent import LatentOut
from .vae import ImageOut

MAX_RESOLUTION = 16384


def repeat_to_batch(tensor, size: int):
    """ComfyUI's repeat_to_batch_size: cut to `size`, or repeated whole and cut."""
    if tensor.shape[0] > size:
        return tensor[:size]
    if tensor.shape[0] < size:
        return tensor.repeat([-(-size // tensor.shape[0])] + [1] * (tensor.ndim - 1))[:size]
    return tensor


def composite(destination, source, x: int, y: int, mask=None, multiplier: int = 8, resize_source: bool = False):
    """[B, C, H, W] tensors; x and y in pixels (latent cells × `multiplier`). The parts of the
    source that fall outside the destination are dropped."""
    import torch.nn.functional as F

    destination = destination.clone()
    if resize_source:
        source = F.interpolate(source, size=destination.shape[2:], mode="bilinear")
    source = repeat_to_batch(source, destination.shape[0])
    x = max(-source.shape[3] * multiplier, min(x, destination.shape[3] * multiplier))
    y = max(-source.shape[2] * multiplier, min(y, destination.shape[2] * multiplier))
    left, top = x // multiplier, y // multiplier
    right, bottom = left + source.shape[3], top + source.shape[2]
    if mask is None:
        import torch

        mask = torch.ones_like(source)
    else:
        mask = F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).float(), size=source.shape[2:], mode="bilinear")
        mask = repeat_to_batch(mask, source.shape[0])
    visible_w, visible_h = destination.shape[3] - left + min(0, x), destination.shape[2] - top + min(0, y)
    mask = mask[:, :, :visible_h, :visible_w]
    inside = source[:, :, :visible_h, :visible_w]
    destination[:, :, top:bottom, left:right] = mask * inside + (1 - mask) * destination[:, :, top:bottom, left:right]
    return destination


class ImageCompositeMasked(Node):
    """Paste `source` into `destination` at (x, y) pixels, through `mask` where one is given."""

    class_type = "ImageCompositeMasked"
    display_name = "ImageCompositeMasked"
    category = "image"

    destination: Image = Link()
    source: Image = Link()
    x: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=1)
    y: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=1)
    resize_source: bool = Widget(False)
    mask: Mask | None = Link(optional=True)

    def execute(self, ctx) -> ImageOut:
        mask = None if self.mask is None else self.mask.mask
        out = composite(self.destination.pixels.movedim(-1, 1), self.source.pixels.movedim(-1, 1), self.x, self.y,
                        mask, 1, self.resize_source)
        return ImageOut(Image(out.movedim(1, -1)))


class LatentCompositeMasked(Node):
    """Paste `source` latents into `destination` at (x, y) pixels, through `mask` where one is given."""

    class_type = "LatentCompositeMasked"
    display_name = "LatentCompositeMasked"
    category = "latent"

    destination: Latent = Link()
    source: Latent = Link()
    x: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=8)
    y: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=8)
    resize_source: bool = Widget(False)
    mask: Mask | None = Link(optional=True)

    def execute(self, ctx) -> LatentOut:
        mask = None if self.mask is None else self.mask.mask
        out = composite(self.destination.samples, self.source.samples, self.x, self.y, mask, 8, self.resize_source)
        return LatentOut(dataclasses.replace(self.destination, samples=out))
