"""CLIP vision models (ComfyUI's CLIP_VISION) and unCLIP's image conditioning for SDXL (revision).

A CLIP vision file holds transformers' `vision_model.` and `visual_projection` weights; its size is
read off the shapes (ViT-L, ViT-H or ViT-bigG, or a tiny test model). Images are prepared as
ComfyUI's clip_preprocess prepares them. For SDXL, unCLIPConditioning replaces an entry's pooled
text with its images' embeddings, noise-augmented as ComfyUI's CLIPEmbeddingNoiseAugmentation
does (squared-cosine schedule, noise drawn from the sampler's seed − 10).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from engine import EdgeValue, ModelLoadError

from ..core.state_files import CheckpointFile

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The published towers have 16 heads whatever their width (ViT-L 1024, ViT-H 1280, bigG 1664)
SIXTEEN_HEADS = (1024, 1280, 1664)


@dataclass(frozen=True)
class ClipVision(EdgeValue):
    comfy_type = "CLIP_VISION"
    path: str
    device: str

    @property
    def cache_key(self):
        return ("clip_vision", self.path, self.device)

    def estimated_bytes(self) -> int:
        return Path(self.path).stat().st_size * 2

    def load(self) -> Any:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        state = CheckpointFile(self.path).tensors("")
        if "vision_model.embeddings.patch_embedding.weight" not in state:
            kind = "OpenCLIP-named" if any(k.startswith("visual.") for k in state) else "not"
            raise ModelLoadError(f"{self.path} is {kind} a CLIP vision model in transformers' names "
                                 "(vision_model.…, visual_projection)")
        state.pop("vision_model.embeddings.position_ids", None)
        patch = state["vision_model.embeddings.patch_embedding.weight"]
        hidden, positions = patch.shape[0], state["vision_model.embeddings.position_embedding.weight"].shape[0]
        layers = len({k.split(".")[3] for k in state if k.startswith("vision_model.encoder.layers.")})
        config = CLIPVisionConfig(
            hidden_size=hidden, intermediate_size=state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
            num_hidden_layers=layers, num_attention_heads=16 if hidden in SIXTEEN_HEADS else max(1, hidden // 64),
            patch_size=patch.shape[-1], image_size=patch.shape[-1] * math.isqrt(positions - 1),
            projection_dim=state["visual_projection.weight"].shape[0], layer_norm_eps=1e-5,
            hidden_act="quick_gelu" if hidden == 1024 else "gelu")  # OpenAI's ViT-L; OpenCLIP's H and bigG
        model = CLIPVisionModelWithProjection(config)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"{self.path}: the CLIP vision weights do not fit: {str(exc)[:400]}") from exc
        return model.to(self.device).float().eval()


@dataclass(frozen=True, eq=False)
class ClipVisionOutput(EdgeValue):
    comfy_type = "CLIP_VISION_OUTPUT"
    image_embeds: Any  # [B, projection]
    last_hidden_state: Any
    penultimate_hidden_states: Any


def clip_preprocess(images, size: int, crop: bool):
    """[B, H, W, C] in [0, 1] → normalised [B, 3, size, size]: the short side to `size` (or both
    sides when not cropping), bicubic with antialiasing, centre crop, rounded to 8-bit levels."""
    import torch

    image = images[..., :3].movedim(-1, 1)
    if image.shape[2] != size or image.shape[3] != size:
        if crop:
            scale = size / min(image.shape[2], image.shape[3])
            shape = (round(scale * image.shape[2]), round(scale * image.shape[3]))
        else:
            shape = (size, size)
        image = torch.nn.functional.interpolate(image, size=shape, mode="bicubic", antialias=True)
        top, left = (image.shape[2] - size) // 2, (image.shape[3] - size) // 2
        image = image[:, :, top:top + size, left:left + size]
    image = torch.clip(torch.round(image * 255) / 255.0, 0, 1)
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    return (image - mean.to(image)) / std.to(image)


def encode_image(model, images, crop: bool) -> ClipVisionOutput:
    import torch

    pixels = clip_preprocess(images.float(), model.config.image_size, crop).to(model.device)
    with torch.inference_mode():
        out = model(pixel_values=pixels, output_hidden_states=True)
    return ClipVisionOutput(out.image_embeds.float().cpu(), out.last_hidden_state.float().cpu(),
                            out.hidden_states[-2].float().cpu())


@lru_cache(maxsize=1)
def _augmentation_schedule():
    """√ᾱ and √(1−ᾱ) of the squared-cosine schedule over 1000 levels (float64 products, stored
    in float32 as ComfyUI registers them)."""
    import numpy as np
    import torch

    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = np.array([min(1 - alpha_bar((i + 1) / 1000) / alpha_bar(i / 1000), 0.999) for i in range(1000)])
    cumulative = np.cumprod(1.0 - betas)
    return torch.tensor(np.sqrt(cumulative), dtype=torch.float32), torch.tensor(np.sqrt(1 - cumulative),
                                                                                dtype=torch.float32)


def revision_pooled(unclip: tuple, seed: int, width: int):
    """The pooled vector SDXL gets from an entry's images (ComfyUI's unclip_adm cut to the pooled
    width): each embedding noised at its level and weighted by its strength; with more than one,
    the sum noised again at level 0 with the noise that follows. Every noise draw comes from a CPU
    generator seeded with seed − 10, as torch.manual_seed(seed − 10) gives it in ComfyUI."""
    import torch

    keep, noise_scale = _augmentation_schedule()
    generator = torch.Generator()
    parts = []
    for embeds, strength, augmentation in unclip:
        level = round(999 * augmentation)
        for embed in embeds:
            generator.manual_seed(seed - 10)
            noise = torch.randn([1, embed.shape[-1]], generator=generator)
            parts.append((keep[level] * embed[None].float() + noise_scale[level] * noise) * strength)
    if len(parts) == 1:
        return parts[0][:, :width]
    merged = torch.stack(parts).sum(0)
    return (keep[0] * merged + noise_scale[0] * torch.randn(merged.shape, generator=generator))[:, :width]
