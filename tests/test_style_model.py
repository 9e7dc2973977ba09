"""StyleModelLoader / StyleModelApply: T2I style adapter tokens appended to the text tokens."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine import Session, Settings
from engine.errors import NodeExecutionError
from nodes.sd.style_model import StyleModel, _modules


@pytest.fixture(scope="module")
def style_models(tiny_models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("style") / "models"
    shutil.copytree(tiny_models, folder, copy_function=os.link)
    (folder / "style_models").mkdir()
    torch.manual_seed(4)
    adapter = _modules()(64, 64, 1, 2, 4)  # the tiny CLIP vision tower's and the tiny SD1.5's widths
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.copy_(torch.randn(parameter.shape) * 0.3)
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()},
              str(folder / "style_models" / "tiny_style.safetensors"))
    save_file({"redux_down.weight": torch.zeros(2, 2)}, str(folder / "style_models" / "redux.safetensors"))
    inputs = folder.parent / "input"
    inputs.mkdir()
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(inputs / "style.png")
    return folder


def _by_hand(adapter, image_tokens):
    """The adapter written out: pre-norm blocks with single-head attention and QuickGELU MLPs."""
    def layer_norm(x, norm):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], norm.weight, norm.bias)

    x = torch.cat([image_tokens, adapter.style_embedding.expand(image_tokens.shape[0], -1, -1)], dim=1)
    x = layer_norm(x, adapter.ln_pre)
    for block in adapter.transformer_layes:
        h = layer_norm(x, block.ln_1)
        q, k, v = (h @ block.attn.in_proj_weight.T + block.attn.in_proj_bias).chunk(3, dim=-1)
        attention = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1) @ v
        x = x + attention @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
        h = layer_norm(x, block.ln_2) @ block.mlp.c_fc.weight.T + block.mlp.c_fc.bias
        x = x + (h * torch.sigmoid(1.702 * h)) @ block.mlp.c_proj.weight.T + block.mlp.c_proj.bias
    return layer_norm(x[:, -adapter.style_embedding.shape[1]:], adapter.ln_post) @ adapter.proj


def test_the_adapter_loads_and_computes_as_written_out(style_models):
    model = StyleModel(str(style_models / "style_models" / "tiny_style.safetensors"), "cpu").load()
    image_tokens = torch.randn(2, 5, 64)
    with torch.no_grad():
        assert torch.allclose(model(image_tokens), _by_hand(model, image_tokens), atol=1e-5)


def _graph(style_model="tiny_style.safetensors", strength=1.0, strength_type="multiply"):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "style.png"}},
        "5": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "tiny_clip_vision_g.safetensors"}},
        "6": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["5", 0], "image": ["4", 0], "crop": "center"}},
        "7": {"class_type": "StyleModelLoader", "inputs": {"style_model_name": style_model}},
        "8": {"class_type": "StyleModelApply", "inputs": {"conditioning": ["2", 0], "style_model": ["7", 0],
                                                          "clip_vision_output": ["6", 0], "strength": strength,
                                                          "strength_type": strength_type}},
        "9": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "10": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 3, "steps": 3, "cfg": 6.0,
                                                    "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                                                    "positive": ["8", 0], "negative": ["3", 0],
                                                    "latent_image": ["9", 0]}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}},
    }


def _session(models):
    return Session(settings=Settings(models_dir=models, input_dir=models.parent / "input",
                                     output_dir=models.parent / "out", device="cpu"))


def test_style_tokens_are_appended_scaled_and_change_the_image(style_models):
    from PIL import Image

    session = _session(style_models)
    result = session.execute(_graph(strength=0.5))
    text = result.outputs["2"].CONDITIONING.entries[0].cross_attn
    styled = result.outputs["8"].CONDITIONING.entries[0].cross_attn
    assert styled.shape == (1, text.shape[1] + 4, 64) and torch.equal(styled[:, :text.shape[1]], text)
    full = session.execute(_graph(strength=1.0)).outputs["8"].CONDITIONING.entries[0].cross_attn
    assert torch.allclose(styled[:, text.shape[1]:], full[:, text.shape[1]:] * 0.5)
    bias = session.execute(_graph(strength=0.5, strength_type="attn_bias")).outputs["8"].CONDITIONING
    assert torch.equal(bias.entries[0].cross_attn, full)  # no attention mask in SD: the tokens as they are
    plain = _graph()
    plain["10"]["inputs"]["positive"] = ["2", 0]
    pixels = [np.asarray(Image.open(session.execute(g).outputs["12"].files[0])).astype(int) for g in (plain, _graph())]
    assert np.abs(pixels[0] - pixels[1]).max() > 5


def test_redux_files_are_refused_by_name(style_models):
    with pytest.raises(NodeExecutionError, match="Flux Redux"):
        _session(style_models).execute(_graph(style_model="redux.safetensors"))
