"""CONDITIONING: a list of entries, each one text encoding plus where and when it applies.

Several entries on one side are not merged: at sampling time each is evaluated on its own and
the predictions are averaged, weighted by strength and area (ComfyUI's semantics).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from engine import EdgeValue


@dataclass(frozen=True, eq=False)
class CondEntry:
    cross_attn: Any  # [1, tokens, dim]
    pooled: Any = None  # [1, dim] or None
    strength: float = 1.0
    area: tuple[int, int, int, int] | None = None  # (h, w, y, x) in latent pixels
    area_percent: tuple[float, float, float, float] | None = None  # (h, w, y, x) as fractions
    mask: Any = None  # [1, H, W] or [H, W], any resolution
    mask_strength: float = 1.0
    set_area_to_bounds: bool = False
    start_percent: float = 0.0
    end_percent: float = 1.0
    # SDXL size conditioning; None means "the sampled size" (latent × 8), decided per call
    width: int | None = None
    height: int | None = None
    crop_w: int = 0
    crop_h: int = 0
    target_width: int | None = None
    target_height: int | None = None
    aesthetic_score: float | None = None
    prompt_type: str = ""  # "negative" on the negative side while sampling (refiner defaults differ)
    # the last ControlNet applied (it holds the ones before it); entries sharing it run together
    control: Any = None
    # ControlNetApply (the old node) set on the positive side only: the negative borrows it
    control_apply_to_uncond: bool = False
    # InpaintModelConditioning: what an inpainting UNet's extra channels show for this entry (the
    # masked image's latent, unscaled, and its mask), instead of the sampled latent and noise mask
    concat_latent: Any = None
    concat_mask: Any = None
    # unCLIPConditioning: (image embeddings [N, D], strength, noise augmentation) per image set;
    # SDXL takes its pooled vector from them (revision)
    unclip: tuple = ()
    # GLIGENTextBoxApply: (the GLIGEN model, its boxes: (pooled text, h, w, y, x) in latent cells)
    gligen: Any = None

    def replace(self, **changes) -> "CondEntry":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Conditioning(EdgeValue):
    comfy_type = "CONDITIONING"
    entries: tuple[CondEntry, ...]

    def map(self, **changes) -> "Conditioning":
        return Conditioning(tuple(entry.replace(**changes) for entry in self.entries))
