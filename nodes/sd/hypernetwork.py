"""Hypernetworks (A1111's `.pt` files), as ComfyUI's HypernetworkLoader applies them.

A file holds, for each width, two small MLPs: one reshapes what an attention's keys are computed
from, the other what its values come from (k_in = c + MLP₀(c)·strength, v_in = c + MLP₁(c)·
strength). ComfyUI patches both the self-attentions (c: the block's hidden states, 320/640/1280
wide in SD1.x) and the cross-attentions (c: the text, 768 wide); here an attention processor does
the same, wherever a width has its MLPs.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import EdgeValue, ModelLoadError

ACTIVATIONS = ("linear", "relu", "leakyrelu", "elu", "swish", "tanh", "sigmoid", "softsign", "mish")


@dataclass(frozen=True)
class Hypernetwork(EdgeValue):
    path: str
    device: str

    @property
    def cache_key(self):
        return ("hypernetwork", self.path, self.device)

    def estimated_bytes(self) -> int:
        return Path(self.path).stat().st_size * 2

    def load(self) -> Any:
        import torch

        from ..core.state_files import _load_pickle

        data = _load_pickle(Path(self.path))
        if not isinstance(data, dict):
            raise ModelLoadError(f"{self.path} is not a hypernetwork: no dict of layers in it")
        activation = data.get("activation_func", "linear")
        if activation not in ACTIVATIONS:
            raise ModelLoadError(f"{self.path}: unknown hypernetwork activation {activation!r}")
        widths = {}
        for key, pair in data.items():
            try:
                width = int(key)
            except (TypeError, ValueError):
                continue
            widths[width] = torch.nn.ModuleList(_mlp(pair[index], data, activation) for index in (0, 1))
        if not widths:
            raise ModelLoadError(f"{self.path} is not a hypernetwork: it has no per-width layers")
        return {width: mlps.to(self.device).float().eval() for width, mlps in widths.items()}


def _mlp(weights: dict, settings: dict, activation: str):
    """ComfyUI's reading of one MLP: its linears in order, each followed by the activation (the
    last one only with `activate_output`), a LayerNorm when `is_layer_norm`, and dropout (inert
    at inference)."""
    import torch

    kinds = {"linear": torch.nn.Identity, "relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU,
             "elu": torch.nn.ELU, "swish": torch.nn.Hardswish, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
             "softsign": torch.nn.Softsign, "mish": torch.nn.Mish}
    names = [k[:-len(".weight")] for k in weights if k.endswith(".weight")]
    layers, i = [], 0
    while i < len(names):
        last = i == len(names) - 1
        weight, bias = weights[f"{names[i]}.weight"], weights[f"{names[i]}.bias"]
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        linear.load_state_dict({"weight": weight, "bias": bias})
        layers.append(linear)
        if activation != "linear" and (not last or settings.get("activate_output", False)):
            layers.append(kinds[activation]())
        if settings.get("is_layer_norm", False):
            i += 1
            norm_weight, norm_bias = weights[f"{names[i]}.weight"], weights[f"{names[i]}.bias"]
            norm = torch.nn.LayerNorm(norm_weight.shape[0])
            norm.load_state_dict({"weight": norm_weight, "bias": norm_bias})
            layers.append(norm)
        i += 1
    return torch.nn.Sequential(*layers)


class HypernetworkAttention:
    """diffusers' scaled-dot-product attention with the keys and values computed from the
    hypernetworks' reshaped inputs, in the order the nodes applied them."""

    def __init__(self, networks: list[tuple[dict, float]]):
        self.networks = networks

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        import torch.nn.functional as F

        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        keys_from = values_from = context
        for widths, strength in self.networks:
            mlps = widths.get(int(context.shape[-1]))
            if mlps is not None:
                keys_from = keys_from + mlps[0](keys_from.float()).to(keys_from.dtype) * strength
                values_from = values_from + mlps[1](values_from.float()).to(values_from.dtype) * strength
        batch = hidden_states.shape[0]
        query, key, value = attn.to_q(hidden_states), attn.to_k(keys_from), attn.to_v(values_from)
        head = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head).transpose(1, 2) for t in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


@contextmanager
def hypernetworks_applied(unet, networks: list[tuple[dict, float]]):
    """For the block, every attention of the UNet's transformer blocks runs through
    HypernetworkAttention."""
    layers = [getattr(module, name) for module in unet.modules() for name in ("attn1", "attn2")
              if getattr(module, name, None) is not None]
    saved = [layer.processor for layer in layers]
    try:
        for layer in layers:
            layer.set_processor(HypernetworkAttention(networks))
        yield
    finally:
        for layer, processor in zip(layers, saved):
            layer.set_processor(processor)
