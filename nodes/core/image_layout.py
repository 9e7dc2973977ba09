"""Images laid out together or in a frame: ImageStitch (KJNodes' node, upstreamed into ComfyUI)
and ResizeAndPadImage."""
from __future__ import annotations

from typing import Literal

from engine import Link, Node, Widget

from ..types import Image
from .image_ops import MAX_RESOLUTION, resize_images
from .vae import ImageOut

SPACING_COLORS = {"white": 1.0, "black": 0.0, "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0),
                  "blue": (0.0, 0.0, 1.0)}


def _repeat_last(images, size: int):
    """A batch filled up to `size` with copies of its last image (ImageStitch's rule)."""
    import torch

    if images.shape[0] >= size:
        return images
    return torch.cat([images, images[-1:].repeat(size - images.shape[0], 1, 1, 1)])


def _pad_centred(images, dim: int, size: int, value: float):
    """Pad dimension `dim` (1: height, 2: width) of [B, H, W, C] to `size`, centred."""
    import torch

    missing = size - images.shape[dim]
    if missing <= 0:
        return images
    before, after = missing // 2, missing - missing // 2
    padding = (0, 0, 0, 0, before, after) if dim == 1 else (0, 0, before, after)
    return torch.nn.functional.pad(images, padding, mode="constant", value=value)


def _ones_to(images, channels: int):
    import torch

    if images.shape[-1] >= channels:
        return images
    return torch.cat([images, torch.ones(*images.shape[:-1], channels - images.shape[-1])], dim=-1)


class ImageStitch(Node):
    """image2 put beside image1 (right, down, left or up), resized to meet it (lanczos, keeping its
    aspect) or padded, with an optional coloured gap."""

    class_type = "ImageStitch"
    display_name = "Image Stitch"
    category = "image/transform"

    image1: Image = Link()
    direction: Literal["right", "down", "left", "up"] = Widget("right")
    match_image_size: bool = Widget(True)
    spacing_width: int = Widget(0, ge=0, le=1024, step=2)
    spacing_color: Literal[tuple(SPACING_COLORS)] = Widget("white")  # type: ignore[valid-type]
    image2: Image | None = Link(optional=True)

    def execute(self, ctx) -> ImageOut:
        import torch

        if self.image2 is None:
            return ImageOut(self.image1)
        first, second = self.image1.pixels, self.image2.pixels
        batch = max(first.shape[0], second.shape[0])
        first, second = _repeat_last(first, batch), _repeat_last(second, batch)
        sideways = self.direction in ("left", "right")
        color = SPACING_COLORS[self.spacing_color]
        if self.match_image_size:
            height, width = first.shape[1:3]
            aspect = second.shape[2] / second.shape[1]
            size = (int(height * aspect), height) if sideways else (width, int(width / aspect))
            second = resize_images(second, *size, "lanczos")
        else:
            value = 0.0 if isinstance(color, tuple) else color
            dim = 1 if sideways else 2
            size = max(first.shape[dim], second.shape[dim])
            first, second = _pad_centred(first, dim, size, value), _pad_centred(second, dim, size, value)
        channels = max(first.shape[-1], second.shape[-1])
        first, second = _ones_to(first, channels), _ones_to(second, channels)
        parts = [second, first] if self.direction in ("left", "up") else [first, second]
        if self.spacing_width > 0:
            gap = self.spacing_width + self.spacing_width % 2
            shape = (batch, max(first.shape[1], second.shape[1]), gap, channels) if sideways else \
                (batch, gap, max(first.shape[2], second.shape[2]), channels)
            spacing = torch.zeros(shape)
            values = color if isinstance(color, tuple) else (color,) * 3
            for channel, value in enumerate(values[:channels]):
                spacing[..., channel] = value
            if channels == 4:
                spacing[..., 3] = 1.0
            parts.insert(1, spacing)
        return ImageOut(Image(torch.cat(parts, dim=2 if sideways else 1)))


class ResizeAndPadImage(Node):
    """The image scaled to fit inside the target size, keeping its aspect, centred on white or black."""

    class_type = "ResizeAndPadImage"
    display_name = "ResizeAndPadImage"
    category = "image/transform"

    image: Image = Link()
    target_width: int = Widget(512, ge=1, le=MAX_RESOLUTION, step=1)
    target_height: int = Widget(512, ge=1, le=MAX_RESOLUTION, step=1)
    padding_color: Literal["white", "black"] = Widget("white")
    interpolation: Literal["area", "bicubic", "nearest-exact", "bilinear", "lanczos"] = Widget("area")

    def execute(self, ctx) -> ImageOut:
        import torch

        pixels = self.image.pixels
        batch, height, width, channels = pixels.shape
        scale = min(self.target_width / width, self.target_height / height)
        new_width, new_height = int(width * scale), int(height * scale)
        resized = resize_images(pixels, new_width, new_height, self.interpolation)
        out = torch.full((batch, self.target_height, self.target_width, channels),
                         0.0 if self.padding_color == "black" else 1.0, dtype=pixels.dtype)
        top, left = (self.target_height - new_height) // 2, (self.target_width - new_width) // 2
        out[:, top:top + new_height, left:left + new_width] = resized
        return ImageOut(Image(out))
