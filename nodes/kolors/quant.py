"""Weight-only int8 / int4 quantization of ChatGLM's Linear layers, dequantized on the fly in torch.

The scheme is the one ChatGLM's own `quantize(bits)` uses (per-output-row absmax, symmetric,
round to nearest), with plain torch ops instead of cpm_kernels, so it runs on CPU and CUDA.
Only the four Linears of each GLMBlock are quantized; embeddings and norms stay as they are.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

BLOCK_LINEARS = ("self_attention.query_key_value", "self_attention.dense",
                 "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")


class QuantizedLinear(nn.Module):
    """y = x @ (q · scale[:, None])ᵀ + b, with q stored as int8 (8 bit) or two nibbles per byte (4 bit)."""

    def __init__(self, linear: nn.Linear, bits: int):
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {bits}")
        weight = linear.weight.detach().float()
        self.bits, self.in_features, self.out_features = bits, linear.in_features, linear.out_features
        qmax = 2 ** (bits - 1) - 1
        scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / qmax
        q = torch.round(weight / scale[:, None]).clamp(-qmax, qmax).to(torch.int8)
        if bits == 4:
            if q.shape[1] % 2:
                raise ValueError("4-bit packing needs an even number of input features")
            nibbles = (q & 0x0F).to(torch.uint8)
            q = nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)
        self.register_buffer("weight_q", q.contiguous())
        self.register_buffer("scale", scale.to(linear.weight.dtype))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(),
                                                                  requires_grad=False)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        q = self.weight_q
        if self.bits == 4:
            low = (q & 0x0F).to(torch.int8)
            high = (q >> 4).to(torch.int8)
            # Sign-extend 4-bit two's complement: values 8..15 stand for -8..-1.
            low, high = (low ^ 8) - 8, (high ^ 8) - 8
            q = torch.stack((low, high), dim=-1).reshape(self.out_features, self.in_features)
        return q.to(dtype) * self.scale.to(dtype)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized(x.dtype), bias)


def quantize_chatglm_(model: nn.Module, bits: int) -> nn.Module:
    """Replace the four Linears of every GLMBlock in place; returns the model."""
    for block in model.encoder.layers:
        for path in BLOCK_LINEARS:
            parent_name, name = path.split(".")
            parent = getattr(block, parent_name)
            setattr(parent, name, QuantizedLinear(getattr(parent, name), bits))
    return model
