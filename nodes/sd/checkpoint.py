"""Reading single-file checkpoints and telling what they hold, from tensor names and shapes.

A checkpoint carries no config: the UNet's channels, depths, context and ADM widths are read
off its weights (as ComfyUI's model detection does), and the family from its text encoders:
- SD1.x: CLIP-L at `cond_stage_model.transformer.`
- SD2.x: OpenCLIP-H at `cond_stage_model.model.` (v-prediction told by a weight statistic)
- SDXL base: CLIP-L + OpenCLIP-bigG at `conditioner.embedders.{0,1}.`
- SDXL refiner: OpenCLIP-bigG alone at `conditioner.embedders.0.model.`
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from engine import ModelLoadError

from ..core.state_files import CheckpointFile
from .families import FAMILIES, Family

UNET_PREFIXES = ("model.diffusion_model.", "model.model.", "net.")
VAE_PREFIX = "first_stage_model."


@dataclass(frozen=True)
class CheckpointInfo:
    family: Family
    unet_prefix: str
    unet_config: dict
    prediction: str  # "eps" | "v" | "edm"
    zero_terminal_snr: bool = False
    continuous: tuple | None = None  # an EDM checkpoint's (σ_min, σ_max, σ_data, False)
    playground: bool = False  # Playground v2.5: EDM with its own latent format


def unet_prefix(names) -> str:
    counts = {p: sum(1 for k in names if k.startswith(p)) for p in UNET_PREFIXES}
    best = max(counts, key=counts.get)
    return best if counts[best] > 5 else "model."


def _count(names, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in names if (m := regex.match(k))})


def unet_config(shapes: dict[str, tuple], prefix: str, family: Family) -> dict:
    """A diffusers UNet2DConditionModel config read off LDM-named weights."""
    s = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
    if "input_blocks.0.0.weight" not in s:
        raise ModelLoadError("no UNet weights (input_blocks.0.0.weight) under " + prefix)
    in_channels = s["input_blocks.0.0.weight"][1]
    ops = sorted(int(m.group(1)) for k in s if (m := re.match(r"input_blocks\.(\d+)\.0\.op\.weight$", k)))
    input_count = _count(s, r"input_blocks\.(\d+)\.")
    per_level = ops[0] - 1 if ops else input_count - 1
    levels = len(ops) + 1
    widths, attention, depths, up_depths = [], [], [], []
    context, linear = None, False
    for i in range(levels):
        block = 1 + (per_level + 1) * i
        widths.append(s[f"input_blocks.{block}.0.out_layers.3.weight"][0])
        depth = _count(s, rf"input_blocks\.{block}\.1\.transformer_blocks\.(\d+)\.")
        attention.append(depth > 0)
        depths.append(depth)
        up_block = (per_level + 1) * (levels - 1 - i)
        up_depths.append(_count(s, rf"output_blocks\.{up_block}\.1\.transformer_blocks\.(\d+)\."))
        if depth and context is None:
            context = s[f"input_blocks.{block}.1.transformer_blocks.0.attn2.to_k.weight"][1]
            linear = len(s[f"input_blocks.{block}.1.proj_in.weight"]) == 2
    mid_depth = _count(s, r"middle_block\.1\.transformer_blocks\.(\d+)\.")
    # Levels without attention have no depth; diffusers reads the middle block's from the last
    # entry, so they take the middle block's (the refiner: [0, 4, 4, 0] with a depth-4 middle)
    depths = [d or mid_depth or 1 for d in depths]
    up_depths = [d or mid_depth or 1 for d in up_depths]
    if context is None and mid_depth:
        context = s["middle_block.1.transformer_blocks.0.attn2.to_k.weight"][1]
        linear = len(s["middle_block.1.proj_in.weight"]) == 2
    heads = [8] * levels if family.heads_fixed else [max(1, w // 64) for w in widths]
    config = {
        # a ControlNet is the encoder half: no output blocks, no `out`
        "sample_size": 64, "in_channels": in_channels, "out_channels": s.get("out.2.weight", (in_channels,))[0],
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "block_out_channels": widths, "layers_per_block": per_level, "cross_attention_dim": context,
        "attention_head_dim": heads, "use_linear_projection": linear,
        "transformer_layers_per_block": depths,
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_depth else None,
    }
    if any(k.startswith("output_blocks.") for k in s) and up_depths != depths:  # diffusers lists the up blocks' depths top level first
        config["reverse_transformer_layers_per_block"] = list(reversed(up_depths))
    if mid_depth and mid_depth != depths[-1]:
        raise ModelLoadError(f"unsupported UNet: middle block depth {mid_depth} differs from the last level's "
                             f"({depths[-1]})")
    if "label_emb.0.0.weight" in s:
        config.update(addition_embed_type="text_time", addition_time_embed_dim=256,
                      projection_class_embeddings_input_dim=s["label_emb.0.0.weight"][1])
    return config


def detect(file: CheckpointFile) -> CheckpointInfo:
    names = file.shapes
    family = next((f for f in FAMILIES if f.matches(names)), None)
    if family is None:
        raise ModelLoadError(f"{file.path.name} is not a checkpoint run-graph knows: no SD1.x, SD2.x or SDXL "
                             "text encoder weights in it (UNet-only files go in models/unet with UNETLoader)")
    prefix = unet_prefix(names)
    config = unet_config(names, prefix, family)
    prediction, continuous, playground = sdxl_sampling(file, family, family.prediction(file, prefix))
    return CheckpointInfo(family, prefix, config, prediction, zero_terminal_snr="ztsnr" in names,
                          continuous=continuous, playground=playground)


# Playground v2.5's sampling, as ComfyUI's SDXL.model_type sets it for a file with edm_mean/edm_std
PLAYGROUND_SAMPLING = (0.002, 80.0, 0.5, False)


def sdxl_sampling(file, family, prediction: str) -> tuple[str, tuple | None, bool]:
    """(prediction, continuous σ, Playground latent format) as SDXL's marker keys set them:
    `edm_mean` + `edm_std` Playground v2.5's EDM, `edm_vpred.*` an EDM v-prediction model."""
    if family.name == "sdxl" and "edm_mean" in file.shapes and "edm_std" in file.shapes:
        return "edm", PLAYGROUND_SAMPLING, True
    continuous = edm_vpred(file) if family.size_conditioning == "sdxl" else None
    return ("v" if continuous else prediction), continuous, False


def edm_vpred(file) -> tuple | None:
    """ComfyUI's V_PREDICTION_EDM SDXL checkpoints (CosXL) say so with `edm_vpred.sigma_max` (and
    optionally `.sigma_min`): continuous σ, v-prediction, σ_data 1."""
    if "edm_vpred.sigma_max" not in file.shapes:
        return None
    scalars = file.tensors("edm_vpred.")
    return (float(scalars["sigma_min"]) if "sigma_min" in scalars else 0.002, float(scalars["sigma_max"]), 1.0, False)
