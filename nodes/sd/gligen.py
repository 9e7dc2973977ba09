"""GLIGEN text boxes for SD1.x/SD2.x UNets, as ComfyUI runs them.

A GLIGEN file holds a gated self-attention ("fuser") for every transformer block of the UNet,
in the UNet's order, and a position net that turns each box (its phrase's pooled text and its
corners as fractions of the latent) into a grounding token; 30 slots, the unused ones masked to
learned null features. The fusers are diffusers' GatedSelfAttentionDense and the position net
its GLIGENTextBoundingboxProjection; while sampling they are lent to the UNet's transformer
blocks, which run them after their self-attention exactly where ComfyUI's middle patch does.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import EdgeValue, ModelLoadError

from ..core.state_files import CheckpointFile

MAX_OBJECTS = 30


@dataclass(frozen=True)
class Gligen(EdgeValue):
    comfy_type = "GLIGEN"
    path: str
    device: str

    @property
    def cache_key(self):
        return ("gligen", self.path, self.device)

    def estimated_bytes(self) -> int:
        return Path(self.path).stat().st_size * 2

    def load(self) -> Any:
        import torch
        from diffusers.models.attention import GatedSelfAttentionDense
        from diffusers.models.embeddings import GLIGENTextBoundingboxProjection

        state = CheckpointFile(self.path).tensors("")
        if "position_net.null_positive_feature" not in state:
            raise ModelLoadError(f"{self.path} is not a GLIGEN model: it has no position net")
        # the fusers in the UNet's order: input blocks, the middle block, output blocks
        order = {"input_blocks": 0, "middle_block": 1, "output_blocks": 2}
        owners = sorted({k.split(".fuser.")[0] for k in state if ".fuser." in k},
                        key=lambda k: (order[k.split(".")[0]], [int(n) for n in re.findall(r"\d+", k)]))
        fusers = []
        for owner in owners:
            weights = {k.split(".fuser.")[1]: v for k, v in state.items() if k.startswith(owner + ".fuser.")}
            query_dim, key_dim = weights["linear.weight"].shape
            # ComfyUI's rule: SD1.x's (768-wide text) 8 heads, otherwise 64-wide heads
            heads = 8 if key_dim == 768 else max(1, query_dim // 64)
            fuser = GatedSelfAttentionDense(query_dim, key_dim, heads, query_dim // heads)
            try:
                fuser.load_state_dict(weights, strict=True)
            except RuntimeError as exc:
                raise ModelLoadError(f"{self.path}: the fuser of {owner} does not load: {str(exc)[:300]}") from exc
            fusers.append(fuser)
        net = GLIGENTextBoundingboxProjection(positive_len=state["position_net.null_positive_feature"].shape[0],
                                              out_dim=state["position_net.linears.4.weight"].shape[0])
        net.load_state_dict({k[len("position_net."):]: v for k, v in state.items() if k.startswith("position_net.")},
                            strict=True)
        return {"fusers": torch.nn.ModuleList(fusers).to(self.device).float().eval(),
                "position_net": net.to(self.device).float().eval()}


def grounding(boxes: tuple, latent_height: int, latent_width: int, batch: int, key_dim: int, device):
    """ComfyUI's set_position: each (pooled text, h, w, y, x) box, in latent cells, as corners
    over the latent's size, padded to 30 slots with zero boxes and masks."""
    import torch

    corners = torch.zeros([MAX_OBJECTS, 4])
    masks = torch.zeros([MAX_OBJECTS])
    texts = torch.zeros([MAX_OBJECTS, key_dim])
    for i, (pooled, h, w, y, x) in enumerate(boxes[:MAX_OBJECTS]):
        corners[i] = torch.tensor((x / latent_width, y / latent_height,
                                   (x + w) / latent_width, (y + h) / latent_height))
        masks[i] = 1.0
        texts[i] = pooled.reshape(-1)
    return {"boxes": corners[None].repeat(batch, 1, 1).to(device), "masks": masks[None].repeat(batch, 1).to(device),
            "positive_embeddings": texts[None].repeat(batch, 1, 1).to(device)}


def transformer_blocks(unet) -> list:
    blocks = []
    for part in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
        for attention in getattr(part, "attentions", None) or []:
            blocks.extend(attention.transformer_blocks)
    return blocks


@contextmanager
def fusers_lent(unet, model: dict):
    """For the block, the GLIGEN fusers sit in the UNet's transformer blocks and its position
    net on the UNet, where diffusers' own GLIGEN path looks for them."""
    blocks = transformer_blocks(unet)
    if len(blocks) != len(model["fusers"]):
        raise ValueError(f"the GLIGEN model has {len(model['fusers'])} fusers; the UNet has {len(blocks)} "
                         "transformer blocks")
    for block, fuser in zip(blocks, model["fusers"]):
        block.fuser = fuser.to(unet.dtype)
    unet.position_net = model["position_net"].to(unet.dtype)
    try:
        yield
    finally:
        for block in blocks:
            del block.fuser
        del unet.position_net
