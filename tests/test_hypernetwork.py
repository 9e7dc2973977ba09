"""HypernetworkLoader: A1111 hypernetworks on the self- and cross-attentions, as ComfyUI patches them."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from engine import Session, Settings
from nodes.sd.hypernetwork import Hypernetwork, HypernetworkAttention, hypernetworks_applied


def _write(path, widths=(32, 64), activation="relu", layer_norm=True, seed=0):
    """An A1111-style file: per width, two MLPs of linears (and LayerNorms) named as A1111 does."""
    generator = torch.Generator().manual_seed(seed)
    data = {"activation_func": activation, "is_layer_norm": layer_norm, "use_dropout": True,
            "activate_output": False, "last_layer_dropout": False, "layer_structure": [1, 2, 1]}
    for width in widths:
        pair = []
        for _ in range(2):
            state, index = {}, 0
            for fan_in, fan_out in ((width, 2 * width), (2 * width, width)):
                state[f"linear.{index}.weight"] = torch.randn([fan_out, fan_in], generator=generator) * 0.3
                state[f"linear.{index}.bias"] = torch.randn([fan_out], generator=generator) * 0.1
                index += 1
                if layer_norm:
                    state[f"linear.{index}.weight"] = torch.ones([fan_out])
                    state[f"linear.{index}.bias"] = torch.zeros([fan_out])
                    index += 1
            pair.append(state)
        data[width] = pair
    torch.save(data, path)


def test_a_file_becomes_two_mlps_per_width(tmp_path):
    _write(tmp_path / "net.pt")
    widths = Hypernetwork(str(tmp_path / "net.pt"), "cpu").load()
    assert sorted(widths) == [32, 64]
    kinds = [type(layer).__name__ for layer in widths[32][0]]
    # ComfyUI counts the norms among the layers when it looks for the last linear, so with norms
    # even the last linear gets its activation; without them it does not (activate_output off)
    assert kinds == ["Linear", "ReLU", "LayerNorm", "Linear", "ReLU", "LayerNorm"]
    _write(tmp_path / "plain.pt", layer_norm=False)
    plain = Hypernetwork(str(tmp_path / "plain.pt"), "cpu").load()
    assert [type(layer).__name__ for layer in plain[64][1]] == ["Linear", "ReLU", "Linear"]


def test_the_processor_is_diffusers_attention_when_nothing_matches_and_shifts_keys_and_values(tmp_path):
    from diffusers.models.attention_processor import Attention

    _write(tmp_path / "net.pt", widths=(16,))
    widths = Hypernetwork(str(tmp_path / "net.pt"), "cpu").load()
    torch.manual_seed(0)
    attention = Attention(query_dim=32, cross_attention_dim=16, heads=2, dim_head=16).eval()
    hidden, context = torch.randn([2, 10, 32]), torch.randn([2, 7, 16])
    with torch.no_grad():
        plain = attention(hidden, encoder_hidden_states=context)
        attention.set_processor(HypernetworkAttention([(widths, 0.0)]))
        assert torch.equal(attention(hidden, encoder_hidden_states=context), plain)
        attention.set_processor(HypernetworkAttention([(widths, 0.8)]))
        shifted = attention(hidden, encoder_hidden_states=context)
        keys_from = context + widths[16][0](context) * 0.8
        values_from = context + widths[16][1](context) * 0.8
        # the same attention by hand, from the reshaped contexts
        query = attention.to_q(hidden).view(2, -1, 2, 16).transpose(1, 2)
        key = attention.to_k(keys_from).view(2, -1, 2, 16).transpose(1, 2)
        value = attention.to_v(values_from).view(2, -1, 2, 16).transpose(1, 2)
        expected = torch.nn.functional.scaled_dot_product_attention(query, key, value).transpose(1, 2).reshape(2, -1, 32)
        assert torch.allclose(shifted, attention.to_out[0](expected), atol=1e-6)


def test_hypernetwork_loader_changes_the_image_and_leaves_the_unet_as_it_was(tiny_models, tmp_path):
    from PIL import Image

    from .test_sd_models import _graph, _handle

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models, copy_function=os.link)
    (models / "hypernetworks").mkdir()
    _write(models / "hypernetworks" / "tiny.pt", widths=(32, 64))  # the tiny SD1.5: 32/64 blocks, 64-wide text
    session = Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu"), cache=False)

    def pixels(strength):
        graph = _graph("tiny_sd15.safetensors", "euler", "normal", 6.0)
        if strength is not None:
            graph["20"] = {"class_type": "HypernetworkLoader", "inputs": {"model": ["4", 0], "hypernetwork_name": "tiny.pt",
                                                                         "strength": strength}}
            graph["3"]["inputs"]["model"] = ["20", 0]
        result = session.execute(graph)
        assert result.status == "ok", result.errors
        return np.asarray(Image.open(result.files[0])).astype(int)

    plain = pixels(None)
    assert np.array_equal(pixels(0.0), plain)
    assert np.abs(pixels(1.0) - plain).max() > 10
    assert np.array_equal(pixels(None), plain)
    unet = _handle(tiny_models / "checkpoints" / "tiny_sd15.safetensors").load()
    with hypernetworks_applied(unet, []):
        assert all(isinstance(m.attn1.processor, HypernetworkAttention) for m in unet.modules() if hasattr(m, "attn1"))
    assert not any(isinstance(m.attn1.processor, HypernetworkAttention) for m in unet.modules() if hasattr(m, "attn1"))


def test_a_file_that_is_no_hypernetwork_is_refused_on_its_loader(tiny_models, tmp_path):
    from engine.errors import NodeExecutionError

    from .test_sd_models import _graph

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models, copy_function=os.link)
    (models / "hypernetworks").mkdir()
    torch.save({"something": torch.zeros(2)}, models / "hypernetworks" / "bad.pt")
    graph = _graph("tiny_sd15.safetensors", "euler", "normal", 6.0)
    graph["20"] = {"class_type": "HypernetworkLoader", "inputs": {"model": ["4", 0], "hypernetwork_name": "bad.pt",
                                                                 "strength": 1.0}}
    graph["3"]["inputs"]["model"] = ["20", 0]
    session = Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu"))
    with pytest.raises(NodeExecutionError, match="is not a hypernetwork") as refused:
        session.execute(graph)
    assert refused.value.error.node_type == "HypernetworkLoader"


def test_pag_still_perturbs_the_middle_attention_of_a_model_with_a_hypernetwork(tiny_models, tmp_path):
    """The hypernetworks' processors are set once around sampling; a PAG call then replaces the
    middle block's self-attentions on top of them and puts them back."""
    from dataclasses import replace

    from nodes.sd.models import ValuesOnly, middle_self_attention_as_values, model_patches_applied

    from .test_sd_models import _handle

    _write(tmp_path / "net.pt", widths=(32, 64))
    network = Hypernetwork(str(tmp_path / "net.pt"), "cpu")
    handle = replace(_handle(tiny_models / "checkpoints" / "tiny_sd15.safetensors"),
                     hypernetworks=((network, 1.0),))
    unet = handle.load()
    middle = [b.attn1 for a in unet.mid_block.attentions for b in a.transformer_blocks]
    with model_patches_applied(handle, unet, {network: network.load()}):
        assert all(isinstance(layer.processor, HypernetworkAttention) for layer in middle)
        with middle_self_attention_as_values(unet):
            assert all(isinstance(layer.processor, ValuesOnly) for layer in middle)
        assert all(isinstance(layer.processor, HypernetworkAttention) for layer in middle)
    assert not any(isinstance(layer.processor, HypernetworkAttention) for layer in middle)
