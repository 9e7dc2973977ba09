"""Kolors LoRAs: DiffSynth-Studio checkpoints, peft/diffusers and kohya files, applied exactly.

The cached base UNet never changes: `lora_applied` merges W + scale · B @ A into the adapted
Linears for the duration of one sampling call and then copies the saved weights back, so a run
without the LoRA afterwards is bit-identical to one in a fresh process (merging and then
subtracting would drift by rounding).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import Link, ModelLoadError, Node, Widget
from engine.settings import Settings, UnsafePathError

from ..core.ldm_keys import unet_ldm_names
from ..core.vae import read_state_dict
from .loaders import KolorsModelOut
from .models import KolorsModel, LoraSpec


# DiffSynth's SDXLUNet block index -> diffusers prefix (kolors-nodes.md §6.3).
DIFFSYNTH_BLOCKS = {
    7: "down_blocks.1.attentions.0", 10: "down_blocks.1.attentions.1",
    15: "down_blocks.2.attentions.0", 18: "down_blocks.2.attentions.1", 21: "mid_block.attentions.0",
    25: "up_blocks.0.attentions.0", 28: "up_blocks.0.attentions.1", 31: "up_blocks.0.attentions.2",
    35: "up_blocks.1.attentions.0", 38: "up_blocks.1.attentions.1", 41: "up_blocks.1.attentions.2",
}
_DIFFSYNTH_KEY = re.compile(r"^blocks\.(\d+)\.(transformer_blocks\..+)\.lora_([AB])\.default\.weight$")
_PEFT_KEY = re.compile(r"^(?:base_model\.model\.|unet\.)?(.+)\.lora_([AB])(?:\.default)?\.weight$")
_KOHYA_KEY = re.compile(r"^(lora_(?:unet|te\d?)_\w+)\.(?:(lora_down|lora_up)\.weight|(alpha))$")
_PART = {"A": "down", "B": "up", "lora_down": "down", "lora_up": "up"}


@dataclass
class LoraLayer:
    """One adapted Linear: W' = W + scale · up @ down."""

    down: Any = None  # A, [rank, in]
    up: Any = None  # B, [out, rank]
    alpha: float | None = None  # kohya files store the training alpha; the others do not
    key: str = ""  # the down half's key in the file, for error messages

    @property
    def rank(self) -> int:
        return self.down.shape[0]


def _parse_key(key: str) -> tuple[str, str] | None:
    """(layer name, part) for a LoRA key: a diffusers module name for DiffSynth and peft files, the
    flat `lora_unet_…` name for kohya files (resolved against the UNet later)."""
    if (m := _DIFFSYNTH_KEY.match(key)) and int(m.group(1)) in DIFFSYNTH_BLOCKS:
        inner = re.sub(r"\.to_out$", ".to_out.0", m.group(2))  # DiffSynth's to_out is a bare Linear
        return f"{DIFFSYNTH_BLOCKS[int(m.group(1))]}.{inner}", _PART[m.group(3)]
    if m := _KOHYA_KEY.match(key):
        return m.group(1), _PART.get(m.group(2), "alpha")
    if (m := _PEFT_KEY.match(key)) and not key.startswith("blocks."):
        return m.group(1), _PART[m.group(2)]
    return None


def read_lora(path: Path) -> dict[str, LoraLayer]:
    """The file's layers, its format told by the keys. Raises ModelLoadError listing the keys that
    follow no known scheme and the layers that lack half of their pair.

    The LoRA node checks a file and every sampler call applies it: the last two files read are
    kept (by size and mtime, so a rewritten file is read again) rather than read from disk each time."""
    stat = Path(path).stat()
    return _read_lora_version(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _read_lora_version(path: str, size: int, mtime_ns: int) -> dict[str, LoraLayer]:
    layers: dict[str, LoraLayer] = {}
    unknown = []
    for key, tensor in read_state_dict(Path(path)).items():
        if (parsed := _parse_key(key)) is None:
            unknown.append(key)
            continue
        name, part = parsed
        layer = layers.setdefault(name, LoraLayer())
        setattr(layer, part, float(tensor) if part == "alpha" else tensor)
        layer.key = key if part == "down" else layer.key
    incomplete = [name for name, layer in layers.items() if layer.down is None or layer.up is None]
    if unknown or incomplete or not layers:
        problems = [f"unmatched keys: {', '.join(unknown[:5])}"] if unknown else []
        problems += [f"layers without both halves: {', '.join(incomplete[:5])}"] if incomplete else []
        raise ModelLoadError(f"{path}: not a LoRA this engine reads (DiffSynth .ckpt, peft/diffusers or kohya "
                             f"safetensors); {'; '.join(problems) or 'no LoRA keys at all'}")
    return layers


def _flat(name: str) -> str:
    return "lora_unet_" + name.replace(".", "_")


def _sgm_prefixes(unet) -> dict[str, str]:
    """kohya names for SDXL follow the original (SGM) UNet: `input_blocks_4_1` is diffusers'
    `down_blocks.1.attentions.0`. {diffusers attention prefix: SGM flat prefix}."""
    names = unet_ldm_names(dict(unet.config))
    return {ours: theirs.replace(".", "_") for ours, theirs in names.items() if ".attentions." in ours}


def linear_names(unet) -> dict[str, str]:
    """Every name a LoRA file may give a Linear of `unet` (diffusers, kohya flat, kohya SGM) ->
    its module name."""
    import torch

    sgm = _sgm_prefixes(unet)
    names = {}
    for name, module in unet.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        names[name] = names[_flat(name)] = name
        for prefix, sgm_prefix in sgm.items():
            if name.startswith(prefix + "."):
                names["lora_unet_" + sgm_prefix + "_" + name[len(prefix) + 1:].replace(".", "_")] = name
    return names


def scaled_layers(unet, spec: LoraSpec) -> list[tuple[str, LoraLayer, float]]:
    """(module name, layer, scale) for every layer of the LoRA, all checked against the UNet's
    Linears before any weight changes. scale = strength · alpha / rank, where alpha is the node's
    (LoadKolorsLoRA) or else the file's, or else the rank."""
    layers = read_lora(Path(spec.path))
    names = linear_names(unet)
    matched, unmatched = [], []
    for key, layer in layers.items():
        name = names.get(key)
        weight = unet.get_submodule(name).weight if name else None
        if weight is None or layer.up.shape[1] != layer.rank \
                or (layer.up.shape[0], layer.down.shape[1]) != tuple(weight.shape):
            unmatched.append(layer.key)
            continue
        alpha = spec.alpha if spec.alpha is not None else layer.alpha if layer.alpha is not None else layer.rank
        matched.append((name, layer, spec.strength * alpha / layer.rank))
    if unmatched:
        raise ModelLoadError(f"{spec.path} does not fit this UNet (another architecture?); "
                             f"{len(unmatched)} of {len(layers)} adapted layers match no Linear of the same shape: "
                             f"{', '.join(sorted(unmatched)[:5])}")
    return matched


@contextmanager
def lora_applied(unet, loras: tuple[LoraSpec, ...], change: Any = None):
    """Merge the LoRAs into `unet` for the block's duration; restore the saved weights after.
    `change` (ModelStore.modifying's) is told once every weight is back; an interrupt before
    that leaves the model marked, and the store reloads it."""
    import torch

    saved: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for spec in loras:
                for name, layer, scale in scaled_layers(unet, spec):
                    weight = unet.get_submodule(name).weight
                    saved.setdefault(name, weight.detach().clone())
                    # fp32 on the weight's device: exact enough for bf16/fp16 bases, fast on GPUs
                    up, down = (t.to(weight.device, torch.float32) for t in (layer.up, layer.down))
                    weight.copy_((weight.float() + scale * (up @ down)).to(weight.dtype))
        yield unet
    finally:
        restore_weights(unet, saved)
        if change is not None:
            change.undone()


def restore_weights(unet, saved: dict) -> None:
    import torch

    with torch.no_grad():
        for name, original in saved.items():
            unet.get_submodule(name).weight.copy_(original)


def resolve_lora_path(lora_path: str, settings: Settings) -> Path:
    """A name under <models>/loras, or an absolute path; a path from another machine (Windows or
    POSIX) that does not exist here falls back to the file of the same name in <models>/loras."""
    return settings.model_file("loras", lora_path, "LoRA")


def _check_lora_path(value: str, vctx) -> str | None:
    try:
        resolve_lora_path(value, vctx.settings)
    except (UnsafePathError, FileNotFoundError) as exc:
        return str(exc)
    return None


def _lora_fingerprint(constants, settings, key):
    return settings.file_sha256(resolve_lora_path(constants[key], settings))


def _with_lora(ctx, model: KolorsModel, spec: LoraSpec) -> KolorsModelOut:
    # Check every layer against the base UNet here, so that an error names this node. The base
    # loads once into the store; the sampler that follows needs it anyway.
    scaled_layers(ctx.models.get(model), spec)
    return KolorsModelOut(dataclasses.replace(model, loras=model.loras + (spec,)))


class LoadKolorsLoRA(Node):
    """Add a LoRA to a Kolors model (Datawhale's node; `lora_alpha` is peft's alpha, scale alpha/r,
    and it replaces any alpha stored in the file)."""

    class_type = "LoadKolorsLoRA"
    display_name = "Load Kolors LoRA"
    loads_models = True
    category = "KwaiKolorsWrapper"

    kolors_model: KolorsModel = Link()
    lora_path: str = Widget("", check=_check_lora_path)
    lora_alpha: float = Widget(2.0, ge=0.0, le=4.0, step=0.01)

    @classmethod
    def fingerprint(cls, constants, settings):
        return _lora_fingerprint(constants, settings, "lora_path")

    def execute(self, ctx) -> KolorsModelOut:
        path = resolve_lora_path(self.lora_path, ctx.settings)
        return _with_lora(ctx, self.kolors_model, LoraSpec(str(path), alpha=self.lora_alpha))


class KolorsLoraLoaderModelOnly(Node):
    """ComfyUI's LoraLoaderModelOnly for Kolors: a strength on the file's own scale (its stored
    alpha / rank, or 1 when the file stores none, as ComfyUI reads such files)."""

    class_type = "KolorsLoraLoaderModelOnly"
    display_name = "Kolors LoRA (strength)"
    loads_models = True
    category = "KwaiKolorsWrapper"

    kolors_model: KolorsModel = Link()
    lora_name: str = Widget("", check=_check_lora_path)
    strength_model: float = Widget(1.0, ge=-100.0, le=100.0, step=0.01)

    @classmethod
    def fingerprint(cls, constants, settings):
        return _lora_fingerprint(constants, settings, "lora_name")

    def execute(self, ctx) -> KolorsModelOut:
        path = resolve_lora_path(self.lora_name, ctx.settings)
        return _with_lora(ctx, self.kolors_model, LoraSpec(str(path), strength=self.strength_model))
