"""LoraSave: a LoRA extracted from a model's (and its text encoders') weights, usually a
difference (ModelMergeSubtract: fine-tune − base), as ComfyUI's node writes it.

`standard`: each ≥2-D weight's truncated SVD at `rank`, the singular values folded into the up
projection, both clamped at the 99th percentile of their values; 1-D weights (norms) as full
diffs when `bias_diff`. `full_diff`: every weight whole. Biases as `diff_b` when `bias_diff`.
Keys are ComfyUI's generic ones (`diffusion_model.<LDM name>`,
`text_encoders.clip_<tower>.transformer.<name>`), in fp16; LoraLoader reads them back.
"""
from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import Literal

from engine import Link, Node, SavedFiles, Widget

from ..core.image import _prefix_stays_inside
from .checkpoint_save import patched_towers, save_safetensors, unet_state
from .models import DiffusionModel, TextEncoders

log = logging.getLogger("run_graph.lora")
CLAMP_QUANTILE = 0.99


def extract_lora(diff, rank: int):
    """(up, down) whose product approximates `diff` at `rank`."""
    import torch

    conv = diff.ndim == 4
    kernel = tuple(diff.shape[2:4]) if conv else None
    out_dim, in_dim = diff.shape[:2]
    rank = min(rank, in_dim, out_dim)
    matrix = diff.flatten(start_dim=1) if conv and kernel != (1, 1) else diff.reshape(out_dim, -1)
    u, s, vh = torch.linalg.svd(matrix.float())
    up, down = u[:, :rank] @ torch.diag(s[:rank]), vh[:rank, :]
    high = torch.quantile(torch.cat([up.flatten(), down.flatten()]), CLAMP_QUANTILE)
    up, down = up.clamp(-high, high), down.clamp(-high, high)
    if conv:
        up, down = up.reshape(out_dim, rank, 1, 1), down.reshape(rank, in_dim, *kernel)
    return up, down


def lora_entries(weights: dict, prefix: str, rank: int, lora_type: str, bias_diff: bool) -> dict:
    """ComfyUI's calc_lora_model over one model's named weights."""
    out = {}
    for key, value in weights.items():
        if key.endswith(".weight"):
            name = prefix + key[:-len(".weight")]
            if lora_type == "full_diff":
                out[f"{name}.diff"] = value.half().contiguous()
            elif value.ndim < 2:
                if bias_diff:
                    out[f"{name}.diff"] = value.half().contiguous()
            else:
                try:
                    up, down = extract_lora(value, rank)
                except RuntimeError as exc:
                    log.warning("could not extract a LoRA for %s (%s); is its difference zero?", key, exc)
                    continue
                out[f"{name}.lora_up.weight"] = up.half().contiguous()
                out[f"{name}.lora_down.weight"] = down.half().contiguous()
        elif bias_diff and key.endswith(".bias"):
            out[f"{prefix}{key[:-len('.bias')]}.diff_b"] = value.half().contiguous()
    return out


class LoraSave(Node):
    """Extract a LoRA from a model (and CLIP) difference into `<output>/loras`."""

    class_type = "LoraSave"
    display_name = "Extract and Save Lora"
    category = "_for_testing"
    is_output_node = True

    filename_prefix: str = Widget("loras/ComfyUI_extracted_lora", check=_prefix_stays_inside)
    rank: int = Widget(8, ge=1, le=4096, step=1)
    lora_type: Literal["standard", "full_diff"] = Widget("standard")
    bias_diff: bool = Widget(True)
    model_diff: DiffusionModel | None = Link(optional=True)
    text_encoder_diff: TextEncoders | None = Link(optional=True)

    def execute(self, ctx) -> SavedFiles:
        if self.model_diff is None and self.text_encoder_diff is None:
            return SavedFiles(())
        state = {}
        with ExitStack() as stack:
            if self.model_diff is not None:
                weights = {k[len("model.diffusion_model."):]: v.detach().cpu() for k, v in
                           unet_state(ctx, self.model_diff, stack).items() if k.startswith("model.diffusion_model.")}
                state |= lora_entries(weights, "diffusion_model.", self.rank, self.lora_type, self.bias_diff)
            if self.text_encoder_diff is not None:
                for spec, _, weights in patched_towers(ctx, self.text_encoder_diff, stack):
                    state |= lora_entries({k: v.detach().cpu() for k, v in weights.items()},
                                          f"text_encoders.clip_{spec.name}.transformer.", self.rank, self.lora_type,
                                          self.bias_diff)
        return SavedFiles((str(save_safetensors(ctx, self.filename_prefix, state, {})),))
