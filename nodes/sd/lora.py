"""LoraLoader's maths for SD/SDXL: kohya LoRA and LoCon, LyCORIS LoHa and LoKr, DoRA magnitudes
on any of them, full diffs, on the UNet and the text encoders, under every name ComfyUI maps.

Patches are computed in float32 on a copy of the original weight, rounded once to the model's
dtype, and undone by copying the saved originals back, so the cached models stay bit-exact.
Keys ComfyUI does not map (modern peft UNet names, `base_model.model.…`) are skipped with a
warning, as ComfyUI skips them: applying them would give a different image from ComfyUI's.
"""
from __future__ import annotations

import functools
import logging
import re
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import ModelLoadError

from ..core.ldm_keys import unet_ldm_names
from ..core.state_files import CheckpointFile
from .models import LoraPatch, ScalePatch

log = logging.getLogger(__name__)

# ComfyUI's suffixes per adapter part; `x` is the prefix a key map resolves.
_SUFFIXES = {
    ".lora_up.weight": "up", ".lora_down.weight": "down", ".lora_mid.weight": "mid", ".alpha": "alpha",
    "_lora.up.weight": "up", "_lora.down.weight": "down",
    ".lora_B.weight": "up", ".lora_A.weight": "down", ".lora.up.weight": "up", ".lora.down.weight": "down",
    ".lora_linear_layer.up.weight": "up", ".lora_linear_layer.down.weight": "down",
    ".hada_w1_a": "hada_w1_a", ".hada_w1_b": "hada_w1_b", ".hada_w2_a": "hada_w2_a", ".hada_w2_b": "hada_w2_b",
    ".hada_t1": "hada_t1", ".hada_t2": "hada_t2",
    ".lokr_w1": "lokr_w1", ".lokr_w2": "lokr_w2", ".lokr_w1_a": "lokr_w1_a", ".lokr_w1_b": "lokr_w1_b",
    ".lokr_w2_a": "lokr_w2_a", ".lokr_w2_b": "lokr_w2_b", ".lokr_t2": "lokr_t2",
    ".diff": "diff", ".diff_b": "diff_b", ".dora_scale": "dora_scale",
}
_SUFFIX_PATTERN = re.compile("(" + "|".join(re.escape(s) for s in sorted(_SUFFIXES, key=len, reverse=True)) + ")$")
_CLIP_PARTS = {"mlp.fc1": "mlp_fc1", "mlp.fc2": "mlp_fc2", "self_attn.k_proj": "self_attn_k_proj",
               "self_attn.q_proj": "self_attn_q_proj", "self_attn.v_proj": "self_attn_v_proj",
               "self_attn.out_proj": "self_attn_out_proj"}


@dataclass
class Adapter:
    """The parts a file holds for one weight."""

    parts: dict[str, Any] = field(default_factory=dict)

    def delta(self, shape):
        """ΔW in float32 (strength not applied), shaped like the weight."""
        import torch

        p = {k: v.float() if hasattr(v, "float") else v for k, v in self.parts.items()}
        if "diff" in p:
            return p["diff"].reshape(shape)
        alpha = float(p["alpha"]) if "alpha" in p else None
        if "up" in p:
            down = p["down"]
            if "mid" in p:  # Tucker: fold the core into the down projection
                down = torch.einsum("jc,ijkl->ickl", down.flatten(1), p["mid"])
            scale = alpha / down.shape[0] if alpha is not None else 1.0
            return (p["up"].flatten(1) @ down.flatten(1)).reshape(shape) * scale
        if "hada_w1_a" in p:
            rank = p["hada_w1_b"].shape[0]
            scale = alpha / rank if alpha is not None else 1.0
            if "hada_t1" in p:
                m1 = torch.einsum("ijkl,jr,ip->prkl", p["hada_t1"], p["hada_w1_b"], p["hada_w1_a"])
                m2 = torch.einsum("ijkl,jr,ip->prkl", p["hada_t2"], p["hada_w2_b"], p["hada_w2_a"])
            else:
                m1, m2 = p["hada_w1_a"] @ p["hada_w1_b"], p["hada_w2_a"] @ p["hada_w2_b"]
            return (m1 * m2).reshape(shape) * scale
        if "lokr_w1" in p or "lokr_w1_a" in p:
            w1 = p.get("lokr_w1")
            dim = None
            if w1 is None:
                w1, dim = p["lokr_w1_a"] @ p["lokr_w1_b"], p["lokr_w1_b"].shape[0]
            w2 = p.get("lokr_w2")
            if w2 is None:
                dim = p["lokr_w2_b"].shape[0]
                if "lokr_t2" in p:
                    w2 = torch.einsum("ijkl,ip,jr->prkl", p["lokr_t2"], p["lokr_w2_a"], p["lokr_w2_b"])
                else:
                    w2 = p["lokr_w2_a"] @ p["lokr_w2_b"]
            if w2.ndim == 4:
                w1 = w1[:, :, None, None]
            scale = alpha / dim if alpha is not None and dim else 1.0
            return torch.kron(w1, w2).reshape(shape) * scale
        raise ModelLoadError(f"unsupported LoRA layer with parts {sorted(p)}")


    def applied(self, weight, strength: float):
        """The float32 weight after this adapter at `strength`: W + s·ΔW, or with DoRA's
        magnitude (`dora_scale`) ComfyUI's weight decomposition."""
        delta = self.delta(weight.shape).to(weight.device)
        if "dora_scale" not in self.parts:
            return weight + strength * delta
        return _decomposed(weight, delta, self.parts["dora_scale"].float().to(weight.device), strength)


def _decomposed(weight, delta, magnitude, strength: float):
    """DoRA: W' = m · (W + ΔW) / ‖·‖, blended in by the strength. The norm runs per output row
    when `m` is per output row, per input column otherwise; ComfyUI takes the row norm of the
    *unpatched* W (and so do we: the images must agree), the column norm of W + ΔW."""
    import torch

    combined = weight + delta
    if magnitude.shape[0] == combined.shape[0]:
        rows = weight.shape[0]
        norm = weight.reshape(rows, -1).norm(dim=1, keepdim=True).reshape(rows, *[1] * (weight.dim() - 1))
    else:
        columns = combined.shape[1]
        norm = combined.transpose(0, 1).reshape(columns, -1).norm(dim=1, keepdim=True)
        norm = norm.reshape(columns, *[1] * (combined.dim() - 1)).transpose(0, 1)
    combined = combined * (magnitude / (norm + torch.finfo(weight.dtype).eps))
    return combined if strength == 1.0 else weight + strength * (combined - weight)


def read_adapters(path: str) -> dict[str, Adapter]:
    stat = Path(path).stat()
    return _read(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read(path: str, size: int, mtime_ns: int) -> dict[str, Adapter]:
    adapters: dict[str, Adapter] = {}
    for key, tensor in CheckpointFile(path).tensors("").items():
        if (m := _SUFFIX_PATTERN.search(key)) is None:
            continue
        adapters.setdefault(key[:m.start()], Adapter()).parts[_SUFFIXES[m.group(1)]] = tensor
    if not adapters:
        raise ModelLoadError(f"{Path(path).name} holds no LoRA weights (no lora_up/lora_down, lora_A/lora_B, "
                             "hada_*, lokr_* or diff keys)")
    return adapters


def unet_key_map(unet) -> dict[str, str]:
    """Every LoRA prefix ComfyUI resolves for this UNet -> the diffusers module name. Built once
    per loaded model (a walk over its modules), not on every sampling call."""
    if (known := _KEY_MAPS.get(unet)) is None:
        known = _KEY_MAPS[unet] = _unet_key_map(unet)
    return known


# loaded model -> its key map; an entry goes when the model store drops the model
_KEY_MAPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _unet_key_map(unet) -> dict[str, str]:
    import torch

    names = unet_ldm_names(dict(unet.config))
    ordered = sorted(names, key=len, reverse=True)
    out = {}
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    for module_name, module in unet.named_modules():
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, *norms)):
            continue
        prefix = next((p for p in ordered if module_name == p or module_name.startswith(p + ".")), None)
        ldm = names[prefix] + module_name[len(prefix):] if prefix is not None else None
        if ldm is not None:
            out["diffusion_model." + ldm] = module_name  # ComfyUI's generic names reach every weight
        if isinstance(module, norms):  # only full diffs (`.diff`) touch a norm
            continue
        if ldm is not None:
            out["lora_unet_" + ldm.replace(".", "_")] = module_name
        flat = module_name.replace(".", "_")
        out["lora_unet_" + flat] = out["lycoris_" + flat] = module_name
        processor = module_name.replace(".to_", ".processor.to_")
        if processor.endswith(".to_out.0"):
            processor = processor[:-2]
        out[processor] = out["unet." + processor] = module_name
    return out


def clip_key_map(model, tower: str, family_name: str) -> dict[str, str]:
    """kohya (`lora_te_`, `lora_te1_`, `lora_te2_`), diffusers (`text_encoder[_2].`) and ComfyUI's
    generic (`text_encoders.clip_<tower>.transformer.`) names, built once per loaded tower."""
    by_role = _KEY_MAPS.setdefault(model, {})  # one tower file can serve SD1 and SDXL graphs
    if (known := by_role.get((tower, family_name))) is None:
        known = by_role[(tower, family_name)] = _clip_key_map(model, tower, family_name)
    return known


def _clip_key_map(model, tower: str, family_name: str) -> dict[str, str]:
    import torch

    kohya = {"sd1": {"l": "lora_te_"}, "sd2": {"h": "lora_te_"}, "sdxl": {"l": "lora_te1_", "g": "lora_te2_"},
             "sdxl_refiner": {"g": "lora_te2_"}}[family_name].get(tower)
    diffusers = "text_encoder_2." if tower == "g" and family_name.startswith("sdxl") else "text_encoder."
    out = {}
    for module_name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Embedding)):
            # ComfyUI's generic names, as LoraSave writes them: every weight of the tower
            full = module_name if module_name.startswith(("text_model.", "text_projection")) else \
                "text_model." + module_name
            out[f"text_encoders.clip_{tower}.transformer.{full}"] = module_name
        if not isinstance(module, torch.nn.Linear) or ".layers." not in module_name:
            continue
        inner = module_name[module_name.index("encoder.layers."):]  # encoder.layers.N.<part>
        layer, part = inner.split(".")[2], ".".join(inner.split(".")[3:])
        if part in _CLIP_PARTS and kohya:
            out[f"{kohya}text_model_encoder_layers_{layer}_{_CLIP_PARTS[part]}"] = module_name
        out[f"{diffusers}text_model.{inner}"] = module_name
    return out


TEXT_ENCODER_PREFIXES = ("lora_te_", "lora_te1_", "lora_te2_", "text_encoder.", "text_encoder_2.", "text_encoders.")


def matched(key_map: dict[str, str], patches: tuple[LoraPatch, ...], text_encoder: bool = False
            ) -> list[tuple[str, Adapter, float]]:
    """(module, adapter, strength) for every adapter the key map resolves. UNet layers that match
    nothing are logged (ComfyUI's "lora key not loaded"); the text encoders' layers belong to
    the other pass, and on SDXL each tower sees only its own."""
    out = []
    for patch in patches:
        if patch.strength == 0:
            continue
        skipped = 0
        for prefix, adapter in read_adapters(patch.path).items():
            if prefix in key_map:
                out.append((key_map[prefix], adapter, patch.strength))
            elif not text_encoder and not prefix.startswith(TEXT_ENCODER_PREFIXES):
                skipped += 1
        if skipped:
            log.warning("%s: %d LoRA layers match no weight of this model and are not applied (as in ComfyUI)",
                        Path(patch.path).name, skipped)
    return out


@dataclass(frozen=True)
class Merge:
    """A MergePatch on loaded modules: `other` with its own patches, and each parameter's factors."""

    other: Any  # the other model's module
    other_changes: tuple
    patch: Any  # the MergePatch
    ldm_names: Any = None  # parameter -> its LDM name, for block ratios

    def source(self, name: str):
        return patched_value(self.other, name, self.other_changes)

    def factors(self, name: str) -> tuple[float, float]:
        ratios = self.patch.block_ratios
        if not ratios:
            return self.patch.own, self.patch.theirs
        ldm = self.ldm_names.get(name, name)
        ratio, longest = ratios[0][1], 0
        for prefix, value in ratios:  # the longest prefix the name starts with, the first among equals
            if ldm.startswith(prefix) and len(prefix) > longest:
                ratio, longest = value, len(prefix)
        return ratio, 1.0 - ratio


def _steps(module, changes) -> dict[str, list]:
    """Each parameter's patches in order, as functions of its float32 value."""
    steps: dict[str, list] = {}
    names = [name for name, _ in module.named_parameters()]
    for name, adapter, strength in changes:
        if isinstance(adapter, ScalePatch):
            for parameter in names:
                if (factor := adapter.factor(parameter)) != 1.0:
                    steps.setdefault(parameter, []).append(lambda w, f=factor: w * f)
            continue
        if isinstance(adapter, Merge):
            for parameter in names:
                own, theirs = adapter.factors(parameter)
                steps.setdefault(parameter, []).append(
                    lambda w, p=parameter, m=adapter, a=own, b=theirs: w * a + m.source(p).to(w.device) * b)
            continue
        if set(adapter.parts) != {"diff_b"}:  # a bias-only entry changes no weight
            steps.setdefault(f"{name}.weight", []).append(lambda w, a=adapter, s=strength: a.applied(w, s))
        if "diff_b" in adapter.parts and module.get_submodule(name).bias is not None:
            steps.setdefault(f"{name}.bias", []).append(
                lambda w, a=adapter, s=strength: w + s * a.parts["diff_b"].float().to(w.device))
    return steps


def patched_value(module, name: str, changes):
    """A parameter's value (float32) once the changes apply, the module left as it is."""
    value = module.get_parameter(name).detach().float()
    for step in _steps(module, changes).get(name, ()):
        value = step(value)
    return value


@contextmanager
def patched(module, changes: list[tuple[str, Any, float]], change=None):
    """Apply the adapters (and merges) for the block; afterwards the saved originals are copied
    back. Each parameter goes through its patches in order on a float32 copy, as ComfyUI stacks
    them, and is rounded once; one parameter at a time, so a merge never holds a second model."""
    import torch

    saved: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name, steps in _steps(module, changes).items():
                target = module.get_parameter(name)
                value = target.float()
                for step in steps:
                    value = step(value)
                saved[name] = target.detach().clone()
                target.copy_(value.to(target.dtype))
        yield module
    finally:
        with torch.no_grad():
            for name, original in saved.items():
                module.get_parameter(name).copy_(original)
        if change is not None:
            change.undone()


def tower_changes(ctx, model, spec, clip) -> list:
    """A text tower's patches in order: LoRA layers, and merges with the same tower of the other
    CLIP (CLIPMergeSimple) with that CLIP's own patches."""
    from .models import MergePatch

    changes = []
    for patch in clip.loras:
        if isinstance(patch, MergePatch):
            tower = next(t for t in patch.other.towers if t.spec.name == spec.name)
            other = ctx.models.get(tower)
            changes.append(("", Merge(other, tuple(tower_changes(ctx, other, spec, patch.other)), patch), 1.0))
        elif isinstance(patch, ScalePatch):
            changes.append(("", patch, 1.0))
        else:
            changes += matched(clip_key_map(model, spec.name, clip.family_name), (patch,), text_encoder=True)
    return changes


def ldm_parameter_names(unet) -> dict[str, str]:
    """Each UNet parameter's LDM name (`input_blocks.1.1.…`), which ComfyUI's block merges match."""
    names = unet_ldm_names(dict(unet.config))
    ordered = sorted(names, key=len, reverse=True)
    out = {}
    for name, _ in unet.named_parameters():
        prefix = next((p for p in ordered if name.startswith(p + ".")), None)
        if prefix is not None:
            out[name] = names[prefix] + name[len(prefix):]
    return out


def unet_changes(ctx, unet, patches) -> list:
    """The model's patches in order: LoRA layers matched to its modules, and merges with the
    other model (loaded beside it) and that model's own patches."""
    from .models import MergePatch

    changes = []
    for patch in patches:
        if isinstance(patch, MergePatch):
            other = ctx.models.get(patch.other)
            changes.append(("", Merge(other, tuple(unet_changes(ctx, other, patch.other.loras)), patch,
                                      ldm_parameter_names(unet) if patch.block_ratios else None), 1.0))
        elif isinstance(patch, ScalePatch):
            changes.append(("", patch, 1.0))
        else:
            changes += matched(unet_key_map(unet), (patch,))
    return changes


@contextmanager
def sampling_with_loras(ctx, handle, *conditionings):
    """The model as the sampler sees it, its LoRAs patched in for the block (and undone after,
    with the store told: an interrupted restore leaves the model marked for reloading), its FreeU
    and hypernetworks applied, with the ControlNets, adapters and GLIGEN models the
    conditionings carry loaded beside it."""
    from .controlnet import conditioning_models
    from .models import model_patches_applied, sampling_model

    unet = ctx.models.get(handle)
    nets = conditioning_models(ctx, handle, conditionings, unet)
    nets |= {network: ctx.models.get(network) for network, _ in handle.hypernetworks}
    changes = unet_changes(ctx, unet, handle.loras)
    with ctx.models.modifying(handle) as change, patched(unet, changes, change), \
            model_patches_applied(handle, unet, nets):
        yield sampling_model(handle, unet, nets)
