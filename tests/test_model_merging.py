"""ModelMergeSimple and CLIPMergeSimple: weighted weights, in order with LoRAs, undone after."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import Session, Settings
from engine.errors import NodeExecutionError


@pytest.fixture
def models(tiny_models, tmp_path):
    """The tiny models plus a second SD1.5 checkpoint of the same shape and other weights."""
    import os
    import shutil

    from nodes.sd.tiny import write_sd15

    folder = tmp_path / "models"
    shutil.copytree(tiny_models, folder, copy_function=os.link)
    write_sd15(folder / "checkpoints" / "other_sd15.safetensors", seed=5)
    return folder


def _graph(model, clip, extra=None):
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "other_sd15.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": clip}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"model": model, "seed": 2, "steps": 3, "cfg": 6.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                                                   "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    return graph | (extra or {})


def _merge(ratio):
    return {"10": {"class_type": "ModelMergeSimple", "inputs": {"model1": ["1", 0], "model2": ["2", 0], "ratio": ratio}}}


def _clip_merge(ratio):
    return {"11": {"class_type": "CLIPMergeSimple", "inputs": {"clip1": ["1", 1], "clip2": ["2", 1], "ratio": ratio}}}


def test_merged_models_and_clips(models, tmp_path):
    from PIL import Image

    # no result cache: the same graph runs again, on the model the merges patched and put back
    session = Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu"), cache=False)

    def pixels(graph):
        result = session.execute(graph)
        assert result.status == "ok", result.errors
        return np.asarray(Image.open(result.files[0])).astype(int)

    first, second = pixels(_graph(["1", 0], ["1", 1])), pixels(_graph(["2", 0], ["1", 1]))
    assert np.abs(first - second).max() > 10
    assert np.array_equal(pixels(_graph(["10", 0], ["1", 1], _merge(1.0))), first)
    assert np.array_equal(pixels(_graph(["10", 0], ["1", 1], _merge(0.0))), second)
    half = pixels(_graph(["10", 0], ["1", 1], _merge(0.5)))
    assert np.abs(half - first).max() > 5 and np.abs(half - second).max() > 5
    assert np.array_equal(pixels(_graph(["1", 0], ["1", 1])), first)  # the cached UNet was put back
    other_text = pixels(_graph(["1", 0], ["2", 1]))
    assert np.array_equal(pixels(_graph(["1", 0], ["11", 0], _clip_merge(0.0))), other_text)
    assert np.array_equal(pixels(_graph(["1", 0], ["11", 0], _clip_merge(1.0))), first)


def test_a_merge_takes_its_place_among_loras(models):
    """ComfyUI applies patches in the order they were added: a LoRA before the merge is scaled by
    the ratio with the model's own weights, a LoRA after it is added whole."""
    from types import SimpleNamespace

    from engine.model_store import ModelStore
    from nodes.sd.lora import patched_value, unet_changes
    from nodes.sd.models import LoraPatch, MergePatch
    from tests.test_sd_models import _handle

    ctx = SimpleNamespace(models=ModelStore())
    own, other = (_handle(models / "checkpoints" / name) for name in ("tiny_sd15.safetensors", "other_sd15.safetensors"))
    lora = LoraPatch(str(models / "loras" / "tiny_sd15_kohya.safetensors"), 1.0)
    unet = ctx.models.get(own)
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    w1, w2 = unet.get_parameter(name).detach().float(), ctx.models.get(other).get_parameter(name).detach().float()
    lora_only = patched_value(unet, name, unet_changes(ctx, unet, (lora,)))
    delta = lora_only - w1
    assert delta.abs().max() > 1e-3
    before = patched_value(unet, name, unet_changes(ctx, unet, (lora, MergePatch(other, 0.25, 0.75))))
    after = patched_value(unet, name, unet_changes(ctx, unet, (MergePatch(other, 0.25, 0.75), lora)))
    assert torch.allclose(before, (w1 + delta) * 0.25 + w2 * 0.75, atol=1e-6)
    assert torch.allclose(after, w1 * 0.25 + w2 * 0.75 + delta, atol=1e-6)


def test_models_of_other_shapes_are_not_merged(models, tmp_path):
    session = Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu"))
    graph = _graph(["10", 0], ["1", 1], _merge(0.5))
    graph["2"]["inputs"]["ckpt_name"] = "tiny_sdxl.safetensors"
    with pytest.raises(NodeExecutionError, match="their UNets differ in shape") as refused:
        session.execute(graph)
    assert refused.value.error.node_type == "ModelMergeSimple" and refused.value.error.kind == "model_load_error"


def _weights_after(models, patch_of):
    """(own weights, other's weights, merged weights) of every UNet parameter, for a MergePatch."""
    from types import SimpleNamespace

    from engine.model_store import ModelStore
    from nodes.sd.lora import patched, unet_changes
    from tests.test_sd_models import _handle

    ctx = SimpleNamespace(models=ModelStore())
    own, other = (_handle(models / "checkpoints" / name) for name in ("tiny_sd15.safetensors", "other_sd15.safetensors"))
    unet, second = ctx.models.get(own), ctx.models.get(other)
    w1 = {k: v.detach().clone() for k, v in unet.named_parameters()}
    w2 = dict(second.named_parameters())
    with patched(unet, unet_changes(ctx, unet, (patch_of(other),))):
        merged = {k: v.detach().clone() for k, v in unet.named_parameters()}
    assert all(torch.equal(v, w1[k]) for k, v in unet.named_parameters())  # put back
    return w1, w2, merged


def test_block_merge_takes_each_weights_ratio_from_its_ldm_block(models):
    from nodes.sd.models import MergePatch

    blocks = (("input", 0.25), ("middle", 0.5), ("out", 0.75))
    w1, w2, merged = _weights_after(models, lambda other: MergePatch(other, 1.0, 0.0, blocks))
    expected_ratio = {
        "time_embedding.linear_1.weight": 0.25,  # time_embed: no block matches, the first ratio
        "conv_in.weight": 0.25,  # input_blocks.0
        "down_blocks.0.attentions.0.proj_in.weight": 0.25,
        "mid_block.resnets.1.conv2.weight": 0.5,
        "up_blocks.1.resnets.0.conv1.weight": 0.75,
        "up_blocks.1.attentions.1.proj_out.weight": 0.75,
        "conv_out.weight": 0.75,  # out.2
    }
    for name, ratio in expected_ratio.items():
        assert torch.allclose(merged[name], w1[name] * ratio + w2[name] * (1 - ratio), atol=1e-6), name
    assert not torch.allclose(merged["conv_out.weight"], w1["conv_out.weight"] * 0.25 + w2["conv_out.weight"] * 0.75)


def test_subtract_and_add_merges(models, tmp_path):
    from nodes.sd.models import MergePatch

    w1, w2, difference = _weights_after(models, lambda other: MergePatch(other, 0.5, -0.5))
    w1, w2, total = _weights_after(models, lambda other: MergePatch(other, 1.0, 1.0))
    for name in w1:
        assert torch.allclose(difference[name], (w1[name] - w2[name]) * 0.5, atol=1e-6), name
        assert torch.allclose(total[name], w1[name] + w2[name], atol=1e-6), name
    # The nodes: (model1 + model2) − model2 samples as model1 does; the CLIP nodes likewise.
    session = Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu"), cache=False)
    extra = {
        "10": {"class_type": "ModelMergeAdd", "inputs": {"model1": ["1", 0], "model2": ["2", 0]}},
        "12": {"class_type": "ModelMergeSubtract", "inputs": {"model1": ["10", 0], "model2": ["2", 0], "multiplier": 1.0}},
        "11": {"class_type": "CLIPMergeAdd", "inputs": {"clip1": ["1", 1], "clip2": ["2", 1]}},
        "13": {"class_type": "CLIPMergeSubtract", "inputs": {"clip1": ["11", 0], "clip2": ["2", 1], "multiplier": 1.0}},
    }
    plain = session.execute(_graph(["1", 0], ["1", 1])).outputs["3"].LATENT.samples
    merged = session.execute(_graph(["12", 0], ["13", 0], extra)).outputs["3"].LATENT.samples
    summed = session.execute(_graph(["10", 0], ["11", 0], extra)).outputs["3"].LATENT.samples
    assert torch.allclose(merged, plain, atol=1e-3) and not torch.allclose(summed, plain, atol=0.1)
    blocks = {"10": {"class_type": "ModelMergeBlocks", "inputs": {"model1": ["1", 0], "model2": ["2", 0],
                                                                  "input": 1.0, "middle": 1.0, "out": 1.0}}}
    assert torch.equal(session.execute(_graph(["10", 0], ["1", 1], blocks)).outputs["3"].LATENT.samples, plain)


def test_per_architecture_block_merges_take_dotted_block_inputs(models, tmp_path):
    session = Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu"), cache=False)
    blocks = ["time_embed.", "label_emb."] + [f"input_blocks.{i}." for i in range(12)] + \
        [f"middle_block.{i}." for i in range(3)] + [f"output_blocks.{i}." for i in range(12)] + ["out."]

    def merged(ratio_of):
        node = {"class_type": "ModelMergeSD1", "inputs": {"model1": ["1", 0], "model2": ["2", 0],
                                                          **{b: ratio_of(b) for b in blocks}}}
        return session.execute(_graph(["10", 0], ["1", 1], {"10": node})).outputs["3"].LATENT.samples

    first = session.execute(_graph(["1", 0], ["1", 1])).outputs["3"].LATENT.samples
    second = session.execute(_graph(["2", 0], ["1", 1])).outputs["3"].LATENT.samples
    assert torch.equal(merged(lambda b: 1.0), first) and torch.equal(merged(lambda b: 0.0), second)
    middle_only = merged(lambda b: 0.0 if b.startswith("middle_block.") else 1.0)
    assert not torch.equal(middle_only, first) and not torch.equal(middle_only, second)
