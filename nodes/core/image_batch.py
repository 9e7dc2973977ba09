"""Image batches and orientation: RepeatImageBatch, ImageFromBatch, ImageFlip, ImageRotate."""
from __future__ import annotations

from typing import Literal

from engine import Link, Node, Widget

from ..types import Image
from .latent_ops import FLIPS, ROTATIONS
from .vae import ImageOut


class RepeatImageBatch(Node):
    """The batch repeated `amount` times."""

    class_type = "RepeatImageBatch"
    category = "image/batch"

    image: Image = Link()
    amount: int = Widget(1, ge=1, le=4096)

    def execute(self, ctx) -> ImageOut:
        return ImageOut(Image(self.image.pixels.repeat((self.amount, 1, 1, 1))))


class ImageFromBatch(Node):
    """`length` images from `batch_index` on (both clamped to the batch)."""

    class_type = "ImageFromBatch"
    category = "image/batch"

    image: Image = Link()
    batch_index: int = Widget(0, ge=0, le=4095)
    length: int = Widget(1, ge=1, le=4096)

    def execute(self, ctx) -> ImageOut:
        pixels = self.image.pixels
        start = min(pixels.shape[0] - 1, self.batch_index)
        return ImageOut(Image(pixels[start:start + min(pixels.shape[0] - start, self.length)].clone()))


class ImageFlip(Node):
    """Mirror images top to bottom or left to right."""

    class_type = "ImageFlip"
    display_name = "Flip Image"
    category = "image/transform"

    image: Image = Link()
    flip_method: Literal[FLIPS] = Widget(FLIPS[0])  # type: ignore[valid-type]

    def execute(self, ctx) -> ImageOut:
        import torch

        axis = 1 if self.flip_method.startswith("x") else 2
        return ImageOut(Image(torch.flip(self.image.pixels, dims=[axis])))


class ImageRotate(Node):
    """Rotate images clockwise by quarter turns."""

    class_type = "ImageRotate"
    display_name = "Rotate Image"
    category = "image/transform"

    image: Image = Link()
    rotation: Literal[ROTATIONS] = Widget("none")  # type: ignore[valid-type]

    def execute(self, ctx) -> ImageOut:
        import torch

        turns = ROTATIONS.index(self.rotation)
        return ImageOut(Image(torch.rot90(self.image.pixels, k=turns, dims=[2, 1])))
