"""Mask nodes: LoadImageMask and the basic mask operations."""
from __future__ import annotations

from typing import Literal

from engine import Link, Node, SavedFiles, Widget

from ..types import Image, Mask
from .image import in_input_folder, input_images, save_images
from .image_ops import MaskOut

MAX_RESOLUTION = 16384


def _batched(mask):
    return mask.reshape(-1, mask.shape[-2], mask.shape[-1])


class LoadImageMask(Node):
    """One channel of an input image as a mask (alpha is inverted: transparent = 1)."""

    class_type = "LoadImageMask"
    display_name = "Load Image (as Mask)"
    category = "mask"

    image: str = Widget(check=in_input_folder("image"), ui={"image_upload": True}, ui_choices=input_images)
    channel: Literal["alpha", "red", "green", "blue"] = Widget("alpha")

    @classmethod
    def fingerprint(cls, constants, settings):
        return settings.file_sha256(settings.annotated_file(constants["image"], "image"))

    def execute(self, ctx) -> MaskOut:
        import numpy as np
        import torch
        from PIL import Image as PILImage, ImageOps

        with PILImage.open(ctx.settings.annotated_file(self.image, "image")) as img:
            img = ImageOps.exif_transpose(img)
            if img.getbands() != ("R", "G", "B", "A"):
                if img.mode == "I":
                    img = img.point(lambda v: v * (1 / 255))
                img = img.convert("RGBA")
            band = self.channel[0].upper()
            if band not in img.getbands():
                return MaskOut(Mask(torch.zeros((1, 64, 64))))
            mask = torch.from_numpy(np.array(img.getchannel(band)).astype(np.float32) / 255.0)
        return MaskOut(Mask((1.0 - mask if band == "A" else mask).unsqueeze(0)))


class SolidMask(Node):
    class_type = "SolidMask"
    display_name = "SolidMask"
    category = "mask"

    value: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)
    width: int = Widget(512, ge=1, le=MAX_RESOLUTION)
    height: int = Widget(512, ge=1, le=MAX_RESOLUTION)

    def execute(self, ctx) -> MaskOut:
        import torch

        return MaskOut(Mask(torch.full((1, self.height, self.width), self.value, dtype=torch.float32)))


class InvertMask(Node):
    class_type = "InvertMask"
    display_name = "InvertMask"
    category = "mask"

    mask: Mask = Link()

    def execute(self, ctx) -> MaskOut:
        return MaskOut(Mask(1.0 - self.mask.mask))


class CropMask(Node):
    class_type = "CropMask"
    display_name = "CropMask"
    category = "mask"

    mask: Mask = Link()
    x: int = Widget(0, ge=0, le=MAX_RESOLUTION)
    y: int = Widget(0, ge=0, le=MAX_RESOLUTION)
    width: int = Widget(512, ge=1, le=MAX_RESOLUTION)
    height: int = Widget(512, ge=1, le=MAX_RESOLUTION)

    def execute(self, ctx) -> MaskOut:
        return MaskOut(Mask(_batched(self.mask.mask)[:, self.y:self.y + self.height, self.x:self.x + self.width]))


class ThresholdMask(Node):
    class_type = "ThresholdMask"
    display_name = "ThresholdMask"
    category = "mask"

    mask: Mask = Link()
    value: float = Widget(0.5, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> MaskOut:
        return MaskOut(Mask((self.mask.mask > self.value).float()))


class MaskComposite(Node):
    """Combine `source` into `destination` at (x, y); the result is clamped to [0, 1]."""

    class_type = "MaskComposite"
    display_name = "MaskComposite"
    category = "mask"

    destination: Mask = Link()
    source: Mask = Link()
    x: int = Widget(0, ge=0, le=MAX_RESOLUTION)
    y: int = Widget(0, ge=0, le=MAX_RESOLUTION)
    operation: Literal["multiply", "add", "subtract", "and", "or", "xor"] = Widget("multiply")

    def execute(self, ctx) -> MaskOut:
        import torch

        out = _batched(self.destination.mask).clone()
        source = _batched(self.source.mask)
        right = min(self.x + source.shape[-1], out.shape[-1])
        bottom = min(self.y + source.shape[-2], out.shape[-2])
        part = source[:, :bottom - self.y, :right - self.x]
        here = out[:, self.y:bottom, self.x:right]
        if self.operation in ("and", "or", "xor"):
            op = {"and": torch.bitwise_and, "or": torch.bitwise_or, "xor": torch.bitwise_xor}[self.operation]
            combined = op(here.round().bool(), part.round().bool()).float()
        else:
            combined = {"multiply": here * part, "add": here + part, "subtract": here - part}[self.operation]
        out[:, self.y:bottom, self.x:right] = combined
        return MaskOut(Mask(out.clamp(0.0, 1.0)))


class FeatherMask(Node):
    """Fade the mask linearly towards each edge over the given widths."""

    class_type = "FeatherMask"
    display_name = "FeatherMask"
    category = "mask"

    mask: Mask = Link()
    left: int = Widget(0, ge=0, le=MAX_RESOLUTION)
    top: int = Widget(0, ge=0, le=MAX_RESOLUTION)
    right: int = Widget(0, ge=0, le=MAX_RESOLUTION)
    bottom: int = Widget(0, ge=0, le=MAX_RESOLUTION)

    def execute(self, ctx) -> MaskOut:
        out = _batched(self.mask.mask).clone()
        left, right = min(self.left, out.shape[-1]), min(self.right, out.shape[-1])
        top, bottom = min(self.top, out.shape[-2]), min(self.bottom, out.shape[-2])
        # ComfyUI indexes the far edges as -x, so step 0 lands on the first row/column: kept
        for x in range(left):
            out[:, :, x] *= (x + 1.0) / left
        for x in range(right):
            out[:, :, -x] *= (x + 1) / right
        for y in range(top):
            out[:, y, :] *= (y + 1.0) / top
        for y in range(bottom):
            out[:, -y, :] *= (y + 1) / bottom
        return MaskOut(Mask(out))


class GrowMask(Node):
    """Dilate (or, negative, erode) by `expand` pixels; tapered corners use a cross kernel."""

    class_type = "GrowMask"
    display_name = "GrowMask"
    category = "mask"

    mask: Mask = Link()
    expand: int = Widget(0, ge=-MAX_RESOLUTION, le=MAX_RESOLUTION)
    tapered_corners: bool = Widget(True)

    def execute(self, ctx) -> MaskOut:
        import numpy as np
        import torch
        from scipy import ndimage

        corner = 0 if self.tapered_corners else 1
        kernel = np.array([[corner, 1, corner], [1, 1, 1], [corner, 1, corner]])
        out = []
        for mask in _batched(self.mask.mask):
            values = mask.numpy()
            for _ in range(abs(self.expand)):
                grow = ndimage.grey_dilation if self.expand > 0 else ndimage.grey_erosion
                values = grow(values, footprint=kernel)
            out.append(torch.from_numpy(values))
        return MaskOut(Mask(torch.stack(out)))


class MaskPreview(Node):
    """Preview masks as grey images (written under `<output>/previews`, as PreviewImage does)."""

    class_type = "MaskPreview"
    display_name = "Preview Mask"
    category = "mask"
    is_output_node = True

    mask: Mask = Link()

    def execute(self, ctx) -> SavedFiles:
        mask = self.mask.mask
        grey = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3)
        return SavedFiles(save_images(ctx, Image(grey), "previews/ComfyUI_temp", compress_level=4))
