"""SaveAnimatedWEBP and SaveAnimatedPNG: a batch of images as one animation in the output folder,
with the prompt and workflow where ComfyUI puts them (WEBP: EXIF tags 0x0110 and 0x010F as
"prompt:<json>" / "workflow:<json>"; APNG: `comf` chunks after the image data)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Literal

from engine import Link, Node, SavedFiles, Widget
from engine.atomic import next_number, numbered

from ..types import Image
from .image import _expand_prefix, _prefix_stays_inside

WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}


def _frames(images: Image) -> list:
    import numpy as np
    from PIL import Image as PILImage

    # truncated, not rounded, as ComfyUI converts
    arrays = np.clip(images.pixels.float().cpu().numpy() * 255.0, 0, 255).astype(np.uint8)
    return [PILImage.fromarray(array) for array in arrays]


def save_animation(ctx, images: Image, prefix: str, suffix: str, write: Callable) -> str:
    """`write(handle, frames)` into `<prefix>_<counter:05>_<suffix>`, claimed as SaveImage claims."""
    relative = Path(_expand_prefix(prefix, images.pixels.shape[2], images.pixels.shape[1]))
    folder = ctx.output_path(str(relative.parent))
    folder.mkdir(parents=True, exist_ok=True)
    counter = next_number(folder, re.escape(relative.name), suffix)
    frames = _frames(images)
    return str(ctx.write_new_file(folder, numbered(relative.name, suffix, counter), lambda fh: write(fh, frames)))


class SaveAnimatedWEBP(Node):
    class_type = "SaveAnimatedWEBP"
    display_name = "SaveAnimatedWEBP"
    category = "image/animation"
    is_output_node = True

    images: Image = Link()
    filename_prefix: str = Widget("ComfyUI", check=_prefix_stays_inside)
    fps: float = Widget(6.0, ge=0.01, le=1000.0, step=0.01)
    lossless: bool = Widget(True)
    quality: int = Widget(80, ge=0, le=100)
    method: Literal[tuple(WEBP_METHODS)] = Widget("default")  # type: ignore[valid-type]

    def execute(self, ctx) -> SavedFiles:
        def write(handle, frames):
            exif = frames[0].getexif()
            exif[0x0110] = f"prompt:{json.dumps(ctx.run.prompt)}"
            if ctx.run.workflow is not None:
                exif[0x010F] = f"workflow:{json.dumps(ctx.run.workflow)}"
            frames[0].save(handle, format="WEBP", save_all=True, duration=int(1000.0 / self.fps),
                           append_images=frames[1:], exif=exif, lossless=self.lossless, quality=self.quality,
                           method=WEBP_METHODS[self.method])

        return SavedFiles((save_animation(ctx, self.images, self.filename_prefix, ".webp", write),))


class SaveAnimatedPNG(Node):
    class_type = "SaveAnimatedPNG"
    display_name = "SaveAnimatedPNG"
    category = "image/animation"
    is_output_node = True

    images: Image = Link()
    filename_prefix: str = Widget("ComfyUI", check=_prefix_stays_inside)
    fps: float = Widget(6.0, ge=0.01, le=1000.0, step=0.01)
    compress_level: int = Widget(4, ge=0, le=9)

    def execute(self, ctx) -> SavedFiles:
        from PIL.PngImagePlugin import PngInfo

        def write(handle, frames):
            info = PngInfo()
            texts = {"prompt": ctx.run.prompt} | ({"workflow": ctx.run.workflow} if ctx.run.workflow else {})
            for key, value in texts.items():
                info.add(b"comf", key.encode("latin-1") + b"\0" + json.dumps(value).encode("latin-1"), after_idat=True)
            frames[0].save(handle, format="PNG", pnginfo=info, compress_level=self.compress_level, save_all=True,
                           duration=int(1000.0 / self.fps), append_images=frames[1:])

        return SavedFiles((save_animation(ctx, self.images, self.filename_prefix, ".png", write),))
