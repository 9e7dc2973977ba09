"""Image nodes: scale, pad for outpainting, invert, batch, crop, and image↔mask."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from engine import Link, Node, NodeOutput, Widget

from ..types import Image, Mask
from .resample import IMAGE_METHODS, common_upscale
from .vae import ImageOut

MAX_RESOLUTION = 16384
ImageMethod = Literal[IMAGE_METHODS]  # type: ignore[valid-type]


def resize_images(pixels, width: int, height: int, method: str, crop: str = "disabled"):
    """[B, H, W, C] images to width × height by `method` (common_upscale on channels-first)."""
    return common_upscale(pixels.movedim(-1, 1), width, height, method, crop).movedim(1, -1)


class ImageScale(Node):
    """Resize to width × height; a 0 side keeps the aspect."""

    class_type = "ImageScale"
    display_name = "Upscale Image"
    category = "image/upscaling"

    image: Image = Link()
    upscale_method: ImageMethod = Widget("nearest-exact")
    width: int = Widget(512, ge=0, le=MAX_RESOLUTION)
    height: int = Widget(512, ge=0, le=MAX_RESOLUTION)
    crop: Literal["disabled", "center"] = Widget("disabled")

    def execute(self, ctx) -> ImageOut:
        pixels, width, height = self.image.pixels, self.width, self.height
        if width == 0 and height == 0:
            return ImageOut(self.image)
        if width == 0:
            width = max(1, round(pixels.shape[2] * height / pixels.shape[1]))
        elif height == 0:
            height = max(1, round(pixels.shape[1] * width / pixels.shape[2]))
        return ImageOut(Image(resize_images(pixels, width, height, self.upscale_method, self.crop)))


class ImageScaleBy(Node):
    """Resize by a factor (sides rounded)."""

    class_type = "ImageScaleBy"
    display_name = "Upscale Image By"
    category = "image/upscaling"

    image: Image = Link()
    upscale_method: ImageMethod = Widget("nearest-exact")
    scale_by: float = Widget(1.0, ge=0.01, le=8.0, step=0.01)

    def execute(self, ctx) -> ImageOut:
        pixels = self.image.pixels
        width, height = round(pixels.shape[2] * self.scale_by), round(pixels.shape[1] * self.scale_by)
        return ImageOut(Image(resize_images(pixels, width, height, self.upscale_method)))


class ImageScaleToTotalPixels(Node):
    """Resize to about `megapixels` × 2²⁰ pixels, keeping the aspect."""

    class_type = "ImageScaleToTotalPixels"
    display_name = "Scale Image to Total Pixels"
    category = "image/upscaling"

    image: Image = Link()
    upscale_method: ImageMethod = Widget("nearest-exact")
    megapixels: float = Widget(1.0, ge=0.01, le=16.0, step=0.01)

    def execute(self, ctx) -> ImageOut:
        pixels = self.image.pixels
        scale = math.sqrt(int(self.megapixels * 1024 * 1024) / (pixels.shape[2] * pixels.shape[1]))
        width, height = round(pixels.shape[2] * scale), round(pixels.shape[1] * scale)
        return ImageOut(Image(resize_images(pixels, width, height, self.upscale_method)))


class ImageScaleToMaxDimension(Node):
    """Resize so that the longer side is `largest_size`, keeping the aspect (a square: both)."""

    class_type = "ImageScaleToMaxDimension"
    display_name = "Scale Image to Max Dimension"
    category = "image/upscaling"

    image: Image = Link()
    upscale_method: Literal["area", "lanczos", "bilinear", "nearest-exact", "bicubic"] = Widget("area")
    largest_size: int = Widget(512, ge=0, le=MAX_RESOLUTION, step=1)

    def execute(self, ctx) -> ImageOut:
        pixels = self.image.pixels
        height, width = pixels.shape[1], pixels.shape[2]
        if height > width:
            width, height = round(width / height * self.largest_size), self.largest_size
        elif width > height:
            width, height = self.largest_size, round(height / width * self.largest_size)
        else:
            width = height = self.largest_size
        return ImageOut(Image(resize_images(pixels, width, height, self.upscale_method)))


@dataclass(frozen=True)
class ImageMaskOut(NodeOutput):
    IMAGE: Image
    MASK: Mask


class ImagePadForOutpaint(Node):
    """Pad with grey and return the mask of the new area, feathered into the old image."""

    class_type = "ImagePadForOutpaint"
    display_name = "Pad Image for Outpainting"
    category = "image"

    image: Image = Link()
    left: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=8)
    top: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=8)
    right: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=8)
    bottom: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=8)
    feathering: int = Widget(40, ge=0, le=MAX_RESOLUTION)

    def execute(self, ctx) -> ImageMaskOut:
        import torch

        image = self.image.pixels
        b, h, w, c = image.shape
        top, left, bottom, right, feather = self.top, self.left, self.bottom, self.right, self.feathering
        padded = torch.full((b, h + top + bottom, w + left + right, c), 0.5, dtype=torch.float32)
        padded[:, top:top + h, left:left + w] = image
        mask = torch.ones((h + top + bottom, w + left + right), dtype=torch.float32)
        inner = torch.zeros((h, w), dtype=torch.float32)
        if feather > 0 and feather * 2 < h and feather * 2 < w:
            rows = torch.arange(h, dtype=torch.float32).unsqueeze(1).expand(h, w)
            cols = torch.arange(w, dtype=torch.float32).unsqueeze(0).expand(h, w)
            distance = torch.stack([rows if top else torch.full_like(rows, h), (h - rows) if bottom else torch.full_like(rows, h),
                                    cols if left else torch.full_like(cols, w), (w - cols) if right else torch.full_like(cols, w)]).amin(0)
            ramp = (feather - distance) / feather
            inner = torch.where(distance < feather, ramp * ramp, inner)
        mask[top:top + h, left:left + w] = inner
        return ImageMaskOut(Image(padded), Mask(mask.unsqueeze(0)))


class ImageInvert(Node):
    class_type = "ImageInvert"
    display_name = "Invert Image"
    category = "image"

    image: Image = Link()

    def execute(self, ctx) -> ImageOut:
        return ImageOut(Image(1.0 - self.image.pixels))


class ImageBatch(Node):
    """Two batches in one; the second resized (bilinear, center crop) to the first's size."""

    class_type = "ImageBatch"
    display_name = "Batch Images"
    category = "image"

    image1: Image = Link()
    image2: Image = Link()

    def execute(self, ctx) -> ImageOut:
        import torch

        first, second = self.image1.pixels, self.image2.pixels
        if first.shape[1:] != second.shape[1:]:
            second = resize_images(second, first.shape[2], first.shape[1], "bilinear", "center")
        return ImageOut(Image(torch.cat([first, second])))


class ImageCrop(Node):
    class_type = "ImageCrop"
    display_name = "Image Crop"
    category = "image/transform"

    image: Image = Link()
    width: int = Widget(512, ge=1, le=MAX_RESOLUTION, step=8)
    height: int = Widget(512, ge=1, le=MAX_RESOLUTION, step=8)
    x: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=8)
    y: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=8)

    def execute(self, ctx) -> ImageOut:
        pixels = self.image.pixels
        x, y = min(self.x, pixels.shape[2] - 1), min(self.y, pixels.shape[1] - 1)
        return ImageOut(Image(pixels[:, y:y + self.height, x:x + self.width, :]))


@dataclass(frozen=True)
class MaskOut(NodeOutput):
    MASK: Mask


CHANNELS = ("red", "green", "blue", "alpha")


class ImageToMask(Node):
    class_type = "ImageToMask"
    display_name = "Convert Image to Mask"
    category = "mask"

    image: Image = Link()
    channel: Literal[CHANNELS] = Widget("red")  # type: ignore[valid-type]

    def execute(self, ctx) -> MaskOut:
        return MaskOut(Mask(self.image.pixels[:, :, :, CHANNELS.index(self.channel)]))


class ImageColorToMask(Node):
    """1 where the image's 8-bit colour is exactly `color` (0xRRGGBB), 0 elsewhere."""

    class_type = "ImageColorToMask"
    display_name = "ImageColorToMask"
    category = "mask"

    image: Image = Link()
    color: int = Widget(0, ge=0, le=0xFFFFFF, step=1)

    def execute(self, ctx) -> MaskOut:
        import torch

        levels = (torch.clamp(self.image.pixels, 0, 1.0) * 255.0).round().to(torch.int)
        packed = (levels[..., 0] << 16) + (levels[..., 1] << 8) + levels[..., 2]
        return MaskOut(Mask(torch.where(packed == self.color, 1.0, 0.0).float()))


class MaskToImage(Node):
    class_type = "MaskToImage"
    display_name = "Convert Mask to Image"
    category = "mask"

    mask: Mask = Link()

    def execute(self, ctx) -> ImageOut:
        mask = self.mask.mask
        return ImageOut(Image(mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).movedim(1, -1).expand(-1, -1, -1, 3)))


class EmptyImage(Node):
    """A batch of images of one colour (0xRRGGBB)."""

    class_type = "EmptyImage"
    display_name = "EmptyImage"
    category = "image"

    width: int = Widget(512, ge=1, le=MAX_RESOLUTION, step=1)
    height: int = Widget(512, ge=1, le=MAX_RESOLUTION, step=1)
    batch_size: int = Widget(1, ge=1, le=4096)
    color: int = Widget(0, ge=0, le=0xFFFFFF, step=1)

    def execute(self, ctx) -> ImageOut:
        import torch

        channels = [torch.full([self.batch_size, self.height, self.width, 1], ((self.color >> shift) & 0xFF) / 0xFF)
                    for shift in (16, 8, 0)]
        return ImageOut(Image(torch.cat(channels, dim=-1)))


@dataclass(frozen=True)
class SizeOut(NodeOutput):
    width: int
    height: int
    batch_size: int


class GetImageSize(Node):
    """The width, height and batch size of an image."""

    class_type = "GetImageSize"
    display_name = "Get Image Size"
    category = "image"

    image: Image = Link()

    def execute(self, ctx) -> SizeOut:
        batch, height, width = self.image.pixels.shape[:3]
        return SizeOut(int(width), int(height), int(batch))
