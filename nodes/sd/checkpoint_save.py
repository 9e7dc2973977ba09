"""CheckpointSave, ModelSave, VAESave and CLIPSave: models as single files in ComfyUI's layout.

The weights are written as they sample: LoRAs and merges patched in (ComfyUI saves with
`force_patch_weights`), under the original LDM names a checkpoint loader reads back
(`model.diffusion_model.`, the family's text-encoder prefixes with OpenCLIP names for SD2's and
SDXL's big towers, `first_stage_model.`). Each part is written in the dtype it is held in; the
text encoders, held in float32 for encoding, are written in the UNet's dtype. The file streams
out tensor by tensor inside the output folder, claimed under ComfyUI's numbered name.
"""
from __future__ import annotations

import json
import re
from contextlib import ExitStack
from pathlib import Path

from engine import Link, Node, SavedFiles, Widget
from engine.atomic import next_number, numbered

from ..core.image import _prefix_stays_inside
from ..core.ldm_keys import diffusers_vae_to_ldm, hf_clip_to_open_clip, to_ldm, unet_ldm_names
from ..core.state_files import CheckpointFile, write_safetensors
from ..core.vae import VAE
from .models import DiffusionModel, TextEncoders

ARCHITECTURES = {"sdxl": "stable-diffusion-xl-v1-base", "sdxl_refiner": "stable-diffusion-xl-v1-refiner"}
PREDICT_KEYS = {"eps": "epsilon", "v": "v"}


def unet_state(ctx, model: DiffusionModel, stack: ExitStack) -> dict:
    """The UNet's weights, patched for as long as `stack` is open, plus ComfyUI's marker keys
    (v_pred, ztsnr, edm_vpred.*)."""
    import torch

    from .lora import patched, unet_changes

    unet = ctx.models.get(model)
    changes = unet_changes(ctx, unet, model.loras)  # before the mark: a merge may load this same model
    change = stack.enter_context(ctx.models.modifying(model))
    stack.enter_context(patched(unet, changes, change))
    state = {"model.diffusion_model." + k: v for k, v in
             to_ldm(unet.state_dict(), unet_ldm_names(dict(unet.config))).items()}
    if model.continuous is not None and model.prediction == "v" and not model.continuous[3]:
        # ComfyUI's marker for an EDM v-prediction model, read back by checkpoint loaders
        state["edm_vpred.sigma_max"] = torch.tensor(model.continuous[1]).float()
        state["edm_vpred.sigma_min"] = torch.tensor(model.continuous[0]).float()
    elif model.prediction == "v":
        state["v_pred"] = torch.tensor([])
    if model.playground:  # ComfyUI writes no marker here, so its saved Playground models load as SDXL
        from ..sampling.latent_format import PLAYGROUND_V2_5

        state["edm_mean"] = torch.tensor(PLAYGROUND_V2_5.mean).view(1, 4, 1, 1)
        state["edm_std"] = torch.tensor(PLAYGROUND_V2_5.std).view(1, 4, 1, 1)
    if model.zero_terminal_snr:
        state["ztsnr"] = torch.tensor([])
    return state


def patched_towers(ctx, clip: TextEncoders, stack: ExitStack):
    """(checkpoint spec, tower, weights in transformers' names with `text_model.`) of each tower,
    patched for as long as `stack` is open."""
    from .lora import patched, tower_changes

    for tower in clip.towers:
        spec = next(s for s in clip.family.encoders if s.name == tower.spec.name)
        model = ctx.models.get(tower)
        changes = tower_changes(ctx, model, tower.spec, clip)
        change = stack.enter_context(ctx.models.modifying(tower))
        stack.enter_context(patched(model, changes, change))
        yield spec, tower, {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
                            for k, v in model.state_dict().items()}


def text_encoder_state(ctx, clip: TextEncoders, dtype, stack: ExitStack) -> dict:
    """Each tower under its family's checkpoint prefix, as ComfyUI's process_clip_state_dict_for_saving
    lays them out: CLIP-L in transformers' names without its projection, the OpenCLIP towers fused
    back (their projection and logit scale, which encoding does not use, copied from the source)."""
    import torch

    state = {}
    for spec, tower, weights in patched_towers(ctx, clip, stack):
        weights = {k: v.to(dtype) for k, v in weights.items()}
        if spec.open_clip:
            weights = hf_clip_to_open_clip(weights)
            if tower.spec.open_clip:  # from an OpenCLIP-named file: the parts encoding leaves out
                source = CheckpointFile(tower.path)
                for name in ("text_projection", "logit_scale"):
                    if name not in weights and tower.spec.prefix + name in source.shapes:
                        weights[name] = source.tensors(tower.spec.prefix + name, strip=False)[tower.spec.prefix + name]
        else:
            weights.pop("text_projection.weight", None)
            if clip.family_name == "sdxl":
                weights["text_model.embeddings.position_ids"] = torch.arange(77).expand((1, -1))
        state |= {spec.prefix + k: v for k, v in weights.items()}
    return state


def vae_state(ctx, vae: VAE, prefix: str) -> dict:
    return {prefix + k: v for k, v in diffusers_vae_to_ldm(ctx.models.get(vae).state_dict()).items()}


def save_safetensors(ctx, filename_prefix: str, state: dict, metadata: dict[str, str]) -> Path:
    relative = Path(filename_prefix)
    folder = ctx.output_path(str(relative.parent))
    folder.mkdir(parents=True, exist_ok=True)
    counter = next_number(folder, re.escape(relative.name), ".safetensors")
    metadata = dict(metadata, prompt=json.dumps(ctx.run.prompt))
    if ctx.run.workflow is not None:
        metadata["workflow"] = json.dumps(ctx.run.workflow)
    if "modelspec.title" in metadata:
        metadata["modelspec.title"] = f"{relative.name} {counter}"
    return ctx.write_new_file(folder, numbered(relative.name, ".safetensors", counter),
                              lambda handle: write_safetensors(handle, state, metadata))


def model_metadata(model: DiffusionModel) -> dict[str, str]:
    metadata = {}
    if model.family_name in ARCHITECTURES:
        metadata = {"modelspec.architecture": ARCHITECTURES[model.family_name], "modelspec.sai_model_spec": "1.0.0",
                    "modelspec.implementation": "sgm", "modelspec.title": ""}
    if model.prediction in PREDICT_KEYS and model.continuous is None:
        metadata["modelspec.predict_key"] = PREDICT_KEYS[model.prediction]
    return metadata


class CheckpointSave(Node):
    """MODEL, CLIP and VAE as one checkpoint in `<output>/checkpoints`, LoRAs and merges baked in."""

    class_type = "CheckpointSave"
    display_name = "Save Checkpoint"
    category = "advanced/model_merging"
    is_output_node = True

    model: DiffusionModel = Link()
    clip: TextEncoders = Link()
    vae: VAE = Link()
    filename_prefix: str = Widget("checkpoints/ComfyUI", check=_prefix_stays_inside)

    def execute(self, ctx) -> SavedFiles:
        with ExitStack() as stack:
            state = unet_state(ctx, self.model, stack)
            dtype = next(v.dtype for k, v in state.items() if k.startswith("model.diffusion_model."))
            state |= text_encoder_state(ctx, self.clip, dtype, stack)
            state |= vae_state(ctx, self.vae, "first_stage_model.")
            path = save_safetensors(ctx, self.filename_prefix, state, model_metadata(self.model))
        return SavedFiles((str(path),))


class ModelSave(Node):
    """The MODEL alone (a UNet file in the checkpoint's names), LoRAs and merges baked in."""

    class_type = "ModelSave"
    display_name = "ModelSave"
    category = "advanced/model_merging"
    is_output_node = True

    model: DiffusionModel = Link()
    filename_prefix: str = Widget("diffusion_models/ComfyUI", check=_prefix_stays_inside)

    def execute(self, ctx) -> SavedFiles:
        with ExitStack() as stack:
            path = save_safetensors(ctx, self.filename_prefix, unet_state(ctx, self.model, stack),
                                    model_metadata(self.model))
        return SavedFiles((str(path),))


class VAESave(Node):
    """The VAE as a single file in LDM names (what VAELoader reads)."""

    class_type = "VAESave"
    display_name = "VAESave"
    category = "advanced/model_merging"
    is_output_node = True

    vae: VAE = Link()
    filename_prefix: str = Widget("vae/ComfyUI_vae", check=_prefix_stays_inside)

    def execute(self, ctx) -> SavedFiles:
        return SavedFiles((str(save_safetensors(ctx, self.filename_prefix, vae_state(ctx, self.vae, ""), {})),))


def stored_dtype(tower):
    """The floating dtype the tower's source file stores it in (read off its final norm)."""
    source = CheckpointFile(tower.path)
    name = next(k for k in source.shapes if k.startswith(tower.spec.prefix)
                and k.endswith(("final_layer_norm.weight", "ln_final.weight")))
    return source.tensors(name, strip=False)[name].dtype


def source_projection(tower) -> dict:
    """The text projection the source file holds for a tower encoding leaves it out of (SD2's
    CLIP-H), in transformers' orientation."""
    source = CheckpointFile(tower.path)
    name = tower.spec.prefix + "text_projection"
    if tower.spec.open_clip and name in source.shapes:
        return {"text_projection.weight": source.tensors(name, strip=False)[name].T.contiguous()}
    if name + ".weight" in source.shapes:
        return {"text_projection.weight": source.tensors(name + ".weight", strip=False)[name + ".weight"]}
    return {}


class CLIPSave(Node):
    """Each text encoder of a CLIP as its own file in transformers' names, LoRAs and merges baked
    in, in the dtype its source stores it: `<prefix>_clip_l_00001_.safetensors` (and `_clip_g`,
    `_clip_h`), which CLIPLoader and DualCLIPLoader read back."""

    class_type = "CLIPSave"
    display_name = "CLIPSave"
    category = "advanced/model_merging"
    is_output_node = True

    clip: TextEncoders = Link()
    filename_prefix: str = Widget("clip/ComfyUI", check=_prefix_stays_inside)

    def execute(self, ctx) -> SavedFiles:
        paths = []
        with ExitStack() as stack:
            for spec, tower, weights in patched_towers(ctx, self.clip, stack):
                if "text_projection.weight" not in weights:
                    weights |= source_projection(tower)
                dtype = stored_dtype(tower)
                state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
                paths.append(save_safetensors(ctx, f"{self.filename_prefix}_clip_{spec.name}", state,
                                              {"format": "pt"}))
        return SavedFiles(tuple(str(p) for p in paths))
