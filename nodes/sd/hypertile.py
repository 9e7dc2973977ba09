"""HyperTile (Ruan et al.'s tiled self-attention), as ComfyUI's HyperTile node patches it.

On the UNet levels it reaches (`max_depth`), each self-attention's input tokens are split into
tiles of about `tile_size` pixels (÷8 in latent cells) that attend only among themselves, and the
output is put back in place. ComfyUI's arithmetic is kept, quirks included: the grid is read as
(width rows × height columns) on non-square images, and with `swap_size` > 1 the number of tiles
is drawn from torch's global generator among all but the last of the candidates. Here that
generator is the one ComfyUI's global generator is in after the initial noise (see
`noise.GlobalGenerators`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .attention_hooks import around_self_attention


@dataclass(frozen=True)
class HyperTileSettings:
    tile_size: int
    swap_size: int
    max_depth: int
    scale_depth: bool


def tile_count(value: int, min_value: int, max_options: int, generator) -> int:
    """ComfyUI's random_divisor: value ÷ one of its `max_options` smallest divisors ≥ min_value,
    picked by torch.randint(0, options − 1), which never picks the last one."""
    import torch

    min_value = min(min_value, value)
    options = [value // i for i in range(min_value, value + 1) if value % i == 0][:max_options]
    if len(options) > 1:
        return options[int(torch.randint(0, len(options) - 1, (1,), generator=generator).item())]
    return options[0]


def _tiles(tokens: int, size, settings: HyperTileSettings, generator) -> tuple[int, int, int, int] | None:
    """(tiles down, tiles across, rows, columns) for a self-attention over `tokens` tokens of a
    UNet input `size` (latent H, W), or None where HyperTile leaves it whole."""
    height, width = size
    reached = [(height / 2 ** i) * (width / 2 ** i) for i in range(settings.max_depth + 1)]
    if tokens not in reached:
        return None
    aspect = width / height
    rows, columns = round(math.sqrt(tokens * aspect)), round(math.sqrt(tokens / aspect))
    tile = max(32, settings.tile_size) // 8 * (2 ** reached.index(tokens) if settings.scale_depth else 1)
    down = tile_count(rows, tile, settings.swap_size, generator)
    across = tile_count(columns, tile, settings.swap_size, generator)
    return (down, across, rows, columns) if down * across > 1 else None


def hypertile_applied(unet, settings: HyperTileSettings, size, generator):
    """For the block: every transformer block's self-attention (`attn1`) of the UNet tiled."""

    def split(hidden):
        tiles = _tiles(hidden.shape[1], size, settings, generator)
        if tiles is None:
            return None
        down, across, rows, columns = tiles
        b, _, c = hidden.shape
        tiled = (hidden.reshape(b, down, rows // down, across, columns // across, c).permute(0, 1, 3, 2, 4, 5)
                 .reshape(b * down * across, (rows // down) * (columns // across), c))
        return tiles, tiled, {}

    def join(tiles, out):
        down, across, rows, columns = tiles
        c = out.shape[-1]
        b = out.shape[0] // (down * across)
        return (out.reshape(b, down, across, rows // down, columns // across, c).permute(0, 1, 3, 2, 4, 5)
                .reshape(b, rows * columns, c))

    return around_self_attention(unet, split, join)
