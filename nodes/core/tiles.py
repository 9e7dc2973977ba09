"""ComfyUI's `tiled_scale`: run a function over overlapping tiles of an image batch and blend
the outputs, for upscale models and tiled VAE decoding and encoding."""
from __future__ import annotations

import itertools


def tiled_scale(samples, function, tile, overlap: int, scale: float, out_channels: int):
    """Each tile's output is weighted by a linear ramp over its outer `overlap·scale` pixels on
    every side, and the image is Σ(out·ramp)/Σramp. `tile` is a side or (height, width); an
    image that fits in one tile goes through whole. `scale` below 1 (VAE encoding) shrinks."""
    import torch

    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    height, width = samples.shape[-2:]
    output = torch.empty([samples.shape[0], out_channels, round(height * scale), round(width * scale)])
    for b in range(samples.shape[0]):
        image = samples[b:b + 1]
        if height <= tile_h and width <= tile_w:
            output[b:b + 1] = function(image).cpu()
            continue
        total = torch.zeros([1, out_channels, round(height * scale), round(width * scale)])
        weight = torch.zeros_like(total)
        starts = [range(0, size - overlap, side - overlap) if size > side else [0]
                  for size, side in ((height, tile_h), (width, tile_w))]
        for y, x in itertools.product(*starts):
            y, x = max(0, min(height - overlap, y)), max(0, min(width - overlap, x))
            piece = image[..., y:y + min(tile_h, height - y), x:x + min(tile_w, width - x)]
            out = function(piece).cpu()
            ramp = torch.ones_like(out)
            feather = round(overlap * scale)
            for dim in (2, 3):
                if feather >= ramp.shape[dim]:
                    continue
                for t in range(feather):
                    ramp.narrow(dim, t, 1).mul_((t + 1) / feather)
                    ramp.narrow(dim, ramp.shape[dim] - 1 - t, 1).mul_((t + 1) / feather)
            top, left = round(y * scale), round(x * scale)
            total[..., top:top + out.shape[2], left:left + out.shape[3]] += out * ramp
            weight[..., top:top + out.shape[2], left:left + out.shape[3]] += ramp
        output[b:b + 1] = total / weight
    return output


def decoded_in_tiles(decode, latents, tile: int, overlap: int, scale: int = 8, channels: int = 3):
    """ComfyUI's tiled VAE decode: the mean of three tilings (tall, wide and square tiles of
    `tile` latent cells), so no seam falls in the same place twice."""
    passes = ((tile * 2, tile // 2), (tile // 2, tile * 2), (tile, tile))  # (height, width)
    return sum(tiled_scale(latents, decode, shape, overlap, scale, channels) for shape in passes) / 3.0


def encoded_in_tiles(encode, pixels, tile: int, overlap: int, scale: int = 8, channels: int = 4):
    """ComfyUI's tiled VAE encode: the mean of three tilings of `tile` pixels, in its order."""
    passes = ((tile, tile), (tile // 2, tile * 2), (tile * 2, tile // 2))  # (height, width)
    return sum(tiled_scale(pixels, encode, shape, overlap, 1 / scale, channels) for shape in passes) / 3.0
