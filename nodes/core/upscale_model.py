"""UpscaleModelLoader and ImageUpscaleWithModel: super-resolution models (ESRGAN, SwinIR, DAT,
…) recognised and built by spandrel, run in 512-pixel tiles with 32-pixel feathered overlaps as
ComfyUI runs them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine import EdgeValue, Link, ModelLoadError, Node, NodeOutput, Widget

from ..types import Image
from .spandrel_import import import_spandrel, refuse_if_torchvision_is_needed
from .tiles import tiled_scale
from .vae import ImageOut, model_files, model_path

UPSCALE_EXTENSIONS = (".safetensors", ".sft", ".pth", ".pt", ".ckpt", ".bin")
TILE, OVERLAP, SMALLEST_TILE = 512, 32, 128


def _upscale_files(vctx) -> list[str]:
    return model_files(vctx.settings, "upscale_models", UPSCALE_EXTENSIONS)


@dataclass(frozen=True)
class UpscaleModel(EdgeValue):
    """A handle: the file and where to run it. `ctx.models.get(handle)` gives loaded_upscaler's module."""

    comfy_type = "UPSCALE_MODEL"
    path: str
    device: str

    @property
    def cache_key(self):
        return ("upscale_model", self.path, self.device)

    def estimated_bytes(self) -> int:
        return Path(self.path).stat().st_size * 2  # at most: fp16 on disk, fp32 in memory

    def load(self):
        from .state_files import CheckpointFile

        spandrel = import_spandrel()
        checkpoint = CheckpointFile(self.path)
        raw = checkpoint.raw()
        state = raw if isinstance(raw, dict) else checkpoint.tensors("")
        try:
            descriptor = spandrel.ModelLoader().load_from_state_dict(state)
        except spandrel.UnsupportedModelError as exc:
            raise ModelLoadError(f"{self.path} is not an upscale model spandrel recognises") from exc
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ModelLoadError(f"{self.path} looks like an upscale model but its weights do not fit: "
                                 f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        if not isinstance(descriptor, spandrel.ImageModelDescriptor):
            raise ModelLoadError(f"{self.path} is a {descriptor.architecture.name} model, not a single-image "
                                 "upscale model (ComfyUI refuses it too)")
        refuse_if_torchvision_is_needed(descriptor.architecture)
        return loaded_upscaler(descriptor).to(self.device).eval()


def loaded_upscaler(descriptor):
    """The descriptor's network as a torch module, so the model store can size and move it;
    calling it goes through the descriptor (its padding to the architecture's size rules)."""
    import torch

    class _Loaded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = descriptor.model
            self.scale = descriptor.scale
            self.output_channels = descriptor.output_channels

        def forward(self, images):
            return descriptor(images)

    return _Loaded()


@dataclass(frozen=True)
class UpscaleModelOut(NodeOutput):
    UPSCALE_MODEL: UpscaleModel


class UpscaleModelLoader(Node):
    """Load an upscale model from `<models>/upscale_models` (ESRGAN, Real-ESRGAN, SwinIR, DAT, …)."""

    class_type = "UpscaleModelLoader"
    display_name = "Load Upscale Model"
    loads_models = True
    category = "loaders"

    model_name: str = Widget(choices=_upscale_files)

    @classmethod
    def fingerprint(cls, constants, settings):
        return settings.file_sha256(settings.model_file("upscale_models", constants["model_name"], "model_name"))

    def execute(self, ctx) -> UpscaleModelOut:
        path = model_path(ctx.settings, "upscale_models", self.model_name, "model_name")
        return UpscaleModelOut(UpscaleModel(str(path), ctx.device))


class ImageUpscaleWithModel(Node):
    """Images × the model's scale, in 512-pixel tiles overlapping by 32 (halved on out-of-memory,
    down to 128), clamped to [0, 1]."""

    class_type = "ImageUpscaleWithModel"
    display_name = "Upscale Image (using Model)"
    category = "image/upscaling"

    upscale_model: UpscaleModel = Link()
    image: Image = Link()

    def execute(self, ctx) -> ImageOut:
        import torch

        model = ctx.models.get(self.upscale_model)
        pixels = self.image.pixels.movedim(-1, -3).to(self.upscale_model.device, torch.float32)
        tile = TILE
        while True:
            try:
                with torch.inference_mode():
                    out = tiled_scale(pixels, model, tile, OVERLAP, model.scale, model.output_channels)
                break
            except torch.OutOfMemoryError:
                tile //= 2
                if tile < SMALLEST_TILE:
                    raise
        return ImageOut(Image(torch.clamp(out.movedim(-3, -1), 0.0, 1.0).float().cpu()))
