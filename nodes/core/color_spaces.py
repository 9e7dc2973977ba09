"""ImageRGBToYUV and ImageYUVToRGB: kornia's YCbCr (BT.601 weights, chroma centred on 0.5), each
channel as a grey image, as ComfyUI's nodes split and join them."""
from __future__ import annotations

from dataclasses import dataclass

from engine import Link, Node, NodeOutput

from ..types import Image
from .vae import ImageOut


def rgb_to_ycbcr(rgb):
    """[..., 3] RGB → [..., 3] Y, Cb, Cr."""
    import torch

    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.stack([y, (b - y) * 0.564 + 0.5, (r - y) * 0.713 + 0.5], dim=-1)


def ycbcr_to_rgb(ycbcr):
    import torch

    y, cb, cr = ycbcr[..., 0], ycbcr[..., 1] - 0.5, ycbcr[..., 2] - 0.5
    return torch.stack([y + 1.403 * cr, y - 0.714 * cr - 0.344 * cb, y + 1.773 * cb], dim=-1)


@dataclass(frozen=True)
class YUVOut(NodeOutput):
    Y: Image
    U: Image
    V: Image


class ImageRGBToYUV(Node):
    """The luma and the two chroma channels, each as a grey image."""

    class_type = "ImageRGBToYUV"
    display_name = "ImageRGBToYUV"
    category = "image/batch"

    image: Image = Link()

    def execute(self, ctx) -> YUVOut:
        pixels = self.image.pixels[..., :3]
        channels = rgb_to_ycbcr(pixels)
        return YUVOut(*(Image(channels[..., i:i + 1].expand_as(pixels)) for i in range(3)))


class ImageYUVToRGB(Node):
    """An RGB image from grey Y, U and V images (each one's channel mean)."""

    class_type = "ImageYUVToRGB"
    display_name = "ImageYUVToRGB"
    category = "image/batch"

    Y: Image = Link()
    U: Image = Link()
    V: Image = Link()

    def execute(self, ctx) -> ImageOut:
        import torch

        channels = torch.cat([part.pixels.mean(dim=-1, keepdim=True) for part in (self.Y, self.U, self.V)], dim=-1)
        return ImageOut(Image(ycbcr_to_rgb(channels)))
