"""SaveImage, PreviewImage and LoadImage: images to and from PNG files, with ComfyUI metadata."""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from engine import Link, Node, NodeOutput, SavedFiles, Widget
from engine.atomic import NUMBERED, next_number, numbered
from engine.settings import UnsafePathError

from ..types import Image, Mask

BATCH_NUM = "%batch_num%"


def _prefix_stays_inside(prefix: str, vctx) -> str | None:
    try:
        vctx.settings.output_path(prefix or "x", "filename_prefix")
    except UnsafePathError as exc:
        return str(exc)
    return None


def _expand_prefix(prefix: str, width: int, height: int) -> str:
    # The backend's substitutions (folder_paths.get_save_image_path); %date:...% is a frontend one.
    now = time.localtime()
    for key, value in {"width": width, "height": height, "year": now.tm_year,
                       "month": f"{now.tm_mon:02d}", "day": f"{now.tm_mday:02d}",
                       "hour": f"{now.tm_hour:02d}", "minute": f"{now.tm_min:02d}",
                       "second": f"{now.tm_sec:02d}"}.items():
        prefix = prefix.replace(f"%{key}%", str(value))
    return prefix


def save_images(ctx, images: Image, prefix: str, compress_level: int) -> tuple[str, ...]:
    """Write each image as `<prefix>_<counter:05>_.png`, the counter continuing after the highest
    existing one, with `prompt` and `workflow` text chunks so ComfyUI can load the file back.
    Each name is claimed atomically: a name another process takes meanwhile is skipped."""
    import numpy as np
    from PIL import Image as PILImage
    from PIL.PngImagePlugin import PngInfo

    pixels = images.pixels
    batch, height, width = pixels.shape[0], pixels.shape[1], pixels.shape[2]
    relative = Path(_expand_prefix(prefix, width, height))
    folder = ctx.output_path(str(relative.parent))
    stem = relative.name
    folder.mkdir(parents=True, exist_ok=True)
    # The counter continues after the highest of the prefix's files, `%batch_num%` matching any index.
    counter = next_number(folder, re.escape(stem).replace(re.escape(BATCH_NUM), r"\d+"), ".png")

    info = PngInfo()
    info.add_text("prompt", json.dumps(ctx.run.prompt))
    if ctx.run.workflow is not None:
        info.add_text("workflow", json.dumps(ctx.run.workflow))
    info.add_text("run-graph", json.dumps(ctx.run.provenance_record(), sort_keys=True))

    # ComfyUI truncates (astype), it does not round: keep that so images match byte for byte.
    arrays = np.clip(pixels.float().cpu().numpy() * 255.0, 0, 255).astype(np.uint8)
    written = []
    for index in range(batch):
        name = stem.replace(BATCH_NUM, str(index))
        picture = PILImage.fromarray(arrays[index])
        path = ctx.write_new_file(folder, numbered(name, ".png", counter), lambda fh, p=picture: p.save(
            fh, format="PNG", pnginfo=info, compress_level=compress_level))
        written.append(str(path))
        counter = int(NUMBERED.match(path.name)["number"]) + 1
    return tuple(written)


class SaveImage(Node):
    """Save images as PNG files in the output folder."""

    class_type = "SaveImage"
    display_name = "Save Image"
    category = "image"
    is_output_node = True

    images: Image = Link()
    filename_prefix: str = Widget("ComfyUI", check=_prefix_stays_inside)

    def execute(self, ctx) -> SavedFiles:
        return SavedFiles(save_images(ctx, self.images, self.filename_prefix, compress_level=4))


class SaveImageWebsocket(Node):
    """Send each image as a PNG to the client that queued the prompt, over the server's WebSocket
    (binary PREVIEW_IMAGE frames, as ComfyUI's example node does); nothing is written to disk, and
    it runs every time."""

    class_type = "SaveImageWebsocket"
    display_name = "SaveImageWebsocket"
    category = "api node/image"
    is_output_node = True
    is_idempotent = False

    images: Image = Link()

    def execute(self, ctx) -> SavedFiles:
        import io

        import numpy as np
        from PIL import Image as PILImage

        pixels = np.clip(self.images.pixels.float().cpu().numpy() * 255.0, 0, 255).astype(np.uint8)
        for step, array in enumerate(pixels):
            ctx.progress(step, len(pixels))
            encoded = io.BytesIO()
            PILImage.fromarray(array).save(encoded, format="PNG", compress_level=1)  # ComfyUI's preview settings
            ctx.run.events("preview_image", {"node_id": ctx.node_id, "png": encoded.getvalue()})
        return SavedFiles(())


class PreviewImage(Node):
    """Preview images. Headless there is no screen, so they are written under `<output>/previews`
    (ComfyUI writes them to its temp folder) and reported like saved images."""

    class_type = "PreviewImage"
    display_name = "Preview Image"
    category = "image"
    is_output_node = True

    images: Image = Link()

    def execute(self, ctx) -> SavedFiles:
        return SavedFiles(save_images(ctx, self.images, "previews/ComfyUI_temp", compress_level=1))


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".mpo")


def input_images(vctx) -> list[str]:
    """The images in the input folder, as the web UI's LoadImage list offers them."""
    folder = vctx.settings.input_dir
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def in_input_folder(input_name: str, folder: str = "input"):
    """A widget check: the value names a file inside the input folder, or the one its ` [output]`
    / ` [temp]` annotation names (the problem, or None)."""
    def check(name: str, vctx) -> str | None:
        try:
            vctx.settings.annotated_file(name, input_name, folder)
        except (UnsafePathError, FileNotFoundError) as exc:
            return str(exc)
        return None
    return check


@dataclass(frozen=True)
class ImageMaskOut(NodeOutput):
    IMAGE: Image
    MASK: Mask


class LoadImage(Node):
    """Load an image from the input folder; the mask is 1 - alpha (or 64x64 zeros)."""

    class_type = "LoadImage"
    display_name = "Load Image"
    category = "image"

    image: str = Widget(check=in_input_folder("image"), ui={"image_upload": True}, ui_choices=input_images)
    image_folder: ClassVar[str] = "input"  # where a name without annotation is

    @classmethod
    def fingerprint(cls, constants, settings):
        # The file content is part of the cache key: same name, new pixels → re-run.
        return settings.file_sha256(settings.annotated_file(constants["image"], "image", cls.image_folder))

    def execute(self, ctx) -> ImageMaskOut:
        import numpy as np
        import torch
        from PIL import Image as PILImage, ImageOps, ImageSequence

        path = ctx.settings.annotated_file(self.image, "image", self.image_folder)
        frames, masks = [], []
        with PILImage.open(path) as img:
            for frame in ImageSequence.Iterator(img):
                frame = ImageOps.exif_transpose(frame)
                if frame.mode == "I":
                    frame = frame.point(lambda v: v * (1 / 255))
                rgb = np.asarray(frame.convert("RGB"), dtype=np.float32) / 255.0
                if frames and rgb.shape != frames[0].shape:
                    continue
                frames.append(rgb)
                if "A" in frame.getbands() or (frame.mode == "P" and "transparency" in frame.info):
                    alpha = np.asarray(frame.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
                    masks.append(1.0 - alpha)
                else:
                    masks.append(np.zeros((64, 64), dtype=np.float32))
                if img.format == "MPO":
                    break
        pixels = torch.from_numpy(np.stack(frames))
        return ImageMaskOut(Image(pixels), Mask(torch.from_numpy(np.stack(masks))))


def output_images(vctx) -> list[str]:
    """The images in the output folder, newest first, as the web UI offers them (` [output]`)."""
    folder = vctx.settings.output_dir
    if not folder.is_dir():
        return []
    found = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [f"{p.relative_to(folder).as_posix()} [output]" for p in found]


class LoadImageOutput(LoadImage):
    """Load an image from the output folder (`name [output]`, or a plain name there)."""

    class_type = "LoadImageOutput"
    display_name = "Load Image (from Outputs)"
    category = "image"

    image: str = Widget(check=in_input_folder("image", "output"), ui={"image_upload": True,
                                                                     "image_folder": "output"},
                        ui_choices=output_images)
    image_folder = "output"
