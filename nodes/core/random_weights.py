"""Random weights for the tiny (and full-size benchmark) models the project builds itself."""
from __future__ import annotations


def fan_in_init_(module, generator) -> None:
    import torch

    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() <= 1:
                param.fill_(1.0 if name.endswith("weight") else 0.0)  # norms 1, biases 0
            else:
                std = param[0].numel() ** -0.5
                param.copy_(torch.randn(param.shape, generator=generator, device=param.device) * std)


def materialized(build, device: str):
    """Build a module on the meta device (no memory, no init), then give it fp16 storage on
    `device`: a 6B-parameter model takes seconds, not minutes of CPU init and 25 GB of fp32."""
    import torch

    with torch.device("meta"):
        module = build()
    return module.to(torch.float16).to_empty(device=device)
