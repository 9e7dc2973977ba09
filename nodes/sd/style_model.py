"""Style models (ComfyUI's STYLE_MODEL): TencentARC's T2I style adapter, which turns a CLIP vision
model's image tokens into a few extra text tokens.

The adapter appends learned style tokens to the image tokens, runs them through small
pre-norm transformer blocks (OpenAI CLIP's: QuickGELU MLPs, fused-projection attention), and
projects the style positions to the text width. ComfyUI builds the published size (width 1024,
768-wide text, 3 blocks, 8 tokens, 8 heads); here the sizes are read off the weights, so other
files (and tiny test ones) load too. Flux's Redux files are refused by name.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import EdgeValue, ModelLoadError

from ..core.state_files import CheckpointFile


def _modules():
    import torch
    from torch import nn

    class QuickGELU(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(1.702 * x)

    class Block(nn.Module):
        def __init__(self, width: int, heads: int):
            super().__init__()
            self.attn = nn.MultiheadAttention(width, heads)
            self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()),
                                                  ("c_proj", nn.Linear(width * 4, width))]))

        def forward(self, x):  # [tokens, batch, width]
            normed = self.ln_1(x)
            x = x + self.attn(normed, normed, normed, need_weights=False)[0]
            return x + self.mlp(self.ln_2(x))

    class StyleAdapter(nn.Module):
        # The attribute names are the file's (transformer_layes sic).
        def __init__(self, width: int, context_dim: int, heads: int, layers: int, tokens: int):
            super().__init__()
            self.transformer_layes = nn.Sequential(*[Block(width, heads) for _ in range(layers)])
            self.style_embedding = nn.Parameter(torch.zeros(1, tokens, width))
            self.ln_pre, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width)
            self.proj = nn.Parameter(torch.zeros(width, context_dim))

        def forward(self, image_tokens):
            tokens = self.style_embedding.shape[1]
            x = torch.cat([image_tokens, self.style_embedding.expand(image_tokens.shape[0], -1, -1)], dim=1)
            x = self.transformer_layes(self.ln_pre(x).permute(1, 0, 2)).permute(1, 0, 2)
            return self.ln_post(x[:, -tokens:, :]) @ self.proj

    return StyleAdapter


@dataclass(frozen=True)
class StyleModel(EdgeValue):
    comfy_type = "STYLE_MODEL"
    path: str
    device: str

    @property
    def cache_key(self):
        return ("style_model", self.path, self.device)

    def estimated_bytes(self) -> int:
        return Path(self.path).stat().st_size * 2

    def load(self) -> Any:
        state = CheckpointFile(self.path).tensors("")
        name = Path(self.path).name
        if "redux_down.weight" in state:
            raise ModelLoadError(f"{name} is a Flux Redux style model; run-graph has no Flux models yet")
        if "style_embedding" not in state:
            raise ModelLoadError(f"{name} is not a style model (no style_embedding: expected TencentARC's T2I "
                                 "style adapter)")
        _, tokens, width = state["style_embedding"].shape
        layers = len({k.split(".")[1] for k in state if k.startswith("transformer_layes.")})
        heads = 8 if width == 1024 else max(1, width // 64)  # the published adapter's 8; 64-wide otherwise
        model = _modules()(width, state["proj"].shape[1], heads, layers, tokens)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"{name}: the style adapter's weights do not fit: {str(exc)[:400]}") from exc
        return model.to(self.device).float().eval()


def style_tokens(model, clip_vision_output):
    """The adapter's tokens for every image, as one sequence [1, images·tokens, text width]."""
    import torch

    hidden = clip_vision_output.last_hidden_state
    width = model.style_embedding.shape[-1]
    if hidden.shape[-1] != width:
        raise ModelLoadError(f"the style model takes {width}-wide CLIP vision states; this CLIP vision model's "
                             f"are {hidden.shape[-1]} wide (the published adapter pairs with ViT-L)")
    with torch.inference_mode():
        tokens = model(hidden.to(model.proj.device, torch.float32))
    return tokens.flatten(0, 1).unsqueeze(0).cpu()
