"""UNETLoader, CLIPLoader and DualCLIPLoader: a checkpoint's parts from separate files. UNet
files come in the LDM layout (ComfyUI's) or diffusers' (`diffusion_pytorch_model.safetensors`).

A bare UNet tells its family by its shapes alone (ComfyUI's rules: an ADM input of pooled + 6×256
is SDXL, pooled + 5×256 the refiner; without one, conv projections are SD1.x and linear ones
SD2.x). A text-encoder file tells its tower by depth (12 layers CLIP-L, 24 CLIP-H, 32 bigG) or,
for small test models, by whether it has a text projection.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Literal

from engine import ModelLoadError, Node, Widget

from ..core.state_files import CheckpointFile
from ..core.vae import model_files
from .families import (CLIP_G_REFINER, CLIP_G_SDXL, CLIP_H_SD2, CLIP_L_SD1, CLIP_L_SDXL, SD1, SD2, SDXL, SDXL_REFINER,
                       Family, TextEncoderSpec)
from .loaders import CHECKPOINT_EXTENSIONS, ClipOut, ModelOut
from .models import DiffusionModel, TextEncoders, TextTower

UNET_FOLDERS = ("diffusion_models", "unet")
TEXT_ENCODER_FOLDERS = ("text_encoders", "clip")
WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")
CLIP_TYPES = ("stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image")
DUAL_CLIP_TYPES = ("sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image")


def files_in(folders):
    def choices(vctx) -> list[str]:
        return sorted({name for folder in folders for name in model_files(vctx.settings, folder, CHECKPOINT_EXTENSIONS)})
    return choices


def find_model_file(settings, folders, name: str, what: str):
    for folder in folders:
        try:
            return settings.model_file(folder, name, what)
        except FileNotFoundError:
            continue
    raise ModelLoadError(f"{what} {name!r}: no such file in {' or '.join(str(settings.models_dir / f) for f in folders)}")


def files_fingerprint(folders, *inputs):
    def fingerprint(cls, constants, settings):
        return [settings.file_sha256(find_model_file(settings, folders, constants[i], i)) for i in inputs]
    return classmethod(fingerprint)


def unet_family(config: dict) -> Family:
    adm, context = config.get("projection_class_embeddings_input_dim"), config["cross_attention_dim"]
    if adm is not None:
        return SDXL_REFINER if adm - 5 * 256 == context else SDXL
    return SD2 if config["use_linear_projection"] else SD1


def unet_handle(path, device: str, weight_dtype: str = "default") -> DiffusionModel:
    from .checkpoint import sdxl_sampling, unet_config, unet_prefix

    file = CheckpointFile(path)
    layout = "ldm"
    if "conv_in.weight" in file.shapes and "input_blocks.0.0.weight" not in file.shapes:
        file, layout = DiffusersUnetView(file), "diffusers"
    prefix = "" if "input_blocks.0.0.weight" in file.shapes else unet_prefix(file.shapes)
    provisional = unet_config(file.shapes, prefix, SD2)  # head layout aside, the shapes say the family
    family = unet_family(provisional)
    config = unet_config(file.shapes, prefix, family)
    prediction, continuous, playground = family.prediction(file, prefix), None, False
    if layout == "ldm":
        prediction, continuous, playground = sdxl_sampling(file, family, prediction)
    return DiffusionModel(str(path), family.name, prefix, json.dumps(config, sort_keys=True), prediction, device,
                          "ztsnr" in file.shapes, weight_dtype=weight_dtype, layout=layout, continuous=continuous,
                          stored_edm=continuous is not None and not playground, playground=playground)


class DiffusersUnetView:
    """A diffusers-format UNet (`diffusion_pytorch_model.safetensors`) or ControlNet file seen
    under its LDM names, so the family, config and prediction type are read exactly as from a
    checkpoint."""

    def __init__(self, file: CheckpointFile, controlnet: bool = False):
        from ..core.ldm_keys import controlnet_ldm_names, unet_ldm_names

        names = file.shapes
        levels = 1 + max(int(k.split(".")[1]) for k in names if k.startswith("down_blocks."))
        per_level = len({k.split(".")[3] for k in names if k.startswith("down_blocks.0.resnets.")})

        def kinds(side: str, cross: str, plain: str) -> list[str]:
            return [cross if any(k.startswith(f"{side}.{i}.attentions.") for k in names) else plain
                    for i in range(levels)]

        layout = {"layers_per_block": per_level, "block_out_channels": [0] * levels,
                  "down_block_types": kinds("down_blocks", "CrossAttnDownBlock2D", "DownBlock2D"),
                  "up_block_types": kinds("up_blocks", "CrossAttnUpBlock2D", "UpBlock2D")}
        if controlnet:
            hint_blocks = len({k.split(".")[2] for k in names if k.startswith("controlnet_cond_embedding.blocks.")})
            ldm = controlnet_ldm_names(layout, hint_blocks)
        else:
            ldm = unet_ldm_names(layout)
        what = "ControlNet" if controlnet else "UNet"
        ordered = sorted(ldm, key=len, reverse=True)
        self.file, self.diffusers_name = file, {}
        for key in names:
            prefix = next((p for p in ordered if key.startswith(p + ".")), None)
            if prefix is None:
                raise ModelLoadError(f"{file.path.name}: a diffusers {what} with weights no SD/SDXL {what} has "
                                     f"({key})")
            self.diffusers_name[ldm[prefix] + key[len(prefix):]] = key
        self.shapes = {ours: names[theirs] for ours, theirs in self.diffusers_name.items()}

    def tensors(self, prefix: str, strip: bool = True) -> dict:
        wanted = {k: v for k, v in self.diffusers_name.items() if k.startswith(prefix)}
        return {(k[len(prefix):] if strip else k): self.file.tensors(v, strip=False)[v] for k, v in wanted.items()}


class UNETLoader(Node):
    """A diffusion model (UNet) file from `<models>/diffusion_models` (or the older `unet`)."""

    class_type = "UNETLoader"
    display_name = "Load Diffusion Model"
    category = "advanced/loaders"
    loads_models = True

    unet_name: str = Widget(choices=files_in(UNET_FOLDERS))
    weight_dtype: Literal[WEIGHT_DTYPES] = Widget("default")  # type: ignore[valid-type]

    fingerprint = files_fingerprint(UNET_FOLDERS, "unet_name")

    def execute(self, ctx) -> ModelOut:
        path = find_model_file(ctx.settings, UNET_FOLDERS, self.unet_name, "unet_name")
        return ModelOut(unet_handle(path, ctx.device, self.weight_dtype))


def text_tower(path, device: str, role: dict[str, TextEncoderSpec]) -> TextTower:
    """The tower a text-encoder file holds, with `role[kind]`'s use of it (kind: l, h or g)."""
    file = CheckpointFile(path)
    names = file.shapes
    open_clip = any(k.startswith("transformer.resblocks.") or ".transformer.resblocks." in k for k in names)
    marker = "transformer.resblocks." if open_clip else "encoder.layers."
    prefix = next((k[:k.index("token_embedding.weight") - (0 if open_clip else len("embeddings."))]
                   for k in names if k.endswith("token_embedding.weight")), None)
    if prefix is None:
        raise ModelLoadError(f"{path.name} is not a CLIP text encoder (no token_embedding weight)")
    if not open_clip and prefix.endswith("text_model."):
        prefix = prefix[:-len("text_model.")]
    layers = len({k.split(marker)[1].split(".")[0] for k in names if marker in k})
    projected = any(k.endswith("text_projection") or k.endswith("text_projection.weight") for k in names)
    kind = "g" if layers >= 31 else "h" if layers >= 23 else "l" if layers >= 12 else "g" if projected else "l"
    if kind not in role:
        raise ModelLoadError(f"{path.name} holds a CLIP-{kind.upper()} text encoder, which this loader type "
                             f"does not use here (expected {' or '.join('CLIP-' + k.upper() for k in role)})")
    spec = dataclasses.replace(role[kind], prefix=prefix, open_clip=open_clip)
    return TextTower(str(path), spec, device)


def _type_problem(supported: tuple[str, ...]):
    def check(value, vctx) -> str | None:
        if value not in supported:
            return f"type {value!r} needs a model family run-graph does not have yet; supported: {', '.join(supported)}"
        return None
    return check


def embedding_folders(ctx) -> tuple[str, ...]:
    return (str(ctx.settings.models_dir / "embeddings"),)


class CLIPLoader(Node):
    """A text encoder file; `stable_diffusion` takes CLIP-L (SD1.x), CLIP-H (SD2.x) or bigG (refiner)."""

    class_type = "CLIPLoader"
    display_name = "Load CLIP"
    category = "advanced/loaders"
    loads_models = True

    clip_name: str = Widget(choices=files_in(TEXT_ENCODER_FOLDERS))
    type: Literal[CLIP_TYPES] = Widget("stable_diffusion", check=_type_problem(("stable_diffusion",)))  # type: ignore[valid-type]
    device: Literal["default", "cpu"] = Widget("default", optional=True)

    fingerprint = files_fingerprint(TEXT_ENCODER_FOLDERS, "clip_name")

    def execute(self, ctx) -> ClipOut:
        device = "cpu" if self.device == "cpu" else ctx.device
        path = find_model_file(ctx.settings, TEXT_ENCODER_FOLDERS, self.clip_name, "clip_name")
        return ClipOut(single_text_encoder(path, device, embedding_folders(ctx)))


def single_text_encoder(path, device: str, embeddings_dirs: tuple[str, ...]) -> TextEncoders:
    """One text-encoder file as the family it serves: CLIP-L SD1.x, CLIP-H SD2.x, bigG the refiner."""
    tower = text_tower(path, device, {"l": CLIP_L_SD1, "h": CLIP_H_SD2, "g": CLIP_G_REFINER})
    family = {"l": SD1, "h": SD2, "g": SDXL_REFINER}[tower.spec.name]
    return TextEncoders(family.name, (tower,), embeddings_dirs=embeddings_dirs)


def sdxl_text_encoders(paths, device: str, embeddings_dirs: tuple[str, ...]) -> TextEncoders:
    """SDXL's two text-encoder files, CLIP-L and bigG in either order."""
    towers = [text_tower(path, device, {"l": CLIP_L_SDXL, "g": CLIP_G_SDXL}) for path in paths]
    if {t.spec.name for t in towers} != {"l", "g"}:
        raise ModelLoadError("sdxl needs one CLIP-L and one CLIP-G file; got "
                             + " and ".join("CLIP-" + t.spec.name.upper() for t in towers))
    towers.sort(key=lambda t: t.spec.name != "l")  # CLIP-L first, as SDXL concatenates them
    return TextEncoders(SDXL.name, tuple(towers), embeddings_dirs=embeddings_dirs)


class DualCLIPLoader(Node):
    """Two text encoder files; `sdxl` takes CLIP-L and bigG, in either order."""

    class_type = "DualCLIPLoader"
    display_name = "DualCLIPLoader"
    category = "advanced/loaders"
    loads_models = True

    clip_name1: str = Widget(choices=files_in(TEXT_ENCODER_FOLDERS))
    clip_name2: str = Widget(choices=files_in(TEXT_ENCODER_FOLDERS))
    type: Literal[DUAL_CLIP_TYPES] = Widget("sdxl", check=_type_problem(("sdxl",)))  # type: ignore[valid-type]
    device: Literal["default", "cpu"] = Widget("default", optional=True)

    fingerprint = files_fingerprint(TEXT_ENCODER_FOLDERS, "clip_name1", "clip_name2")

    def execute(self, ctx) -> ClipOut:
        device = "cpu" if self.device == "cpu" else ctx.device
        paths = [find_model_file(ctx.settings, TEXT_ENCODER_FOLDERS, name, f"clip_name{i}")
                 for i, name in ((1, self.clip_name1), (2, self.clip_name2))]
        return ClipOut(sdxl_text_encoders(paths, device, embedding_folders(ctx)))
