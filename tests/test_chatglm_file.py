"""LoadChatGLM3: ChatGLM3 from one file (fp16, or stored quantized to 8 / 4 bits, ChatGLM's form)."""
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine import Session, Settings
from engine.errors import ValidationFailed
from nodes.kolors.chatglm_file import chatglm_layout, load_chatglm_file
from nodes.kolors.full_size import CHATGLM3_6B_CONFIG
from nodes.kolors.quant import QuantizedLinear
from nodes.kolors.tiny import TEXT_ENCODER_CONFIG

from .kolors_graphs import txt2img

LAYOUT_KEYS = ("num_layers", "hidden_size", "ffn_hidden_size", "kv_channels", "num_attention_heads",
               "multi_query_group_num", "padded_vocab_size")


def file_graph(checkpoint, **inputs):
    graph = txt2img(steps=1)
    graph["13"] = {"class_type": "LoadChatGLM3", "inputs": {"chatglm3_checkpoint": checkpoint, **inputs}}
    return graph


def prompt_embeds(session, graph):
    return session.execute(graph).outputs["12"].kolors_embeds.prompt_embeds


@pytest.fixture
def session(tiny_models, tmp_path):
    return Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path, device="cpu"))


def test_layout_is_read_off_the_shapes_of_chatglm3_6b_and_of_the_tiny_model(tiny_models):
    from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig, ChatGLMModel

    with torch.device("meta"):
        full = ChatGLMModel(ChatGLMConfig(**CHATGLM3_6B_CONFIG))
    config, bits = chatglm_layout({k: tuple(v.shape) for k, v in full.state_dict().items()}, "6b")
    assert bits is None and {k: config[k] for k in LAYOUT_KEYS} == {k: CHATGLM3_6B_CONFIG[k] for k in LAYOUT_KEYS}
    for name, stored in (("fp16", None), ("8bit", 8), ("4bit", 4)):
        state = load_file(tiny_models / "LLM" / "checkpoints" / f"chatglm3-{name}.safetensors")
        config, bits = chatglm_layout({k: tuple(v.shape) for k, v in state.items()}, name)
        assert bits == stored
        assert {k: config[k] for k in LAYOUT_KEYS} == {k: TEXT_ENCODER_CONFIG[k] for k in LAYOUT_KEYS}


def test_fp16_file_encodes_exactly_as_the_kolors_text_encoder_folder(session):
    folder = prompt_embeds(session, txt2img(steps=1))
    assert torch.equal(prompt_embeds(session, file_graph("chatglm3-fp16.safetensors")), folder)


def test_stored_quantized_files_load_as_stored_and_encode_as_quantizing_on_load(session, tiny_models):
    files = tiny_models / "LLM" / "checkpoints"
    reference = load_chatglm_file(str(files / "chatglm3-fp16.safetensors"), torch.float32, "cpu")
    fp16 = prompt_embeds(session, txt2img(steps=1))
    for bits in (8, 4):
        stored = load_file(files / f"chatglm3-{bits}bit.safetensors")
        model = load_chatglm_file(str(files / f"chatglm3-{bits}bit.safetensors"), torch.float32, "cpu")
        qkv = model.encoder.layers[0].self_attention.query_key_value
        assert isinstance(qkv, QuantizedLinear) and qkv.bits == bits
        assert torch.equal(qkv.weight, stored["encoder.layers.0.self_attention.query_key_value.weight"])
        # Every weight dequantizes to within about half a step of the fp16 one (the scale is stored
        # rounded to fp16): the int4 nibbles are unpacked in the order they were packed.
        for layer, original in zip(model.encoder.layers, reference.encoder.layers):
            for name in ("query_key_value", "dense"):
                q, w = getattr(layer.self_attention, name), getattr(original.self_attention, name).weight
                error = (q.dequantized(torch.float32) - w).abs()
                assert (error <= q.weight_scale.float()[:, None] * 0.6).all()
        from_file = prompt_embeds(session, file_graph(f"chatglm3-{bits}bit.safetensors"))
        on_load = prompt_embeds(session, file_graph("chatglm3-fp16.safetensors", precision=f"quant{bits}"))
        quantization = (on_load - fp16).norm()
        assert quantization > 0 and (from_file - on_load).norm() < quantization / 10


def test_a_file_saved_with_the_transformer_prefix_loads_too(session, tiny_models, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models, copy_function=os.link)
    state = load_file(models / "LLM" / "checkpoints" / "chatglm3-fp16.safetensors")
    save_file({f"transformer.{k}": v for k, v in state.items() if "inv_freq" not in k},
              str(models / "LLM" / "checkpoints" / "prefixed.safetensors"))
    other = Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu"))
    assert torch.equal(prompt_embeds(other, file_graph("prefixed.safetensors")),
                       prompt_embeds(session, txt2img(steps=1)))


def test_bad_file_and_missing_tokenizer_are_reported_on_the_loader(tiny_models, tmp_path, monkeypatch):
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models, copy_function=os.link)
    shutil.copy(models / "vae" / "sdxl.vae.safetensors", models / "LLM" / "checkpoints" / "not-chatglm.safetensors")
    session = Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu"))
    with pytest.raises(ValidationFailed) as failed:
        session.execute(file_graph("not-chatglm.safetensors"))
    [error] = failed.value.errors
    assert (error.node_id, error.input) == ("13", "chatglm3_checkpoint") and "not a ChatGLM3" in error.message

    shutil.rmtree(models / "diffusers" / "Kolors" / "text_encoder")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValidationFailed) as failed:
        session.execute(file_graph("chatglm3-fp16.safetensors"))
    assert any(e.node_id == "13" and "tokenizer" in e.message and "HF_HUB_OFFLINE" in e.message
               for e in failed.value.errors)
    # A tokenizer beside the file is found there.
    shutil.copytree(tiny_models / "diffusers" / "Kolors" / "text_encoder", models / "LLM" / "checkpoints" / "tokenizer")
    session.execute(file_graph("chatglm3-fp16.safetensors"))


def test_precision_asked_of_a_stored_quantized_file_is_a_warning(session):
    result = session.execute(file_graph("chatglm3-8bit.safetensors", precision="quant4"))
    assert any(w.node_id == "13" and "stored quantized to 8 bits" in w.message for w in result.warnings)
    assert not session.execute(file_graph("chatglm3-8bit.safetensors")).warnings
