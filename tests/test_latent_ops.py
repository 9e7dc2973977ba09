"""Latent arithmetic and reshaping, image batches and orientation, ConditioningSetAreaStrength."""
from __future__ import annotations

import pytest
import torch

from nodes.core.image_batch import ImageFlip, ImageFromBatch, ImageRotate, RepeatImageBatch
from nodes.core.latent_ops import (LatentAdd, LatentBatch, LatentBatchSeedBehavior, LatentCrop, LatentFlip,
                                   LatentInterpolate, LatentMultiply, LatentRotate, LatentSubtract)
from nodes.types import Image, Latent


def _out(node):
    """The node's single output value."""
    import dataclasses

    result = node.execute(None)
    return getattr(result, dataclasses.fields(result)[0].name)


def test_add_and_subtract_stretch_and_repeat_the_second_latent():
    first = Latent(torch.ones([2, 4, 4, 4]), noise_mask=torch.ones([1, 1, 4, 4]))
    second = Latent(torch.full([1, 4, 2, 2], 3.0))
    added = _out(LatentAdd(samples1=first, samples2=second))
    assert torch.equal(added.samples, torch.full([2, 4, 4, 4], 4.0)) and added.noise_mask is first.noise_mask
    assert torch.equal(_out(LatentSubtract(samples1=first, samples2=second)).samples, torch.full([2, 4, 4, 4], -2.0))
    assert torch.equal(_out(LatentMultiply(samples=second, multiplier=-0.5)).samples, torch.full([1, 4, 2, 2], -1.5))


def test_interpolate_mixes_directions_and_magnitudes():
    a, b = torch.zeros([1, 4, 1, 1]), torch.zeros([1, 4, 1, 1])
    a[0, 0], b[0, 1] = 2.0, 4.0  # orthogonal, magnitudes 2 and 4
    out = _out(LatentInterpolate(samples1=Latent(a), samples2=Latent(b), ratio=0.5)).samples[0, :, 0, 0]
    assert out[:2].tolist() == pytest.approx([3.0 / 2 ** 0.5] * 2) and out[2:].abs().max() == 0
    assert torch.allclose(_out(LatentInterpolate(samples1=Latent(a), samples2=Latent(b), ratio=1.0)).samples, a)


def test_batch_appends_and_keeps_the_noise_draws():
    first, second = Latent(torch.zeros([2, 4, 4, 4])), Latent(torch.ones([1, 4, 8, 8]), batch_index=(7,))
    out = _out(LatentBatch(samples1=first, samples2=second))
    assert out.samples.shape == (3, 4, 4, 4) and out.batch_index == (0, 1, 7) and out.samples[2].eq(1).all()
    fixed = _out(LatentBatchSeedBehavior(samples=out, seed_behavior="fixed"))
    assert fixed.batch_index == (0, 0, 0)
    assert _out(LatentBatchSeedBehavior(samples=out, seed_behavior="random")).batch_index is None


def test_flip_rotate_and_crop():
    grid = Latent(torch.arange(16.0).reshape(1, 1, 4, 4))
    assert _out(LatentFlip(samples=grid, flip_method="x-axis: vertically")).samples[0, 0, 0].tolist() == [12, 13, 14, 15]
    assert _out(LatentFlip(samples=grid, flip_method="y-axis: horizontally")).samples[0, 0, 0].tolist() == [3, 2, 1, 0]
    turned = _out(LatentRotate(samples=grid, rotation="90 degrees")).samples[0, 0]
    assert turned[0].tolist() == [12, 8, 4, 0]  # clockwise: the left column becomes the top row
    big = Latent(torch.arange(400.0).reshape(1, 1, 20, 20))
    crop = _out(LatentCrop(samples=big, width=64, height=80, x=8000, y=16)).samples
    assert crop.shape == (1, 1, 10, 8) and crop[0, 0, 0, 0] == 2 * 20 + 12  # x held 8 cells from the right


def test_image_batch_and_orientation():
    pixels = torch.arange(2 * 2 * 3 * 1.0).reshape(2, 2, 3, 1).expand(2, 2, 3, 3)
    assert _out(RepeatImageBatch(image=Image(pixels), amount=3)).pixels.shape == (6, 2, 3, 3)
    picked = _out(ImageFromBatch(image=Image(pixels), batch_index=5, length=4)).pixels
    assert picked.shape == (1, 2, 3, 3) and torch.equal(picked[0], pixels[1])
    rotated = _out(ImageRotate(image=Image(pixels), rotation="90 degrees")).pixels
    assert rotated.shape == (2, 3, 2, 3) and rotated[0, 0, :, 0].tolist() == [3.0, 0.0]
    assert torch.equal(_out(ImageFlip(image=Image(pixels), flip_method="y-axis: horizontally")).pixels,
                       pixels.flip(2))


def test_conditioning_set_area_strength():
    from nodes.core.conditioning import ConditioningSetAreaStrength
    from nodes.sampling.conditioning import CondEntry, Conditioning

    conditioning = Conditioning((CondEntry(torch.zeros([1, 2, 2]), area=(8, 8, 0, 0)),))
    out = _out(ConditioningSetAreaStrength(conditioning=conditioning, strength=2.5)).entries[0]
    assert out.strength == 2.5 and out.area == (8, 8, 0, 0)


def test_latent_blend():
    from nodes.core.latent_ops import LatentBlend

    first, second = Latent(torch.ones([1, 4, 4, 4])), Latent(torch.full([1, 4, 2, 2], 3.0))
    out = _out(LatentBlend(samples1=first, samples2=second, blend_factor=0.25)).samples
    assert out.shape == (1, 4, 4, 4) and torch.allclose(out, torch.full_like(out, 0.25 + 0.75 * 3.0))


def test_save_latent_and_load_it_back(tiny_models, tmp_path):
    import json
    import shutil
    from pathlib import Path

    import numpy as np
    from PIL import Image
    from safetensors import safe_open
    from safetensors.torch import save_file

    from engine import Session, Settings

    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(Path(__file__).resolve().parent.parent / "examples" / "input" / "landscape_shapes.png", inputs)
    session = Session(settings=Settings(models_dir=tiny_models, input_dir=inputs, output_dir=tmp_path / "out",
                                        device="cpu"))
    encode = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
              "2": {"class_type": "LoadImage", "inputs": {"image": "landscape_shapes.png"}},
              "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}}}
    saved = session.execute(encode | {"4": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0],
                                                                                   "filename_prefix": "latents/test"}}})
    path = Path(saved.files[0])
    assert path.name == "test_00001_.latent" and path.parent.name == "latents"
    with safe_open(str(path), framework="pt") as handle:
        assert set(handle.keys()) == {"latent_tensor", "latent_format_version_0"}
        assert json.loads(handle.metadata()["prompt"])["4"]["class_type"] == "SaveLatent"
        stored = handle.get_tensor("latent_tensor")
    shutil.copy(path, inputs / "mine.latent")
    save_file({"latent_tensor": stored * 0.18215}, str(inputs / "old.latent"))  # before the format marker

    def decoded(source):
        graph = encode | source | {"8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
                                   "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}}
        result = session.execute(graph)
        assert result.status == "ok", result.errors
        return np.asarray(Image.open(result.files[0])).astype(int)

    direct = decoded({"7": {"class_type": "LatentMultiply", "inputs": {"samples": ["3", 0], "multiplier": 1.0}}})
    # the same values; decoding a fresh contiguous copy may round a pixel or two the other way
    loaded = decoded({"7": {"class_type": "LoadLatent", "inputs": {"latent": "mine.latent"}}})
    assert np.abs(loaded - direct).max() <= 1 and (loaded != direct).mean() < 0.001
    old = decoded({"7": {"class_type": "LoadLatent", "inputs": {"latent": "old.latent"}}})
    assert np.abs(old - direct).max() <= 1  # scaled back by 1 / 0.18215, up to float rounding
