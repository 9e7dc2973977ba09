"""Weight-only int8 / int4 quantization of ChatGLM's Linear layers, dequantized on the fly in torch.

The scheme and the stored form are ChatGLM's own (`quantize(bits)`): per-output-row absmax,
symmetric, round to nearest; `weight` holds int8 values, or two 4-bit values per int8 byte (the
even column in the high nibble, as ChatGLM's `compress_int4_weight` packs them), and
`weight_scale` the row scales. So a pre-quantized file (Kijai/ChatGLM3-safetensors' 8bit and
4bit ones) loads straight into these modules. Plain torch ops replace cpm_kernels, so it runs on
CPU and CUDA. Only the four Linears of each GLMBlock are quantized; embeddings and norms stay.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

BLOCK_LINEARS = ("self_attention.query_key_value", "self_attention.dense",
                 "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")


class QuantizedLinear(nn.Module):
    """y = x @ (q · weight_scale[:, None])ᵀ + b."""

    def __init__(self, in_features: int, out_features: int, bits: int, bias: bool, dtype: torch.dtype):
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {bits}")
        if bits == 4 and in_features % 2:
            raise ValueError("4-bit packing needs an even number of input features")
        self.bits, self.in_features, self.out_features = bits, in_features, out_features
        stored = in_features if bits == 8 else in_features // 2
        self.register_buffer("weight", torch.empty(out_features, stored, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.empty(out_features, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype), requires_grad=False) if bias else None

    @classmethod
    def of(cls, linear: nn.Linear, bits: int) -> QuantizedLinear:
        """`linear`'s weights, quantized."""
        weight = linear.weight.detach()
        module = cls(linear.in_features, linear.out_features, bits, linear.bias is not None, weight.dtype)
        qmax = 2 ** (bits - 1) - 1
        scale = weight.float().abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / qmax
        q = torch.round(weight.float() / scale[:, None]).clamp(-qmax, qmax).to(torch.int8)
        if bits == 4:
            nibbles = q.view(torch.uint8) & 0x0F
            q = ((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).view(torch.int8)
        module.weight = q.contiguous()
        module.weight_scale = scale.to(weight.dtype)
        if linear.bias is not None:
            module.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        return module

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        q = self.weight
        if self.bits == 4:
            # An arithmetic shift sign-extends the high nibble; the low one is shifted up first.
            high, low = q >> 4, (q << 4) >> 4
            q = torch.stack((high, low), dim=-1).reshape(self.out_features, self.in_features)
        return q.to(dtype) * self.weight_scale.to(dtype)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized(x.dtype), bias)


def block_linears(model: nn.Module):
    """(parent module, attribute name) of each Linear that quantization replaces."""
    for block in model.encoder.layers:
        for path in BLOCK_LINEARS:
            parent_name, name = path.split(".")
            yield getattr(block, parent_name), name


def quantize_chatglm_(model: nn.Module, bits: int) -> nn.Module:
    """Replace the four Linears of every GLMBlock in place; returns the model."""
    for parent, name in block_linears(model):
        setattr(parent, name, QuantizedLinear.of(getattr(parent, name), bits))
    return model
