"""What differs between SD1.x, SD2.x, SDXL and the SDXL refiner, in one place: where their text
encoders live and how they are used, the latent scale, and the UNet's extra inputs.

Adding a family (SD3, Flux...) means adding an entry here and its model code, not touching the
sampler.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextEncoderSpec:
    """One CLIP text tower inside a checkpoint."""

    name: str  # "l", "g" or "h": the key of embeddings files (clip_l / clip_g)
    prefix: str
    open_clip: bool  # OpenCLIP names (converted on load) rather than transformers'
    pad_token: int  # CLIP-L pads with EOS, OpenCLIP towers with 0
    default_layer: int | None  # None: the last layer after the final LayerNorm
    final_norm_on_hidden: bool  # whether a chosen hidden layer gets the final LayerNorm
    projected_pool: bool  # pooled output through text_projection (SDXL's bigG)


@dataclass(frozen=True)
class Family:
    name: str
    marker: str  # a tensor name only this family's checkpoints hold
    encoders: tuple[TextEncoderSpec, ...]
    latent_scale: float
    heads_fixed: bool  # SD1: 8 heads everywhere; others: 64 channels per head
    size_conditioning: str | None = None  # "sdxl" | "refiner"

    def matches(self, names) -> bool:
        return any(k.startswith(self.marker) for k in names)

    def prediction(self, file, unet_prefix: str) -> str:
        if "v_pred" in file.shapes:
            return "v"
        if self.name == "sd2":  # SD2-v and SD2 base share a layout; v models have wider biases
            key = unet_prefix + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
            if key in file.shapes:
                return "v" if float(file.tensors(key, strip=False)[key].float().std()) > 0.09 else "eps"
        return "eps"

    def added_inputs(self, entries, height: int, width: int, device, dtype) -> dict:
        """diffusers `added_cond_kwargs` for one batch: pooled text plus the size (or aesthetic)
        values that ComfyUI embeds into `y`. Sizes default to the sampled image size."""
        if self.size_conditioning is None:
            return {}
        import torch

        pooled = torch.cat([e.pooled for e in entries]).to(device, dtype)
        rows = []
        for e in entries:
            h = e.height if e.height is not None else height
            w = e.width if e.width is not None else width
            if self.size_conditioning == "sdxl":
                rows.append([h, w, e.crop_h, e.crop_w,
                             e.target_height if e.target_height is not None else h,
                             e.target_width if e.target_width is not None else w])
            else:
                score = e.aesthetic_score if e.aesthetic_score is not None else \
                    2.5 if e.prompt_type == "negative" else 6.0
                rows.append([h, w, e.crop_h, e.crop_w, score])
        return {"text_embeds": pooled, "time_ids": torch.tensor(rows, device=device, dtype=dtype)}


CLIP_L_SD1 = TextEncoderSpec("l", "cond_stage_model.transformer.", False, 49407, None, True, False)
CLIP_H_SD2 = TextEncoderSpec("h", "cond_stage_model.model.", True, 0, -2, True, False)
CLIP_L_SDXL = TextEncoderSpec("l", "conditioner.embedders.0.transformer.", False, 49407, -2, False, False)
CLIP_G_SDXL = TextEncoderSpec("g", "conditioner.embedders.1.model.", True, 0, -2, False, True)
CLIP_G_REFINER = TextEncoderSpec("g", "conditioner.embedders.0.model.", True, 0, -2, False, True)

SD1 = Family("sd1", "cond_stage_model.transformer.", (CLIP_L_SD1,), 0.18215, heads_fixed=True)
SD2 = Family("sd2", "cond_stage_model.model.", (CLIP_H_SD2,), 0.18215, heads_fixed=False)
SDXL = Family("sdxl", "conditioner.embedders.1.model.", (CLIP_L_SDXL, CLIP_G_SDXL), 0.13025,
              heads_fixed=False, size_conditioning="sdxl")
SDXL_REFINER = Family("sdxl_refiner", "conditioner.embedders.0.model.", (CLIP_G_REFINER,), 0.13025,
                      heads_fixed=False, size_conditioning="refiner")

FAMILIES = (SDXL, SDXL_REFINER, SD2, SD1)  # most specific marker first
BY_NAME = {f.name: f for f in FAMILIES}
