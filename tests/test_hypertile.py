"""HyperTile: which tokens share a tile, ComfyUI's draw of the tile count, and the node."""
from __future__ import annotations

import numpy as np
import torch

from nodes.sampling.noise import initial_noise
from nodes.sd.hypertile import HyperTileSettings, hypertile_applied, tile_count
from tests.test_model_patches import _graph, _pixels


def _block(width=8):
    from diffusers.models.attention import BasicTransformerBlock

    torch.manual_seed(0)
    return BasicTransformerBlock(width, 1, width).eval()


def _changed_by_first_token(block, size, settings, tokens):
    """Which output tokens of the block's self-attention move when token 0 of the input does."""
    hidden = torch.randn(1, tokens, 8)
    moved = hidden.clone()
    moved[0, 0] += 5.0
    with torch.no_grad(), hypertile_applied(block, settings, size, torch.Generator().manual_seed(0)):
        before, after = block.attn1(hidden), block.attn1(moved)
    return set(((after - before).abs().amax(-1) > 1e-6).nonzero()[:, 1].tolist())


def test_tokens_attend_only_within_their_tile():
    block = _block()
    # a 16×16 latent, tiles of 8 cells: 2×2 tiles of 8×8 tokens
    settings = HyperTileSettings(tile_size=64, swap_size=1, max_depth=0, scale_depth=False)
    assert _changed_by_first_token(block, (16, 16), settings, 256) == {r * 16 + c for r in range(8) for c in range(8)}
    # a level HyperTile does not reach (max_depth 0: the full-size one only) stays whole
    assert len(_changed_by_first_token(block, (32, 32), settings, 256)) == 256
    # non-square (H 8, W 16): ComfyUI reads the tokens as 16 rows of 8 (W rows of H), cut into
    # 4×2 tiles of 4×4 tokens
    tile = {r * 8 + c for r in range(4) for c in range(4)}
    assert _changed_by_first_token(block, (8, 16), HyperTileSettings(32, 1, 0, False), 128) == tile


def test_the_tile_count_is_drawn_as_comfyui_draws_it():
    generator = torch.Generator().manual_seed(0)
    # 96 ÷ its divisors ≥ 8 are 12, 8, 6, 4…; randint(0, options − 1) never reaches the last option
    draws = {tile_count(96, 8, 3, generator) for _ in range(200)}
    assert draws == {12, 8}
    assert {tile_count(96, 8, 2, generator) for _ in range(50)} == {12}
    assert tile_count(8, 32, 5, generator) == 1  # tiles larger than the side: one tile


def test_the_generator_continues_where_comfyuis_global_one_is_after_the_noise():
    generator = torch.Generator()
    noise = initial_noise([1, 4, 8, 8], 11, generator=generator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)  # ComfyUI's prepare_noise
        assert torch.equal(torch.randn([1, 4, 8, 8], generator=torch.default_generator), noise)
        assert torch.equal(torch.randint(0, 1000, (20,)), torch.randint(0, 1000, (20,), generator=generator))


def test_the_node_tiles_where_a_tile_is_smaller_than_the_image(tiny_models, tmp_path):
    base = _pixels(tiny_models, tmp_path, _graph("tiny_sd15.safetensors", None))

    def hypertile(tile_size, swap_size=2):
        return {"class_type": "HyperTile", "inputs": {"tile_size": tile_size, "swap_size": swap_size,
                                                      "max_depth": 0, "scale_depth": False}}

    # 64 px: an 8×8 latent, which a 256-pixel tile covers whole
    assert np.array_equal(_pixels(tiny_models, tmp_path, _graph("tiny_sd15.safetensors", hypertile(256))), base)
    tiled = _pixels(tiny_models, tmp_path, _graph("tiny_sd15.safetensors", hypertile(32)))
    assert np.abs(tiled - base).max() > 5

    def at_128px(patch):
        graph = _graph("tiny_sd15.safetensors", patch)
        graph["4"]["inputs"] |= {"width": 128, "height": 128}
        return graph

    # 128 px: a 16-cell side cut into 4 or 2 tiles (or 1, which randint never picks) when swap_size
    # allows three candidates; the draws follow the seed, so the same run twice gives the same image
    swapped = [_pixels(tiny_models, tmp_path / str(run), at_128px(hypertile(8, 4))) for run in range(2)]
    assert np.array_equal(*swapped)
    always_four = _pixels(tiny_models, tmp_path / "2", at_128px(hypertile(8, 2)))
    assert np.abs(swapped[0] - always_four).max() > 0
