"""GLIGENLoader and GLIGENTextBoxApply on the tiny SD1.5."""
from __future__ import annotations

import numpy as np
import torch

from engine import Session, Settings
from nodes.sd.gligen import MAX_OBJECTS, Gligen, fusers_lent, grounding, transformer_blocks

TINY = "tiny_gligen_sd15.safetensors"


def test_the_file_gives_a_fuser_per_transformer_block_in_the_unets_order(tiny_models):
    from .test_sd_models import _handle

    model = Gligen(str(tiny_models / "gligen" / TINY), "cpu").load()
    unet = _handle(tiny_models / "checkpoints" / "tiny_sd15.safetensors").load()
    blocks = transformer_blocks(unet)
    assert [f.linear.weight.shape[0] for f in model["fusers"]] == [b.attn1.query_dim for b in blocks] == [32, 64, 32, 32]
    # ComfyUI's head rule: 8 heads for SD1.x's 768-wide text, 64-wide heads otherwise (here 1)
    assert all(f.attn.heads == 1 for f in model["fusers"]) and model["position_net"].positive_len == 64


def test_boxes_become_corner_fractions_padded_to_thirty_slots():
    pooled = torch.arange(4.0).reshape(1, 4)
    args = grounding(((pooled, 2, 4, 1, 3), (pooled * 2, 8, 8, 0, 0)), 8, 16, batch=3, key_dim=4, device="cpu")
    assert args["boxes"].shape == (3, MAX_OBJECTS, 4) and args["masks"][0].tolist() == [1, 1] + [0] * 28
    assert args["boxes"][0, 0].tolist() == [3 / 16, 1 / 8, 7 / 16, 3 / 8]
    assert torch.equal(args["positive_embeddings"][2, 1], pooled[0] * 2) and args["positive_embeddings"][0, 2].eq(0).all()


def test_lent_fusers_run_as_in_diffusers_own_gated_unet(tiny_models):
    """A diffusers UNet built with gated attention, carrying the same fusers (ComfyUI's head
    count, not the UNet's) and position net, gives the same prediction as the plain UNet with
    them lent for the call: the fusers sit in the same blocks, in the same order."""
    from diffusers import UNet2DConditionModel

    from .test_sd_models import _handle

    plain = _handle(tiny_models / "checkpoints" / "tiny_sd15.safetensors").load()
    model = Gligen(str(tiny_models / "gligen" / TINY), "cpu").load()
    gated = UNet2DConditionModel(**{**dict(plain.config), "attention_type": "gated"})
    missing, unexpected = gated.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(".fuser." in k or k.startswith("position_net.") for k in missing)
    for block, fuser in zip(transformer_blocks(gated), model["fusers"]):
        block.fuser = fuser
    gated.position_net.load_state_dict(model["position_net"].state_dict())
    gated.eval()
    pooled = torch.randn([1, 64], generator=torch.Generator().manual_seed(0))
    args = grounding(((pooled, 4, 4, 2, 2),), 8, 8, batch=1, key_dim=64, device="cpu")
    inputs = dict(sample=torch.randn([1, 4, 8, 8]), timestep=torch.tensor([400.0]),
                  encoder_hidden_states=torch.randn([1, 77, 64]), return_dict=False)
    with torch.no_grad():
        theirs = gated(**inputs, cross_attention_kwargs={"gligen": args})[0]
        with fusers_lent(plain, model):
            ours = plain(**inputs, cross_attention_kwargs={"gligen": args})[0]
        without = plain(**inputs)[0]
    assert torch.equal(ours, theirs) and (ours - without).abs().max() > 1e-3
    assert not hasattr(plain, "position_net") and not hasattr(transformer_blocks(plain)[0], "fuser")


def test_a_text_box_steers_a_workflow(tiny_models, tmp_path):
    from PIL import Image

    def graph(boxed: bool):
        nodes = {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a field", "clip": ["1", 1]}},
            "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
            "4": {"class_type": "GLIGENLoader", "inputs": {"gligen_name": TINY}},
            "5": {"class_type": "GLIGENTextBoxApply", "inputs": {"conditioning_to": ["2", 0], "clip": ["1", 1],
                                                                 "gligen_textbox_model": ["4", 0], "text": "a red car",
                                                                 "width": 32, "height": 24, "x": 8, "y": 16}},
            "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "7": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 1, "steps": 3, "cfg": 5.0,
                                                       "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                                                       "positive": ["5" if boxed else "2", 0], "negative": ["3", 0],
                                                       "latent_image": ["6", 0]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
            "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
        }
        return nodes

    session = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path, device="cpu"))

    def pixels(boxed):
        result = session.execute(graph(boxed))
        assert result.status == "ok", result.errors
        return np.asarray(Image.open(result.files[0])).astype(int)

    assert np.abs(pixels(True) - pixels(False)).max() > 10


def test_a_gligen_model_for_another_unet_is_refused_on_its_loader(tiny_models, tmp_path):
    import pytest

    from engine.errors import NodeExecutionError

    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sdxl.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a field", "clip": ["1", 1]}},
        "4": {"class_type": "GLIGENLoader", "inputs": {"gligen_name": TINY}},
        "5": {"class_type": "GLIGENTextBoxApply", "inputs": {"conditioning_to": ["2", 0], "clip": ["1", 1],
                                                             "gligen_textbox_model": ["4", 0], "text": "a car",
                                                             "width": 32, "height": 32, "x": 0, "y": 0}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 1, "steps": 2, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                                                   "positive": ["5", 0], "negative": ["2", 0], "latent_image": ["6", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    session = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path, device="cpu"))
    with pytest.raises(NodeExecutionError, match="is a GLIGEN model for a UNet") as refused:
        session.execute(graph)
    assert (refused.value.error.node_id, refused.value.error.input) == ("4", "gligen_name")
