"""ComfyUI's image post-processing nodes: ImageBlend, ImageBlur, ImageSharpen, and ImageAddNoise."""
from __future__ import annotations

from typing import Literal

from engine import Link, Node, Widget

from ..types import Image
from .resample import common_upscale
from .vae import ImageOut

BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "difference")


def _blended(a, b, mode: str):
    import torch

    if mode == "multiply":
        return a * b
    if mode == "screen":
        return 1 - (1 - a) * (1 - b)
    if mode == "overlay":
        return torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
    if mode == "soft_light":
        lifted = torch.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, torch.sqrt(a))
        return torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (lifted - a))
    if mode == "difference":
        return a - b
    return b


class ImageBlend(Node):
    """Blend image2 over image1 (resized to it, bicubic, centre-cropped) by a blend mode and factor."""

    class_type = "ImageBlend"
    display_name = "Image Blend"
    category = "image/postprocessing"

    image1: Image = Link()
    image2: Image = Link()
    blend_factor: float = Widget(0.5, ge=0.0, le=1.0, step=0.01)
    blend_mode: Literal[BLEND_MODES] = Widget("normal")  # type: ignore[valid-type]

    def execute(self, ctx) -> ImageOut:
        import torch

        first, second = self.image1.pixels, self.image2.pixels
        if first.shape != second.shape:
            second = common_upscale(second.movedim(-1, 1), first.shape[2], first.shape[1], "bicubic",
                                    "center").movedim(1, -1)
        mixed = first * (1 - self.blend_factor) + _blended(first, second, self.blend_mode) * self.blend_factor
        return ImageOut(Image(torch.clamp(mixed, 0, 1)))


def _gaussian(size: int, sigma: float):
    """ComfyUI's post-processing kernel: the Gaussian sampled on [-1, 1]² whatever the size."""
    import torch

    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    distance = torch.sqrt(x * x + y * y)
    weights = torch.exp(-(distance * distance) / (2.0 * sigma * sigma))
    return weights / weights.sum()


def _filtered(pixels, kernel, radius: int):
    """Each channel convolved with `kernel` over reflected borders, as ComfyUI pads and crops."""
    import torch.nn.functional as F

    channels = pixels.shape[-1]
    image = F.pad(pixels.movedim(-1, 1), (radius, radius, radius, radius), "reflect")
    out = F.conv2d(image, kernel.repeat(channels, 1, 1).unsqueeze(1), padding=kernel.shape[-1] // 2, groups=channels)
    return out[:, :, radius:-radius, radius:-radius].movedim(1, -1)


class ImageBlur(Node):
    """Gaussian blur of `blur_radius` pixels."""

    class_type = "ImageBlur"
    display_name = "Image Blur"
    category = "image/postprocessing"

    image: Image = Link()
    blur_radius: int = Widget(1, ge=1, le=31)
    sigma: float = Widget(1.0, ge=0.1, le=10.0, step=0.1)

    def execute(self, ctx) -> ImageOut:
        kernel = _gaussian(self.blur_radius * 2 + 1, self.sigma)
        return ImageOut(Image(_filtered(self.image.pixels, kernel, self.blur_radius)))


class ImageSharpen(Node):
    """Unsharp-mask sharpening of `sharpen_radius` pixels, `alpha` strong."""

    class_type = "ImageSharpen"
    display_name = "Image Sharpen"
    category = "image/postprocessing"

    image: Image = Link()
    sharpen_radius: int = Widget(1, ge=1, le=31)
    sigma: float = Widget(1.0, ge=0.1, le=10.0, step=0.01)
    alpha: float = Widget(1.0, ge=0.0, le=5.0, step=0.01)

    def execute(self, ctx) -> ImageOut:
        import torch

        size = self.sharpen_radius * 2 + 1
        kernel = _gaussian(size, self.sigma) * -(self.alpha * 10)
        centre = size // 2
        kernel[centre, centre] = kernel[centre, centre] - kernel.sum() + 1.0
        return ImageOut(Image(torch.clamp(_filtered(self.image.pixels, kernel, self.sharpen_radius), 0, 1)))


class ImageAddNoise(Node):
    """Gaussian noise from the seed (the CPU generator, as torch.manual_seed gives it) times the
    strength, added and clipped to [0, 1]."""

    class_type = "ImageAddNoise"
    display_name = "ImageAddNoise"
    category = "image"

    image: Image = Link()
    seed: int = Widget(0, ge=0, le=2**64 - 1, control_after_generate=True)
    strength: float = Widget(0.5, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> ImageOut:
        import torch

        pixels = self.image.pixels
        noise = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(self.seed)).to(pixels)
        return ImageOut(Image(torch.clip(pixels + self.strength * noise, min=0.0, max=1.0)))
