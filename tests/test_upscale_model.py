"""UpscaleModelLoader and ImageUpscaleWithModel: spandrel recognises the tiny ESRGAN that
make-tiny-models writes, and the tiling is ComfyUI's (feathered overlaps that add up to the
untiled result for a translation-equivariant model)."""
from __future__ import annotations

import sys

import pytest
import torch

from engine import ModelLoadError, Session, Settings
from nodes.core.spandrel_import import import_spandrel
from nodes.core.tiles import tiled_scale
from nodes.core.upscale_model import UpscaleModel


def nearest_x4(images):
    return torch.nn.functional.interpolate(images, scale_factor=4, mode="nearest")


def test_tiles_add_up_to_the_whole_image_for_a_pointwise_model():
    """Every output pixel is Σ(tile·ramp)/Σramp over the tiles covering it: for an upsampler
    that ignores neighbours the tiling must vanish, including at the image's last, shifted tile."""
    images = torch.rand([2, 3, 70, 150], generator=torch.Generator().manual_seed(0))
    tiled = tiled_scale(images, nearest_x4, tile=64, overlap=8, scale=4, out_channels=3)
    assert tiled.shape == (2, 3, 280, 600)
    assert torch.allclose(tiled, nearest_x4(images), atol=1e-6)


def test_overlaps_are_ramped_linearly_over_overlap_times_scale_pixels():
    """Tiles that answer with their own constant: inside an overlap the result is the
    ramp-weighted mix, with weights (t + 1)/feather counted from each tile's edge."""
    calls = []

    def constant(piece):
        calls.append(piece.shape[-1])
        return torch.full([1, 1, piece.shape[-2] * 2, piece.shape[-1] * 2], float(len(calls)))

    out = tiled_scale(torch.zeros([1, 1, 8, 20]), constant, tile=12, overlap=4, scale=2, out_channels=1)
    # tiles start at x = 0 and 8 (width 12 each); they overlap on input columns 8..11, output 16..23
    assert calls == [12, 12]
    feather = 8
    for column in range(16, 24):
        left_weight = (24 - 1 - column + 1) / feather  # the first tile's right ramp
        right_weight = (column - 16 + 1) / feather  # the second tile's left ramp
        expected = (1 * left_weight + 2 * right_weight) / (left_weight + right_weight)
        assert float(out[0, 0, 8, column]) == pytest.approx(expected, rel=1e-6)
    assert float(out[0, 0, 8, 4]) == 1.0 and float(out[0, 0, 8, 36]) == 2.0


def test_tiny_esrgan_is_recognised_and_upscales_by_four(tiny_models):
    handle = UpscaleModel(str(tiny_models / "upscale_models" / "tiny_esrgan_x4.safetensors"), "cpu")
    model = handle.load()
    assert model.scale == 4 and model.output_channels == 3
    spandrel = import_spandrel()
    descriptor = spandrel.ModelLoader().load_from_file(handle.path)
    assert descriptor.architecture.id == "ESRGAN"
    image = torch.rand([1, 3, 24, 20], generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(model(image), descriptor(image))


def test_spandrel_imports_without_torchvision_and_leaves_no_stand_in():
    import_spandrel()
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - absent or unusable here, as in CI
        assert "torchvision" not in sys.modules and "torchvision.transforms.functional" not in sys.modules
    else:
        assert hasattr(sys.modules["torchvision"], "__file__")  # the real package, not a stand-in


def test_a_file_that_is_no_upscale_model_is_refused_by_name(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "not_an_upscaler.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ModelLoadError, match="not an upscale model"):
        UpscaleModel(str(path), "cpu").load()
    (tmp_path / "models" / "upscale_models").mkdir(parents=True)
    path.rename(tmp_path / "models" / "upscale_models" / path.name)
    (tmp_path / "in").mkdir()
    from PIL import Image as PILImage

    PILImage.new("RGB", (16, 16)).save(tmp_path / "in" / "a.png")
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
              "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": path.name}},
              "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
              "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}}}
    session = Session(settings=Settings(models_dir=tmp_path / "models", input_dir=tmp_path / "in",
                                        output_dir=tmp_path / "out", device="cpu"))
    result = session.execute(prompt, raise_on_error=False)
    [error] = result.errors
    assert result.status == "invalid" and (error.node_id, error.input) == ("2", "model_name")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))


def test_upscale_nodes_through_the_engine(tiny_models, tmp_path):
    from PIL import Image as PILImage

    inputs = tmp_path / "in"
    inputs.mkdir()
    PILImage.new("RGB", (40, 30), (200, 100, 50)).save(inputs / "small.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "small.png"}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "tiny_esrgan_x4.safetensors"}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "up"}},
    }
    session = Session(settings=Settings(models_dir=tiny_models, input_dir=inputs, output_dir=tmp_path / "out",
                                        device="cpu"))
    result = session.execute(prompt)
    assert result.status == "ok"
    with PILImage.open(result.files[0]) as image:
        assert image.size == (160, 120)
        pixels = torch.tensor(list(image.getdata()), dtype=torch.float32)
    assert pixels.std() > 1.0  # a picture, not a constant
