"""VAEDecodeTiled / VAEEncodeTiled and the tiled fallback of VAEDecode / VAEEncode."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from engine import Session, Settings
from engine.errors import ValidationFailed
from engine.model_store import ModelStore
from nodes.core.tiles import decoded_in_tiles, encoded_in_tiles
from nodes.core.vae import VAE, decode_latents, encode_pixels


def _nearest_x8(latents):
    return torch.nn.functional.interpolate(latents[:, :3] * 2.0 - 0.5, scale_factor=8, mode="nearest")


def _pool_8(pixels):
    return torch.nn.functional.avg_pool2d(torch.cat([pixels, pixels[:, :1]], dim=1), 8)


def test_three_tilings_of_a_local_function_add_up_to_the_whole():
    """With a function that only looks at its own cell, every tiling (tall, wide, square, the
    last tile shifted back inside) gives the untiled result: the blend weights sum to one."""
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn([2, 4, 40, 56], generator=generator)
    assert torch.allclose(decoded_in_tiles(_nearest_x8, latents, 16, 4), _nearest_x8(latents), atol=1e-5)
    pixels = torch.rand([1, 3, 200, 136], generator=generator)
    assert torch.allclose(encoded_in_tiles(_pool_8, pixels, 64, 16), _pool_8(pixels), atol=1e-5)


def _context(tiny_models):
    path = tiny_models / "checkpoints" / "tiny_sd15.safetensors"
    return types.SimpleNamespace(models=ModelStore()), VAE(str(path), "cpu", "first_stage_model.")


def test_tiled_decode_is_near_the_whole_and_exact_when_one_tile_holds_it(tiny_models):
    """The tiny VAE's mid-block attention and group norms see the whole image, so tiles do
    change it, but far less than another latent would."""
    ctx, vae = _context(tiny_models)
    generator = torch.Generator().manual_seed(1)
    latents, other = torch.randn([2, 1, 4, 24, 24], generator=generator)
    whole = decode_latents(ctx, vae, latents)
    assert torch.allclose(decode_latents(ctx, vae, latents, (64, 16)), whole, atol=1e-5)
    tiled = decode_latents(ctx, vae, latents, (8, 2))
    assert tiled.shape == whole.shape
    assert 0 < (tiled - whole).abs().mean() < 0.5 * (decode_latents(ctx, vae, other) - whole).abs().mean()


def test_running_out_of_memory_falls_back_to_tiles(tiny_models, monkeypatch):
    """As ComfyUI retries a whole decode (encode) that runs out of memory in 64-cell (512-pixel)
    tiles, so does VAEDecode (VAEEncode): a VAE that cannot take the whole image at once still
    gives it, exactly as the tiled nodes do."""
    ctx, vae = _context(tiny_models)
    model = ctx.models.get(vae)

    def at_most(method, cells: int):
        def limited(x, *args, **kwargs):
            if x.shape[-2] * x.shape[-1] >= cells:
                raise torch.OutOfMemoryError("simulated")
            return method(x, *args, **kwargs)
        return limited

    # sizes that no one of the three tilings holds whole
    latents = torch.randn([1, 4, 40, 72], generator=torch.Generator().manual_seed(2))
    expected = decode_latents(ctx, vae, latents, (64, 16))
    monkeypatch.setattr(model, "decode", at_most(model.decode, 40 * 72))
    assert torch.equal(decode_latents(ctx, vae, latents), expected)
    pixels = torch.rand([1, 264, 1040, 3], generator=torch.Generator().manual_seed(3))
    expected = encode_pixels(ctx, vae, pixels, (512, 64))
    monkeypatch.setattr(model, "encode", at_most(model.encode, 264 * 1040))
    assert torch.equal(encode_pixels(ctx, vae, pixels), expected)


def test_tiled_nodes_in_a_workflow(tiny_models, tmp_path):
    """An image round trip through the tiled nodes (overlap above a quarter of the tile is
    lowered to a quarter, as ComfyUI lowers it)."""
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((96, 80, 3)) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "3": {"class_type": "VAEEncodeTiled", "inputs": {"pixels": ["2", 0], "vae": ["1", 2], "tile_size": 64,
                                                         "overlap": 16}},
        "4": {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["3", 0], "vae": ["1", 2], "tile_size": 64,
                                                         "overlap": 64}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    session = Session(settings=Settings(models_dir=tiny_models, input_dir=tmp_path, output_dir=tmp_path / "out",
                                        device="cpu"))
    result = session.execute(graph)
    assert result.status == "ok", result.errors
    with Image.open(result.files[0]) as image:
        assert image.size == (80, 96)
    graph["3"]["inputs"]["overlap"] = 32  # a 32-pixel tiling could not step: refused before running
    with pytest.raises(ValidationFailed) as failed:
        session.execute(graph)
    assert [(e.node_id, e.input) for e in failed.value.errors] == [("3", "overlap")]
    assert "less than half of tile_size" in failed.value.errors[0].message
