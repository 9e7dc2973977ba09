"""VAEDecodeTiled and VAEEncodeTiled: the VAE over overlapping tiles, for images too large to
decode or encode whole (ComfyUI's three-tiling mean; see tiles.py)."""
from __future__ import annotations

from engine import Link, Node, Widget

from ..types import Image, Latent
from .latent import LatentOut
from .vae import VAE, ImageOut, crop_to_multiple_of_8, decode_latents, encode_pixels

COMPRESSION = 8  # pixels per latent cell of SD/SDXL VAEs


class VAEDecodeTiled(Node):
    """Latents → images, decoded in overlapping tiles of `tile_size` pixels."""

    class_type = "VAEDecodeTiled"
    display_name = "VAE Decode (Tiled)"
    category = "_for_testing"

    samples: Latent = Link()
    vae: VAE = Link()
    tile_size: int = Widget(512, ge=64, le=4096, step=32)
    overlap: int = Widget(64, ge=0, le=4096, step=32)
    temporal_size: int = Widget(64, ge=8, le=4096, step=4, tooltip="Only used for video VAEs")
    temporal_overlap: int = Widget(8, ge=4, le=4096, step=4, tooltip="Only used for video VAEs")

    def execute(self, ctx) -> ImageOut:
        overlap = self.tile_size // 4 if self.tile_size < self.overlap * 4 else self.overlap
        tiles = (self.tile_size // COMPRESSION, overlap // COMPRESSION)
        return ImageOut(Image(decode_latents(ctx, self.vae, self.samples.samples, tiles)))


class VAEEncodeTiled(Node):
    """Images → raw latents, encoded in overlapping tiles of `tile_size` pixels."""

    class_type = "VAEEncodeTiled"
    display_name = "VAE Encode (Tiled)"
    category = "_for_testing"

    pixels: Image = Link()
    vae: VAE = Link()
    tile_size: int = Widget(512, ge=64, le=4096, step=64)
    overlap: int = Widget(64, ge=0, le=4096, step=32)
    temporal_size: int = Widget(64, ge=8, le=4096, step=4, tooltip="Only used for video VAEs")
    temporal_overlap: int = Widget(8, ge=4, le=4096, step=4, tooltip="Only used for video VAEs")

    @classmethod
    def check_inputs(cls, constants, linked_types, vctx):
        problem = _overlap_problem(constants.get("tile_size"), constants.get("overlap"))
        return [("overlap", problem)] if problem else []

    def execute(self, ctx) -> LatentOut:
        if problem := _overlap_problem(self.tile_size, self.overlap):
            raise ValueError(f"overlap {problem}")
        pixels = crop_to_multiple_of_8(self.pixels.pixels[..., :3])
        return LatentOut(Latent(encode_pixels(ctx, self.vae, pixels, (self.tile_size, self.overlap))))


def _overlap_problem(tile, overlap) -> str | None:
    """ComfyUI's narrowest tiling is tile_size/2 wide; an overlap that wide leaves no step."""
    if isinstance(tile, int) and isinstance(overlap, int) and overlap >= tile // 2:
        return f"must be less than half of tile_size ({tile}): one of the three tilings is {tile // 2} wide"
    return None
