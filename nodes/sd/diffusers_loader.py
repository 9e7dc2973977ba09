"""DiffusersLoader: an SD1.x, SD2.x or SDXL pipeline as diffusers saves it (`save_pretrained`),
from a folder under `<models>/diffusers` that holds a model_index.json.

As in ComfyUI, the UNet, text encoders and VAE come from their subfolders, a `.fp16` file before
the full one; the scheduler's config is not read: the prediction type is told by the weights, as
for any UNet file. Unlike ComfyUI, a pipeline without `text_encoder` (the SDXL refiner's) loads.
"""
from __future__ import annotations

import json
from pathlib import Path

from engine import ModelLoadError, Node, Widget

from ..core.vae import VAE, model_path, walk_folders
from .loaders import CheckpointOut
from .part_loaders import embedding_folders, sdxl_text_encoders, single_text_encoder, unet_handle

DIFFUSERS_FOLDER = "diffusers"
_WEIGHTS = ("diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.fp16.bin", "diffusion_pytorch_model.bin")
_TEXT_WEIGHTS = ("model.fp16.safetensors", "model.safetensors", "pytorch_model.fp16.bin", "pytorch_model.bin")
PART_FILES = {"unet": _WEIGHTS, "vae": _WEIGHTS, "text_encoder": _TEXT_WEIGHTS, "text_encoder_2": _TEXT_WEIGHTS}


def pipeline_folders(vctx) -> list[str]:
    """The folders under `<models>/diffusers` that hold a model_index.json, relative and
    '/'-separated, linked folders followed."""
    root = vctx.settings.models_dir / DIFFUSERS_FOLDER
    return sorted(here.relative_to(root).as_posix() for here, files in walk_folders(root)
                  if "model_index.json" in files)


def pipeline_parts(settings, name: str) -> dict[str, Path]:
    """The weight file of each part the pipeline folder has (unet and vae are required)."""
    index = model_path(settings, DIFFUSERS_FOLDER, f"{name}/model_index.json", "model_path")
    try:
        pipeline = json.loads(index.read_text()).get("_class_name", "")
    except (ValueError, AttributeError) as exc:
        raise ModelLoadError(f"{index}: not a diffusers model_index.json ({exc})") from exc
    if pipeline.startswith("Kolors"):
        raise ModelLoadError(f"{name} is a Kolors pipeline: load it with the Kolors nodes "
                             "(DownloadAndLoadKolorsModel, or MZ_KolorsUNETLoader with a ChatGLM3 loader)")
    parts = {}
    for part, names in PART_FILES.items():
        found = next((index.parent / part / n for n in names if (index.parent / part / n).is_file()), None)
        if found is not None:
            parts[part] = found
        elif part in ("unet", "vae"):
            raise ModelLoadError(f"{name}: no {part} weights (expected {part}/{names[1]} or {part}/{names[0]})")
    if not {"text_encoder", "text_encoder_2"} & parts.keys():
        raise ModelLoadError(f"{name}: no text encoder weights (expected text_encoder/{_TEXT_WEIGHTS[1]})")
    return parts


class DiffusersLoader(Node):
    """A diffusers pipeline folder: its UNet, CLIP and VAE, as a checkpoint loader gives them."""

    class_type = "DiffusersLoader"
    display_name = "DiffusersLoader"
    category = "advanced/loaders/deprecated"
    loads_models = True

    model_path: str = Widget(choices=pipeline_folders)

    @classmethod
    def fingerprint(cls, constants, settings):
        return [settings.file_sha256(path) for path in pipeline_parts(settings, constants["model_path"]).values()]

    def execute(self, ctx) -> CheckpointOut:
        parts = pipeline_parts(ctx.settings, self.model_path)
        model = unet_handle(parts["unet"], ctx.device)
        encoders = [parts[p] for p in ("text_encoder", "text_encoder_2") if p in parts]
        if len(encoders) == 2:
            clip = sdxl_text_encoders(encoders, ctx.device, embedding_folders(ctx))
        else:
            clip = single_text_encoder(encoders[0], ctx.device, embedding_folders(ctx))
        if clip.family_name != model.family_name:
            raise ModelLoadError(f"{self.model_path}: its text encoders are {clip.family_name}'s but its UNet is "
                                 f"{model.family_name}'s")
        return CheckpointOut(model, clip, VAE(str(parts["vae"]), ctx.device))
