"""PatchModelAddDownscale (Kohya Deep Shrink): where the hidden state shrinks and grows again."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nodes.sd.deep_shrink import DeepShrink, deep_shrink_applied

from .test_model_patches import _graph, _pixels


def _shrink(**inputs):
    return {"class_type": "PatchModelAddDownscale", "inputs": {
        "block_number": 3, "downscale_factor": 2.0, "start_percent": 0.0, "end_percent": 0.35,
        "downscale_after_skip": True, "downscale_method": "bicubic", "upscale_method": "bicubic", **inputs}}


@pytest.fixture(scope="module")
def sd15_unet(tiny_models):
    from diffusers import UNet2DConditionModel

    from nodes.sd.checkpoint import CheckpointFile, detect

    info = detect(CheckpointFile(tiny_models / "checkpoints" / "tiny_sd15.safetensors"))
    torch.manual_seed(0)
    return UNet2DConditionModel(**info.unet_config).eval()


def _sizes_seen(unet, shrink):
    """The height of h and of the skip at every up-block resnet's input, and of the result."""
    seen, handles = [], []
    for block in unet.up_blocks:
        for resnet in block.resnets:
            handles.append(resnet.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[-1])))
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 16, 16, generator=generator)
    context = torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator)
    with torch.no_grad(), deep_shrink_applied(unet, shrink) if shrink else torch.no_grad():
        out = unet(x, torch.tensor([500.0]), encoder_hidden_states=context).sample
    for handle in handles:
        handle.remove()
    return seen, out


def test_the_hidden_state_shrinks_after_the_block_and_grows_back_to_each_skip(sd15_unet):
    """Tiny SD1.5: input blocks 0 conv_in (16²), 1 level 0 (16²), 2 its downsampler (8²), 3 level 1
    (8²). Shrinking after block 2's skip leaves block 3 and the middle at 4²; the output blocks
    take the skips 3, 2, 1, 0 back and h grows to each one's size before joining it."""
    plain_sizes, plain = _sizes_seen(sd15_unet, None)
    after = DeepShrink(2, 2.0, 1e9, 0.0, True, "bicubic", "bicubic")
    sizes, out = _sizes_seen(sd15_unet, after)
    assert plain_sizes == [8, 8, 16, 16] and sizes == [4, 8, 16, 16]
    assert out.shape == plain.shape and not torch.allclose(out, plain, atol=1e-3)
    before = DeepShrink(2, 2.0, 1e9, 0.0, False, "bilinear", "nearest-exact")
    sizes, out = _sizes_seen(sd15_unet, before)  # the skip of block 2 shrinks too
    assert sizes == [4, 4, 16, 16] and out.shape == plain.shape
    # After block 1 (level 0's pair): its skip keeps 16², the downsampler makes 4², and the last
    # upsampler goes straight from 4² to the 16² of the skip that comes next, as ComfyUI's does.
    inside = DeepShrink(1, 2.0, 1e9, 0.0, True, "area", "bislerp")
    sizes, out = _sizes_seen(sd15_unet, inside)
    assert sizes == [4, 4, 16, 16] and out.shape == plain.shape
    # A factor of 1 resizes nothing: the same prediction; a block the UNet lacks: no patch.
    for shrink in (DeepShrink(2, 1.0, 1e9, 0.0, True, "bicubic", "bicubic"),
                   DeepShrink(32, 2.0, 1e9, 0.0, True, "bicubic", "bicubic")):
        sizes, out = _sizes_seen(sd15_unet, shrink)
        assert sizes == plain_sizes and torch.allclose(out, plain, atol=1e-5)


def test_deep_shrink_acts_only_inside_its_window(tiny_models, tmp_path):
    checkpoint = "tiny_sdxl.safetensors"
    plain = _pixels(tiny_models, tmp_path, _graph(checkpoint, None))
    # start and end at 100 %: σ never falls in the window, so no call is patched
    never = _pixels(tiny_models, tmp_path, _graph(checkpoint, _shrink(start_percent=1.0, end_percent=1.0)))
    assert np.array_equal(never, plain)
    early = _pixels(tiny_models, tmp_path, _graph(checkpoint, _shrink()))
    always = _pixels(tiny_models, tmp_path, _graph(checkpoint, _shrink(end_percent=1.0)))
    assert np.abs(early - plain).max() > 3 and np.abs(always - early).max() > 3


def test_controls_a_shrink_resizes_are_left_out_with_a_warning(tiny_models, tmp_path, caplog):
    """ComfyUI's apply_control adds each ControlNet output that fits and warns about the rest; a
    shrink at SD1.5's last level before its skip resizes that skip and the middle block's output."""
    from PIL import Image

    from nodes.sd import deep_shrink

    from .test_controlnet import _controlled, _image

    deep_shrink._WARNED.clear()  # each kind of mismatch is told once per process
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(inputs / "hint.png")

    def shrunk(graph, after_skip):
        graph = dict(graph, **{"30": _shrink(block_number=3, end_percent=1.0, downscale_after_skip=after_skip)})
        graph["30"]["inputs"]["model"] = ["4", 0]
        graph["3"] = dict(graph["3"], inputs={**graph["3"]["inputs"], "model": ["30", 0]})
        return graph

    controlled = _controlled("sd15")
    plain = dict(controlled, **{"3": dict(controlled["3"], inputs={**controlled["3"]["inputs"],
                                                                    "positive": ["6", 0], "negative": ["7", 0]})})
    for after_skip in (True, False):
        with caplog.at_level("WARNING"):
            with_control = _image(tiny_models, tmp_path / str(after_skip), inputs, shrunk(controlled, after_skip))
        without = _image(tiny_models, tmp_path / f"plain{after_skip}", inputs, shrunk(plain, after_skip))
        assert np.abs(with_control - without).max() > 3  # the controls that fit still act
    assert "could not be applied to the middle block" in caplog.text
    assert "could not be applied to the skip of input block 3" in caplog.text  # before the skip: it shrinks too
