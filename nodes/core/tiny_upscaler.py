"""A tiny random-weight ESRGAN (×4) in BasicSR's RRDBNet key layout, the one Real-ESRGAN and most
published ESRGAN files use; spandrel recognises it by those names."""
from __future__ import annotations

from pathlib import Path


def write_tiny_esrgan(path: Path, seed: int = 0, features: int = 8, blocks: int = 1) -> Path:
    import torch
    from safetensors.torch import save_file

    growth = 32  # fixed in ESRGAN: spandrel builds every RRDB with 32 growth channels
    generator = torch.Generator().manual_seed(seed)
    state = {}

    def conv(name: str, inputs: int, outputs: int) -> None:
        # fan-in scaled, so activations keep their size through the dense blocks
        state[f"{name}.weight"] = torch.randn([outputs, inputs, 3, 3], generator=generator) * (inputs * 9) ** -0.5
        state[f"{name}.bias"] = torch.zeros(outputs)

    conv("conv_first", 3, features)
    for block in range(blocks):
        for dense in (1, 2, 3):
            for layer in range(1, 6):
                conv(f"body.{block}.rdb{dense}.conv{layer}", features + (layer - 1) * growth,
                     features if layer == 5 else growth)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, features, features)
    conv("conv_last", features, 3)
    state["conv_last.bias"] += 0.5  # centred on mid-grey: a visible image, not one clamped to black
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(path))
    return path
