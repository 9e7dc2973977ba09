"""Values that travel along links. Tensors are torch tensors; torch is imported lazily by the
nodes that make them, so listing and validating workflows stays fast."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine import EdgeValue


@dataclass(frozen=True, eq=False)
class Image(EdgeValue):
    """float32 [B, H, W, 3] in [0, 1], on the CPU (ComfyUI's IMAGE)."""

    comfy_type = "IMAGE"
    pixels: Any


@dataclass(frozen=True, eq=False)
class Mask(EdgeValue):
    """float32 [B, H, W] in [0, 1]; 1 marks the area to repaint (ComfyUI's MASK)."""

    comfy_type = "MASK"
    mask: Any


@dataclass(frozen=True, eq=False)
class Latent(EdgeValue):
    """float32 [B, 4, H/8, W/8] unscaled VAE latents (ComfyUI's LATENT): samplers multiply by the
    VAE scaling factor on the way in and divide on the way out."""

    comfy_type = "LATENT"
    samples: Any
    noise_mask: Any = None  # [B or 1, 1, h, w], any resolution: 1 = denoise, 0 = keep (inpainting)
    batch_index: tuple[int, ...] | None = None  # which initial-noise draw each image gets
