"""Latent nodes: EmptyLatentImage, upscale, batch, composite, noise mask."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from engine import Link, Node, NodeOutput, Widget

from ..types import Latent, Mask
from .resample import UPSCALE_METHODS, common_upscale

MAX_RESOLUTION = 16384


@dataclass(frozen=True)
class LatentOut(NodeOutput):
    LATENT: Latent


class EmptyLatentImage(Node):
    """A batch of zero latents, [batch_size, 4, height/8, width/8]."""

    class_type = "EmptyLatentImage"
    display_name = "Empty Latent Image"
    category = "latent"

    width: int = Widget(512, ge=16, le=MAX_RESOLUTION, step=8)
    height: int = Widget(512, ge=16, le=MAX_RESOLUTION, step=8)
    batch_size: int = Widget(1, ge=1, le=4096)

    def execute(self, ctx) -> LatentOut:
        import torch

        return LatentOut(Latent(torch.zeros([self.batch_size, 4, self.height // 8, self.width // 8])))


def _repeat_masks(masks, count: int):
    import math

    if masks.shape[0] < count:
        masks = masks.repeat(math.ceil(count / masks.shape[0]), 1, 1, 1)[:count]
    return masks


class LatentUpscale(Node):
    """Resize latents to a pixel size (÷8); a 0 side keeps the aspect, each side at least 64."""

    class_type = "LatentUpscale"
    display_name = "Upscale Latent"
    category = "latent"

    samples: Latent = Link()
    upscale_method: Literal[UPSCALE_METHODS] = Widget("nearest-exact")  # type: ignore[valid-type]
    width: int = Widget(512, ge=0, le=MAX_RESOLUTION, step=8)
    height: int = Widget(512, ge=0, le=MAX_RESOLUTION, step=8)
    crop: Literal["disabled", "center"] = Widget("disabled")

    def execute(self, ctx) -> LatentOut:
        samples, width, height = self.samples.samples, self.width, self.height
        if width == 0 and height == 0:
            return LatentOut(self.samples)
        if width == 0:
            height = max(64, height)
            width = max(64, round(samples.shape[-1] * height / samples.shape[-2]))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(samples.shape[-2] * width / samples.shape[-1]))
        else:
            width, height = max(64, width), max(64, height)
        resized = common_upscale(samples, width // 8, height // 8, self.upscale_method, self.crop)
        return LatentOut(replace(self.samples, samples=resized))


class LatentUpscaleBy(Node):
    """Resize latents by a factor (sides rounded)."""

    class_type = "LatentUpscaleBy"
    display_name = "Upscale Latent By"
    category = "latent"

    samples: Latent = Link()
    upscale_method: Literal[UPSCALE_METHODS] = Widget("nearest-exact")  # type: ignore[valid-type]
    scale_by: float = Widget(1.5, ge=0.01, le=8.0, step=0.01)

    def execute(self, ctx) -> LatentOut:
        samples = self.samples.samples
        width, height = round(samples.shape[-1] * self.scale_by), round(samples.shape[-2] * self.scale_by)
        return LatentOut(replace(self.samples, samples=common_upscale(samples, width, height, self.upscale_method,
                                                                      "disabled")))


class LatentFromBatch(Node):
    """Images `batch_index … +length` of a batch; they keep their noise draws (batch_index)."""

    class_type = "LatentFromBatch"
    display_name = "Latent From Batch"
    category = "latent/batch"

    samples: Latent = Link()
    batch_index: int = Widget(0, ge=0, le=63)
    length: int = Widget(1, ge=1, le=64)

    def execute(self, ctx) -> LatentOut:
        samples = self.samples.samples
        start = min(samples.shape[0] - 1, self.batch_index)
        length = min(samples.shape[0] - start, self.length)
        mask = self.samples.noise_mask
        if mask is not None and mask.shape[0] > 1:
            mask = _repeat_masks(mask, samples.shape[0])[start:start + length].clone()
        elif mask is not None:
            mask = mask.clone()
        indices = self.samples.batch_index
        indices = tuple(range(start, start + length)) if indices is None else tuple(indices[start:start + length])
        return LatentOut(Latent(samples[start:start + length].clone(), mask, indices))


class RepeatLatentBatch(Node):
    """The batch repeated `amount` times; repeated images get their own noise draws."""

    class_type = "RepeatLatentBatch"
    display_name = "Repeat Latent Batch"
    category = "latent/batch"

    samples: Latent = Link()
    amount: int = Widget(1, ge=1, le=64)

    def execute(self, ctx) -> LatentOut:
        samples = self.samples.samples
        mask = self.samples.noise_mask
        if mask is not None and mask.shape[0] > 1:
            mask = _repeat_masks(mask, samples.shape[0]).repeat(self.amount, 1, 1, 1)
        indices = self.samples.batch_index
        if indices is not None:
            offset = max(indices) - min(indices) + 1
            indices = tuple(indices) + tuple(x + i * offset for i in range(1, self.amount) for x in indices)
        return LatentOut(Latent(samples.repeat(self.amount, 1, 1, 1), mask, indices))


class LatentComposite(Node):
    """Paste `samples_from` into `samples_to` at (x, y) pixels, feathering inner edges."""

    class_type = "LatentComposite"
    display_name = "Latent Composite"
    category = "latent"

    samples_to: Latent = Link()
    samples_from: Latent = Link()
    x: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=8)
    y: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=8)
    feather: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=8)

    def execute(self, ctx) -> LatentOut:
        import torch

        x, y, feather = self.x // 8, self.y // 8, self.feather // 8
        target = self.samples_to.samples
        out = target.clone()
        source = self.samples_from.samples[:, :, :target.shape[2] - y, :target.shape[3] - x]
        h, w = source.shape[2], source.shape[3]
        if feather == 0:
            out[:, :, y:y + h, x:x + w] = source
        else:
            mask = torch.ones_like(source)
            for t in range(feather):
                rate = (1.0 / feather) * (t + 1)
                if y != 0:
                    mask[:, :, t:1 + t, :] *= rate
                if y + h < target.shape[2]:
                    mask[:, :, h - 1 - t:h - t, :] *= rate
                if x != 0:
                    mask[:, :, :, t:1 + t] *= rate
                if x + w < target.shape[3]:
                    mask[:, :, :, w - 1 - t:w - t] *= rate
            out[:, :, y:y + h, x:x + w] = source * mask + out[:, :, y:y + h, x:x + w] * (1 - mask)
        return LatentOut(replace(self.samples_to, samples=out))


class SetLatentNoiseMask(Node):
    """Denoise only where the mask is 1 (inpainting on a normal model)."""

    class_type = "SetLatentNoiseMask"
    display_name = "Set Latent Noise Mask"
    category = "latent/inpaint"

    samples: Latent = Link()
    mask: Mask = Link()

    def execute(self, ctx) -> LatentOut:
        mask = self.mask.mask
        return LatentOut(replace(self.samples, noise_mask=mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])))
