"""ComfyUI's latent arithmetic and reshaping: add, subtract, multiply, interpolate, blend, batch,
seed behaviour, flip, rotate, crop. A second latent of another size is stretched (bilinear, centre
crop) and repeated to the first's batch, as ComfyUI's `reshape_latent_to` does."""
from __future__ import annotations

from dataclasses import replace
from typing import Literal

from engine import Link, Node, Widget

from ..types import Latent
from .composite import repeat_to_batch
from .latent import LatentOut
from .resample import common_upscale

MAX_RESOLUTION = 16384
ROTATIONS = ("none", "90 degrees", "180 degrees", "270 degrees")
FLIPS = ("x-axis: vertically", "y-axis: horizontally")


def _shaped_like(target, latent):
    if latent.shape[1:] != target.shape[1:]:
        latent = common_upscale(latent, target.shape[3], target.shape[2], "bilinear", "center")
    return repeat_to_batch(latent, target.shape[0])


class LatentAdd(Node):
    """samples1 + samples2."""

    class_type = "LatentAdd"
    category = "latent/advanced"

    samples1: Latent = Link()
    samples2: Latent = Link()

    def execute(self, ctx) -> LatentOut:
        first = self.samples1.samples
        return LatentOut(replace(self.samples1, samples=first + _shaped_like(first, self.samples2.samples)))


class LatentSubtract(Node):
    """samples1 − samples2."""

    class_type = "LatentSubtract"
    category = "latent/advanced"

    samples1: Latent = Link()
    samples2: Latent = Link()

    def execute(self, ctx) -> LatentOut:
        first = self.samples1.samples
        return LatentOut(replace(self.samples1, samples=first - _shaped_like(first, self.samples2.samples)))


class LatentMultiply(Node):
    """samples × multiplier."""

    class_type = "LatentMultiply"
    category = "latent/advanced"

    samples: Latent = Link()
    multiplier: float = Widget(1.0, ge=-10.0, le=10.0, step=0.01)

    def execute(self, ctx) -> LatentOut:
        return LatentOut(replace(self.samples, samples=self.samples.samples * self.multiplier))


class LatentInterpolate(Node):
    """Interpolate directions and magnitudes (over channels) separately, `ratio` of samples1."""

    class_type = "LatentInterpolate"
    category = "latent/advanced"

    samples1: Latent = Link()
    samples2: Latent = Link()
    ratio: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> LatentOut:
        import torch

        first = self.samples1.samples
        second = _shaped_like(first, self.samples2.samples)
        # the norms keep no channel axis and broadcast from the right, as ComfyUI's do
        m1, m2 = torch.linalg.vector_norm(first, dim=1), torch.linalg.vector_norm(second, dim=1)
        mixed = torch.nan_to_num(first / m1) * self.ratio + torch.nan_to_num(second / m2) * (1.0 - self.ratio)
        direction = torch.nan_to_num(mixed / torch.linalg.vector_norm(mixed, dim=1))
        return LatentOut(replace(self.samples1, samples=direction * (m1 * self.ratio + m2 * (1.0 - self.ratio))))


class LatentBlend(Node):
    """samples1 × blend_factor + samples2 (stretched, bicubic) × (1 − blend_factor)."""

    class_type = "LatentBlend"
    display_name = "Latent Blend"
    category = "_for_testing"

    samples1: Latent = Link()
    samples2: Latent = Link()
    blend_factor: float = Widget(0.5, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> LatentOut:
        first, second = self.samples1.samples, self.samples2.samples
        if first.shape != second.shape:
            second = common_upscale(second, first.shape[3], first.shape[2], "bicubic", "center")
        blended = first * self.blend_factor + second * (1 - self.blend_factor)
        return LatentOut(replace(self.samples1, samples=blended))


class LatentBatch(Node):
    """samples2 (stretched to samples1's size) after samples1, with their noise draws."""

    class_type = "LatentBatch"
    category = "latent/batch"

    samples1: Latent = Link()
    samples2: Latent = Link()

    def execute(self, ctx) -> LatentOut:
        import torch

        first, second = self.samples1.samples, self.samples2.samples
        if first.shape[1:] != second.shape[1:]:
            second = common_upscale(second, first.shape[3], first.shape[2], "bilinear", "center")
        draws = (self.samples1.batch_index or tuple(range(first.shape[0]))) + \
            (self.samples2.batch_index or tuple(range(second.shape[0])))
        return LatentOut(replace(self.samples1, samples=torch.cat((first, second)), batch_index=tuple(draws)))


class LatentBatchSeedBehavior(Node):
    """`fixed`: every image of the batch gets the first one's noise; `random`: each its own."""

    class_type = "LatentBatchSeedBehavior"
    category = "latent/advanced"

    samples: Latent = Link()
    seed_behavior: Literal["random", "fixed"] = Widget("fixed")

    def execute(self, ctx) -> LatentOut:
        if self.seed_behavior == "random":
            return LatentOut(replace(self.samples, batch_index=None))
        first = (self.samples.batch_index or (0,))[0]
        return LatentOut(replace(self.samples, batch_index=(first,) * self.samples.samples.shape[0]))


class LatentFlip(Node):
    """Mirror the latent top to bottom or left to right."""

    class_type = "LatentFlip"
    display_name = "Flip Latent"
    category = "latent/transform"

    samples: Latent = Link()
    flip_method: Literal[FLIPS] = Widget(FLIPS[0])  # type: ignore[valid-type]

    def execute(self, ctx) -> LatentOut:
        import torch

        axis = 2 if self.flip_method.startswith("x") else 3
        return LatentOut(replace(self.samples, samples=torch.flip(self.samples.samples, dims=[axis])))


class LatentRotate(Node):
    """Rotate the latent clockwise by quarter turns."""

    class_type = "LatentRotate"
    display_name = "Rotate Latent"
    category = "latent/transform"

    samples: Latent = Link()
    rotation: Literal[ROTATIONS] = Widget("none")  # type: ignore[valid-type]

    def execute(self, ctx) -> LatentOut:
        import torch

        turns = ROTATIONS.index(self.rotation)
        return LatentOut(replace(self.samples, samples=torch.rot90(self.samples.samples, k=turns, dims=[3, 2])))


class LatentCrop(Node):
    """A width × height window at (x, y) pixels; it starts at least 64 pixels from the far edges."""

    class_type = "LatentCrop"
    display_name = "Crop Latent"
    category = "latent/transform"

    samples: Latent = Link()
    width: int = Widget(512, ge=64, le=MAX_RESOLUTION, step=8)
    height: int = Widget(512, ge=64, le=MAX_RESOLUTION, step=8)
    x: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=8)
    y: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=8)

    def execute(self, ctx) -> LatentOut:
        samples = self.samples.samples
        x, y = min(self.x // 8, samples.shape[3] - 8), min(self.y // 8, samples.shape[2] - 8)
        window = samples[:, :, y:y + self.height // 8, x:x + self.width // 8]
        return LatentOut(replace(self.samples, samples=window))
