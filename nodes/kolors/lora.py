"""LoadKolorsLoRA: DiffSynth-Studio Kolors LoRAs (and peft/diffusers files), applied exactly.

The cached base UNet never changes: `lora_applied` merges W + (alpha / r) · B @ A into the
adapted Linears for the duration of one sampling call and then copies the saved weights back, so a
run without the LoRA afterwards is bit-identical to one in a fresh process (merging and then
subtracting would drift by rounding).
"""
from __future__ import annotations

import dataclasses
import logging
import re
from contextlib import contextmanager
from pathlib import Path

from engine import Link, ModelLoadError, Node, Widget
from engine.settings import Settings, UnsafePathError

from ..core.vae import read_state_dict
from .loaders import KolorsModelOut
from .models import KolorsModel, LoraSpec

log = logging.getLogger("run_graph.lora")

# DiffSynth's SDXLUNet block index -> diffusers prefix (kolors-nodes.md §6.3).
DIFFSYNTH_BLOCKS = {
    7: "down_blocks.1.attentions.0", 10: "down_blocks.1.attentions.1",
    15: "down_blocks.2.attentions.0", 18: "down_blocks.2.attentions.1", 21: "mid_block.attentions.0",
    25: "up_blocks.0.attentions.0", 28: "up_blocks.0.attentions.1", 31: "up_blocks.0.attentions.2",
    35: "up_blocks.1.attentions.0", 38: "up_blocks.1.attentions.1", 41: "up_blocks.1.attentions.2",
}
_DIFFSYNTH_KEY = re.compile(r"^blocks\.(\d+)\.(transformer_blocks\..+)\.lora_([AB])\.default\.weight$")
_PEFT_KEY = re.compile(r"^(?:base_model\.model\.|unet\.)?(.+)\.lora_([AB])(?:\.default)?\.weight$")


def read_lora(path: Path) -> dict[str, dict[str, object]]:
    """{diffusers module name: {"A": tensor, "B": tensor}}, the format detected from the keys.
    Raises ModelLoadError listing keys that follow no known scheme."""
    state = read_state_dict(path)
    modules: dict[str, dict[str, object]] = {}
    unknown = []
    for key, tensor in state.items():
        if (m := _DIFFSYNTH_KEY.match(key)) and int(m.group(1)) in DIFFSYNTH_BLOCKS:
            inner = re.sub(r"\.to_out$", ".to_out.0", m.group(2))
            name, which = f"{DIFFSYNTH_BLOCKS[int(m.group(1))]}.{inner}", m.group(3)
        elif (m := _PEFT_KEY.match(key)) and not key.startswith("blocks."):
            name, which = m.group(1), m.group(2)
        else:
            unknown.append(key)
            continue
        modules.setdefault(name, {})[which] = tensor
    if unknown or not modules:
        raise ModelLoadError(f"{path}: not a Kolors LoRA this engine reads (DiffSynth .ckpt or peft "
                             f"safetensors); unmatched keys: {', '.join(unknown[:5]) or 'none at all'}")
    return modules


def lora_deltas(unet, spec: LoraSpec) -> dict[str, object]:
    """{module name: (alpha / r) · B @ A} in fp32, checked against the UNet's Linears."""
    import torch

    modules = read_lora(Path(spec.path))
    deltas, unmatched = {}, []
    for name, pair in modules.items():
        try:
            linear = unet.get_submodule(name)
        except AttributeError:
            unmatched.append(name)
            continue
        a, b = pair.get("A"), pair.get("B")
        if not isinstance(linear, torch.nn.Linear) or a is None or b is None \
                or tuple(b.shape[:1]) + tuple(a.shape[1:]) != tuple(linear.weight.shape) or a.shape[0] != b.shape[1]:
            unmatched.append(name)
            continue
        rank = a.shape[0]
        deltas[name] = (spec.alpha / rank) * spec.strength * (b.float() @ a.float())
    if unmatched:
        raise ModelLoadError(f"{spec.path} does not fit this UNet (another architecture?); "
                             f"{len(unmatched)} of {len(modules)} adapted layers match nothing: "
                             f"{', '.join(sorted(unmatched)[:5])}")
    return deltas


@contextmanager
def lora_applied(unet, loras: tuple[LoraSpec, ...]):
    """Merge the LoRAs into `unet` for the block's duration; restore the saved weights after."""
    import torch

    saved: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for spec in loras:
                for name, delta in lora_deltas(unet, spec).items():
                    weight = unet.get_submodule(name).weight
                    saved.setdefault(name, weight.detach().clone())
                    weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))
        yield unet
    finally:
        with torch.no_grad():
            for name, original in saved.items():
                unet.get_submodule(name).weight.copy_(original)


def resolve_lora_path(lora_path: str, settings: Settings) -> Path:
    """A name under <models>/loras, or an absolute path (allowed with unsafe paths). An absolute
    path that does not exist falls back to the file of the same name in <models>/loras."""
    loras = settings.models_dir / "loras"
    candidate = Path(lora_path)
    if candidate.is_absolute():
        if candidate.is_file() and settings.allow_unsafe_paths:
            return candidate
        fallback = loras / candidate.name
        if fallback.is_file():
            if candidate != fallback:
                log.info("LoRA %s: using %s from the loras folder", lora_path, fallback)
            return fallback
        if candidate.is_file():
            raise UnsafePathError(f"{lora_path} is outside {loras}; copy it there or allow unsafe paths")
        raise FileNotFoundError(f"no LoRA at {lora_path} nor {fallback}")
    path = settings.contained_path(loras, lora_path, "lora_path")
    if not path.is_file():
        raise FileNotFoundError(f"no LoRA file {lora_path!r} in {loras}")
    return path


def _check_lora_path(value: str, settings: Settings) -> str | None:
    try:
        resolve_lora_path(value, settings)
    except (UnsafePathError, FileNotFoundError) as exc:
        return str(exc)
    return None


class LoadKolorsLoRA(Node):
    """Add a LoRA to a Kolors model (Datawhale's node; `lora_alpha` is peft's alpha, scale alpha/r)."""

    class_type = "LoadKolorsLoRA"
    display_name = "Load Kolors LoRA"
    category = "KwaiKolorsWrapper"

    kolors_model: KolorsModel = Link()
    lora_path: str = Widget("", check=_check_lora_path)
    lora_alpha: float = Widget(2.0, ge=0.0, le=4.0, step=0.01)

    @classmethod
    def fingerprint(cls, constants, settings):
        stat = resolve_lora_path(constants["lora_path"], settings).stat()
        return [stat.st_size, stat.st_mtime_ns]

    def execute(self, ctx) -> KolorsModelOut:
        path = resolve_lora_path(self.lora_path, ctx.settings)
        read_lora(path)  # fail here, naming this node, if the file is not a LoRA at all
        spec = LoraSpec(str(path), self.lora_alpha)
        model = dataclasses.replace(self.kolors_model, loras=self.kolors_model.loras + (spec,))
        return KolorsModelOut(model)
