"""ComfyUI's image post-processing nodes: ImageBlend, ImageBlur, ImageSharpen, ImageAddNoise,
ImageMorphology and ImageQuantize."""
from __future__ import annotations

import math
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


def gaussian_kernel(size: int, sigma: float):
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
        kernel = gaussian_kernel(self.blur_radius * 2 + 1, self.sigma)
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
        kernel = gaussian_kernel(size, self.sigma) * -(self.alpha * 10)
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


MORPHOLOGY = ("erode", "dilate", "open", "close", "gradient", "bottom_hat", "top_hat")


def _extremum(images, kernel_size: int, largest: bool):
    """Dilation (max) or erosion (min) over a flat square window as kornia computes it: the origin
    at kernel_size // 2, and pixels outside the image never chosen (its geodesic border)."""
    import torch

    origin = kernel_size // 2
    padding = (origin, kernel_size - origin - 1, origin, kernel_size - origin - 1)
    padded = torch.nn.functional.pad(images, padding, mode="constant", value=-1e4 if largest else 1e4)
    windows = padded.unfold(2, kernel_size, 1).unfold(3, kernel_size, 1).flatten(-2)
    return windows.amax(dim=-1) if largest else windows.amin(dim=-1)


class ImageMorphology(Node):
    """Erode, dilate, open, close, the morphological gradient and the top / bottom hats, with a
    square window of `kernel_size`."""

    class_type = "ImageMorphology"
    display_name = "ImageMorphology"
    category = "image/postprocessing"

    image: Image = Link()
    operation: Literal[MORPHOLOGY] = Widget("erode")  # type: ignore[valid-type]
    kernel_size: int = Widget(3, ge=3, le=999, step=1)

    def execute(self, ctx) -> ImageOut:
        x = self.image.pixels.movedim(-1, 1)
        size = self.kernel_size

        def dilate(t):
            return _extremum(t, size, largest=True)

        def erode(t):
            return _extremum(t, size, largest=False)

        out = {"erode": lambda: erode(x), "dilate": lambda: dilate(x), "open": lambda: dilate(erode(x)),
               "close": lambda: erode(dilate(x)), "gradient": lambda: dilate(x) - erode(x),
               "top_hat": lambda: x - dilate(erode(x)), "bottom_hat": lambda: erode(dilate(x)) - x}[self.operation]()
        return ImageOut(Image(out.movedim(1, -1)))


def _bayer_matrix(order: int):
    """The normalised recursive Bayer threshold matrix of side `order` (a power of two)."""
    import numpy as np

    matrix = np.zeros((1, 1), "float32")
    for level in range(1, int(math.log2(order)) + 1):
        q = 4 ** level
        m = q * matrix
        matrix = np.block([[m - 1.5, m + 0.5], [m + 1.5, m - 0.5]]) / q
    return matrix


class ImageQuantize(Node):
    """Each image reduced to a palette of `colors` (PIL's median cut), without dithering, with
    Floyd-Steinberg's, or with an ordered Bayer pattern of 2…16, as ComfyUI's node does it."""

    class_type = "ImageQuantize"
    display_name = "ImageQuantize"
    category = "image/postprocessing"

    image: Image = Link()
    colors: int = Widget(256, ge=1, le=256, step=1)
    dither: Literal["none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"] = Widget("none")

    def execute(self, ctx) -> ImageOut:
        import numpy as np
        import torch
        from PIL import Image as PILImage

        out = torch.zeros_like(self.image.pixels[..., :3])
        for index, pixels in enumerate(self.image.pixels[..., :3]):
            picture = PILImage.fromarray((pixels * 255).to(torch.uint8).numpy(), mode="RGB")  # truncated, as ComfyUI
            palette = picture.quantize(colors=self.colors)  # PIL needs a palette image for dithered quantizing
            if self.dither.startswith("bayer"):
                spread = 2 * 256 / (len(palette.getpalette()) // 3)
                threshold = torch.from_numpy(spread * _bayer_matrix(int(self.dither.split("-")[-1])) + 0.5)
                values = torch.from_numpy(np.array(picture).astype(np.float32))
                tiled = threshold.tile(math.ceil(values.shape[0] / threshold.shape[0]),
                                       math.ceil(values.shape[1] / threshold.shape[1])).unsqueeze(-1)
                values = (values + tiled[:values.shape[0], :values.shape[1]]).clamp(0, 255).to(torch.uint8)
                quantized = PILImage.fromarray(values.numpy()).quantize(palette=palette, dither=PILImage.Dither.NONE)
            else:
                dither = PILImage.Dither.NONE if self.dither == "none" else PILImage.Dither.FLOYDSTEINBERG
                quantized = picture.quantize(palette=palette, dither=dither)
            out[index] = torch.from_numpy(np.array(quantized.convert("RGB"))).float() / 255
        return ImageOut(Image(out))
