"""LoraLoader on SD1.5 (kohya LoRA/LoCon incl. text encoder) and SDXL (LyCORIS LoHa/LoKr), and
textual-inversion embeddings."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from engine import Session, Settings
from nodes.sd.lora import clip_key_map, matched, patched, read_adapters, unet_key_map
from nodes.sd.models import LoraPatch


def graph(checkpoint="tiny_sd15.safetensors", lora=None, strengths=(1.0, 1.0), text="a photo of a red cat"):
    g = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "seed": 1, "steps": 3, "cfg": 6.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                                                   "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    if lora:
        g["10"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": lora,
                                                          "strength_model": strengths[0], "strength_clip": strengths[1]}}
        g["3"]["inputs"]["model"] = ["10", 0]
        g["6"]["inputs"]["clip"] = g["7"]["inputs"]["clip"] = ["10", 1]
    return g


def image(session, g):
    from PIL import Image

    result = session.execute(g)
    return np.asarray(Image.open(result.files[0])).astype(int)


@pytest.fixture
def session(tiny_models, tmp_path):
    # no output cache: every run really samples, with the models the store keeps between runs
    return Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path, device="cpu"), cache=False)


@pytest.mark.parametrize("checkpoint, lora", [("tiny_sd15.safetensors", "tiny_sd15_kohya.safetensors"),
                                              ("tiny_sdxl.safetensors", "tiny_sdxl_lycoris.safetensors")])
def test_lora_changes_the_image_and_the_cached_models_come_back_bit_exact(session, checkpoint, lora, caplog):
    before = image(session, graph(checkpoint))
    with caplog.at_level(logging.WARNING):
        with_lora = image(session, graph(checkpoint, lora))
    assert "not applied" not in caplog.text  # every layer of the tiny files finds its weight
    assert np.abs(with_lora - before).max() > 10
    assert np.array_equal(image(session, graph(checkpoint)), before)
    assert np.array_equal(image(session, graph(checkpoint, lora, (0.0, 0.0))), before)


def test_every_layer_of_the_tiny_loras_finds_its_weight(session, tiny_models):
    from nodes.sd.models import TextEncoders

    from .test_sd_models import _handle

    for checkpoint, lora in [("tiny_sd15", "tiny_sd15_kohya"), ("tiny_sdxl", "tiny_sdxl_lycoris")]:
        unet = _handle(tiny_models / "checkpoints" / f"{checkpoint}.safetensors").load()
        keys = set(unet_key_map(unet))
        clip = TextEncoders.of_checkpoint(str(tiny_models / "checkpoints" / f"{checkpoint}.safetensors"), "sd1", "cpu")
        keys |= set(clip_key_map(clip.towers[0].load(), "l", "sd1")) if checkpoint == "tiny_sd15" else set()
        adapters = read_adapters(str(tiny_models / "loras" / f"{lora}.safetensors"))
        assert set(adapters) <= keys, sorted(set(adapters) - keys)[:3]


def test_patches_follow_the_reference_formulas_and_undo_exactly(tiny_models):
    from .test_sd_models import _handle

    unet = _handle(tiny_models / "checkpoints" / "tiny_sd15.safetensors").load()
    original = {k: v.clone() for k, v in unet.state_dict().items()}
    path = str(tiny_models / "loras" / "tiny_sd15_kohya.safetensors")
    changes = matched(unet_key_map(unet), (LoraPatch(path, 0.7),))
    with patched(unet, changes):
        for module_name, adapter, strength in changes:
            up, down, alpha = (adapter.parts[k].float() for k in ("up", "down", "alpha"))
            expected = original[module_name + ".weight"] + strength * (alpha / down.shape[0]) * \
                (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:])
            assert torch.allclose(unet.get_submodule(module_name).weight, expected, atol=1e-6)
    assert all(torch.equal(v, original[k]) for k, v in unet.state_dict().items())


def test_loha_and_lokr_deltas():
    from nodes.sd.lora import Adapter

    g = torch.Generator().manual_seed(0)
    w1a, w1b, w2a, w2b = (torch.randn(s, generator=g) for s in [(6, 2), (2, 4), (6, 2), (2, 4)])
    loha = Adapter({"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b, "alpha": torch.tensor(1.0)})
    assert torch.allclose(loha.delta((6, 4)), (w1a @ w1b) * (w2a @ w2b) / 2)
    k1, k2a, k2b = torch.randn(2, 2, generator=g), torch.randn(3, 1, generator=g), torch.randn(1, 2, generator=g)
    lokr = Adapter({"lokr_w1": k1, "lokr_w2_a": k2a, "lokr_w2_b": k2b, "alpha": torch.tensor(3.0)})
    assert torch.allclose(lokr.delta((6, 4)), torch.kron(k1, k2a @ k2b) * 3.0)


def test_dora_magnitudes_follow_the_weight_decomposition():
    """DoRA with a per-column magnitude (LyCORIS' default) is the paper's W' = m·(W+ΔW)/‖W+ΔW‖_c;
    with a per-row one ComfyUI divides by the row norm of the unpatched W. Strength blends."""
    from nodes.sd.lora import Adapter

    g = torch.Generator().manual_seed(3)
    weight = torch.randn(6, 4, generator=g)
    up, down = torch.randn(6, 2, generator=g), torch.randn(2, 4, generator=g)
    delta = up @ down * (1.0 / 2)
    columns = torch.rand(1, 4, generator=g) + 0.5
    per_column = Adapter({"up": up, "down": down, "alpha": torch.tensor(1.0), "dora_scale": columns})
    combined = weight + delta
    expected = columns * combined / combined.norm(dim=0, keepdim=True)
    assert torch.allclose(per_column.applied(weight, 1.0), expected, atol=1e-6)
    assert torch.allclose(per_column.applied(weight, 0.4), weight + 0.4 * (expected - weight), atol=1e-6)
    rows = torch.rand(6, 1, generator=g) + 0.5
    per_row = Adapter({"up": up, "down": down, "alpha": torch.tensor(1.0), "dora_scale": rows})
    assert torch.allclose(per_row.applied(weight, 1.0), rows * combined / weight.norm(dim=1, keepdim=True), atol=1e-6)


def test_a_dora_lora_patches_the_unet_and_undoes_exactly(tiny_models, tmp_path):
    from safetensors.torch import save_file

    from .test_sd_models import _handle

    unet = _handle(tiny_models / "checkpoints" / "tiny_sd15.safetensors").load()
    original = {k: v.clone() for k, v in unet.state_dict().items()}
    target = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    weight = unet.get_submodule(target).weight.detach().float().clone()
    g = torch.Generator().manual_seed(4)
    parts = {"lora_down.weight": torch.randn(2, weight.shape[1], generator=g) * 0.1,
             "lora_up.weight": torch.randn(weight.shape[0], 2, generator=g) * 0.1, "alpha": torch.tensor(2.0),
             "dora_scale": weight.norm(dim=0, keepdim=True) * 1.5}
    prefix = "lora_unet_" + target.replace(".", "_")
    save_file({f"{prefix}.{k}": v.half() for k, v in parts.items()}, str(tmp_path / "dora.safetensors"))
    changes = matched(unet_key_map(unet), (LoraPatch(str(tmp_path / "dora.safetensors"), 1.0),))
    assert [name for name, _, _ in changes] == [target]
    with patched(unet, changes):
        patched_weight = unet.get_submodule(target).weight.float()
        # the magnitude was 1.5× the column norms: each column of W + ΔW comes out 1.5× its old norm
        scale = patched_weight.norm(dim=0) / weight.norm(dim=0)
        assert torch.allclose(scale, torch.full_like(scale, 1.5), atol=2e-3)
    assert all(torch.equal(v, original[k]) for k, v in unet.state_dict().items())


def test_peft_unet_names_are_skipped_as_comfyui_skips_them(tiny_models, tmp_path, caplog):
    from safetensors.torch import save_file

    from .test_sd_models import _handle

    unet = _handle(tiny_models / "checkpoints" / "tiny_sd15.safetensors").load()
    q = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    save_file({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.ones(2, q.in_features),
               "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.ones(q.out_features, 2)},
              str(tmp_path / "peft.safetensors"))
    with caplog.at_level(logging.WARNING):
        changes = matched(unet_key_map(unet), (LoraPatch(str(tmp_path / "peft.safetensors"), 1.0),))
    assert changes == [] and "not applied" in caplog.text


def test_embedding_vectors_stand_in_for_tokens(session, tiny_models, caplog):
    from nodes.sd.clip_text import EOS, Embeddings, encode_rows, pack_rows, tokenize
    from nodes.sd.models import TextEncoders

    embeddings = Embeddings([tiny_models / "embeddings"]).for_tower("l", 64)
    groups = tokenize("a cat, embedding:tiny_style, in snow", embeddings)
    vectors = [t for g in groups for t in g if t.vector is not None]
    assert len(vectors) == 2
    stored = torch.load(tiny_models / "embeddings" / "tiny_style.pt", weights_only=True)["string_to_param"]["*"]
    assert torch.equal(vectors[1].vector, stored[1])
    with caplog.at_level(logging.WARNING):
        missing = tokenize("a cat embedding:nope", embeddings)
    assert "nope does not exist" in caplog.text and all(t.vector is None for g in missing for t in g)
    model = TextEncoders.of_checkpoint(str(tiny_models / "checkpoints" / "tiny_sd15.safetensors"), "sd1", "cpu").towers[0].load()
    with_embedding, _ = encode_rows(model, pack_rows(groups, EOS), layer=None, final_norm_on_hidden=True,
                                    projected_pool=False, pad_token=EOS)
    plain, _ = encode_rows(model, pack_rows(tokenize("a cat, in snow"), EOS), layer=None, final_norm_on_hidden=True,
                           projected_pool=False, pad_token=EOS)
    assert not torch.allclose(with_embedding, plain)
    # wrong width (the SDXL file's clip_g is 128 wide) is dropped, not mis-applied
    assert Embeddings([tiny_models / "embeddings"]).for_tower("g", 64).lookup("tiny_sdxl_style")[0] is None
    image(session, graph(text="a cat, embedding:tiny_style"))  # runs through the node too
