"""SD1.5/SDXL checkpoints: conversion round trips, detection, CLIP prompt handling, and the whole
KSampler path side by side with diffusers' own pipelines on the same modules."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from nodes.core.ldm_keys import hf_clip_to_open_clip, open_clip_to_hf_clip, to_ldm, unet_ldm_names
from nodes.core.state_files import CheckpointFile
from nodes.sd.checkpoint import detect
from nodes.sd.clip_text import BOS, EOS, encode_rows, pack_rows, tokenize
from nodes.sd.models import DiffusionModel, TextEncoders
from nodes.sd.prompt_weights import weighted_segments
from nodes.sd.tiny import CLIP_G, SD15_UNET, SDXL_UNET


def _handle(path) -> DiffusionModel:
    info = detect(CheckpointFile(path))
    return DiffusionModel(str(path), info.family.name, info.unet_prefix, json.dumps(info.unet_config), info.prediction,
                          "cpu")


# the SDXL refiner's shape: attention only on the middle levels, a deeper middle block
REFINER_SHAPED = {"sample_size": 8, "block_out_channels": [32, 32, 64, 64], "layers_per_block": 1,
                  "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                  "cross_attention_dim": 64, "attention_head_dim": 8, "transformer_layers_per_block": 3}


@pytest.mark.parametrize("config", [SD15_UNET, SDXL_UNET, REFINER_SHAPED], ids=["sd15", "sdxl", "refiner-shaped"])
def test_unet_survives_our_ldm_names_and_diffusers_converter_bit_for_bit(config, tmp_path):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from nodes.sd.tiny import CLIP_L, _clip

    torch.manual_seed(0)
    original = UNet2DConditionModel(**config)
    state = {"model.diffusion_model." + k: v for k, v in to_ldm(original.state_dict(), unet_ldm_names(original.config)).items()}
    # a text encoder tells the family; SDXL's needs the bigG tower as well
    state |= {"cond_stage_model.transformer." + k: v for k, v in _clip(CLIP_L, torch.Generator(), False).items()} \
        if "addition_embed_type" not in config else \
        {"conditioner.embedders.1.model." + k: v for k, v in hf_clip_to_open_clip(_clip(CLIP_G, torch.Generator(), True)).items()}
    save_file(state, str(tmp_path / "c.safetensors"))
    loaded = _handle(tmp_path / "c.safetensors").load()
    theirs, ours = original.state_dict(), loaded.state_dict()
    assert theirs.keys() == ours.keys()
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)


def test_open_clip_names_convert_as_diffusers_converts_them():
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from nodes.sd.tiny import _clip

    hf = _clip(CLIP_G, torch.Generator().manual_seed(1), True)
    stored = {"conditioner.embedders.1.model." + k: v for k, v in hf_clip_to_open_clip(hf).items()}
    model = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **CLIP_G))
    expected = convert_open_clip_checkpoint(model, stored, prefix="conditioner.embedders.1.model.")
    ours = open_clip_to_hf_clip({k.removeprefix("conditioner.embedders.1.model."): v for k, v in stored.items()})
    expected.pop("text_model.embeddings.position_ids", None)
    assert ours.keys() == expected.keys()
    assert all(torch.equal(ours[k], expected[k]) for k in ours)


def test_detection(tiny_models, tmp_path):
    from safetensors.torch import save_file

    sd15 = detect(CheckpointFile(tiny_models / "checkpoints" / "tiny_sd15.safetensors"))
    sdxl = detect(CheckpointFile(tiny_models / "checkpoints" / "tiny_sdxl.safetensors"))
    assert (sd15.family.name, sd15.prediction, sd15.unet_config["cross_attention_dim"]) == ("sd1", "eps", 64)
    assert (sdxl.family.name, sdxl.unet_config["projection_class_embeddings_input_dim"]) == ("sdxl", 128 + 1536)
    # level 0 has no attention; it carries the middle block's depth, as diffusers reads it
    assert sdxl.unet_config["transformer_layers_per_block"] == [2, 2]
    save_file({"decoder.conv_in.weight": torch.zeros(4, 4, 3, 3)}, str(tmp_path / "vae.safetensors"))
    from engine import ModelLoadError

    with pytest.raises(ModelLoadError, match="not a checkpoint run-graph knows"):
        detect(CheckpointFile(tmp_path / "vae.safetensors"))


@pytest.mark.parametrize("prompt, expected", [
    ("a (cat:1.3) on ((a mat))", [("a ", 1.0), ("cat", 1.3), (" on ", 1.0), ("a mat", pytest.approx(1.21))]),
    ("((a:1.5))", [("a", 1.5)]),
    ("(unclosed", [("(unclosed", 1.0)]),
    ("a (b:c) d", [("a ", 1.0), ("b:c", pytest.approx(1.1)), (" d", 1.0)]),
    ("[x] BREAK \\(lit\\)", [("[x] BREAK (lit)", 1.0)]),
])
def test_prompt_weights(prompt, expected):
    assert weighted_segments(prompt) == expected


def test_rows_hold_75_tokens_and_short_pieces_move_whole_to_the_next_row():
    long_piece = tokenize("word " * 80)
    rows = pack_rows(long_piece, pad_token=EOS)
    assert [len(r) for r in rows] == [77, 77] and rows[0][0].id == BOS and rows[0][76].id == EOS
    assert sum(t.id not in (BOS, EOS) for t in rows[0]) == 75  # split at the boundary: ≥ 8 tokens
    # 70 tokens at weight 1, then a 7-token piece at another weight: it moves whole
    groups = tokenize("word " * 70 + "(a b c d e f g:1.2)")
    rows = pack_rows(groups, pad_token=0)
    assert len(rows) == 2 and rows[0][71].id == EOS and rows[0][72].id == 0
    assert [t.weight for t in rows[1][1:8]] == [1.2] * 7
    assert pack_rows(tokenize(""), 0)[0][:3] == pack_rows([], 0)[0][:3]


def test_weights_lerp_from_the_empty_prompt_encoding(tiny_models):

    clip = TextEncoders.of_checkpoint(str(tiny_models / "checkpoints" / "tiny_sd15.safetensors"), "sd1", "cpu")
    model = clip.towers[0].load()
    kwargs = dict(layer=None, final_norm_on_hidden=True, projected_pool=False, pad_token=EOS)
    plain, _ = encode_rows(model, pack_rows(tokenize("a red cat"), EOS), **kwargs)
    weighted, _ = encode_rows(model, pack_rows(tokenize("a (red:1.5) cat"), EOS), **kwargs)
    empty, _ = encode_rows(model, pack_rows([], EOS), **kwargs)
    expected = plain.clone()
    expected[0, 2] = (plain[0, 2] - empty[0, 2]) * 1.5 + empty[0, 2]
    assert torch.allclose(weighted, expected, atol=1e-6)
    unit, _ = encode_rows(model, pack_rows(tokenize("a (red:1.0) cat"), EOS), **kwargs)
    assert torch.equal(unit, plain)


def test_sdxl_reads_the_penultimate_layer_without_the_final_norm(tiny_models):
    clip = TextEncoders.of_checkpoint(str(tiny_models / "checkpoints" / "tiny_sdxl.safetensors"), "sdxl", "cpu")
    model = clip.towers[1].load()
    rows = pack_rows(tokenize("a red cat"), 0)
    hidden, pooled = encode_rows(model, rows, layer=-2, final_norm_on_hidden=False, projected_pool=True, pad_token=0)
    ids = torch.tensor([[t.id for t in rows[0]]])
    out = model(input_ids=ids, output_hidden_states=True)
    assert torch.allclose(hidden, out.hidden_states[-2], atol=1e-6)
    first_eos = int((ids[0] == EOS).nonzero()[0])
    expected_pool = model.text_projection(model.text_model.final_layer_norm(out.last_hidden_state)[0, first_eos])
    assert torch.allclose(pooled[0], expected_pool, atol=1e-5)


def _graph(checkpoint: str, sampler: str, scheduler: str, cfg: float, *, width=64, height=64, batch=1):
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a red cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "seed": 42, "steps": 6, "cfg": cfg,
                                                   "sampler_name": sampler, "scheduler": scheduler, "denoise": 1.0,
                                                   "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }


def _pipeline_parts(path, family_name):
    from nodes.core.vae import VAE

    unet = _handle(path).load()
    clip = TextEncoders.of_checkpoint(str(path), family_name, "cpu")
    towers = [tower.load() for tower in clip.towers]
    vae = VAE(str(path), "cpu", "first_stage_model.").load()
    return unet, towers, vae


def _dpmpp_2m_karras():
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
                                       use_karras_sigmas=True, lower_order_final=True, final_sigmas_type="zero")


def _run_graph_image(tiny_models, tmp_path, graph):
    import numpy as np
    from PIL import Image

    from engine import Session, Settings

    result = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path, device="cpu")).execute(graph)
    assert result.status == "ok", result.errors
    return np.asarray(Image.open(result.files[0])).astype(int)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_ksampler_txt2img_matches_the_diffusers_pipeline_on_the_same_weights(family, tiny_models, tmp_path):
    """dpmpp_2m + karras is the pair diffusers reproduces exactly (reference §4): same σ, nearest
    integer timesteps, VP start x_T = n ≡ ComfyUI's √(1+σ²)·n. The text goes through diffusers'
    own tokenizer and encoders, so prompt handling is checked too."""
    import numpy as np
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from nodes.sampling.noise import initial_noise
    from nodes.sd.clip_text import clip_tokenizer

    path = tiny_models / "checkpoints" / f"tiny_{family}.safetensors"
    ours = _run_graph_image(tiny_models, tmp_path, _graph(path.name, "dpmpp_2m", "karras", 7.0))
    unet, towers, vae = _pipeline_parts(path, "sd1" if family == "sd15" else "sdxl")
    tokenizer = clip_tokenizer()
    if family == "sd15":
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=towers[0], tokenizer=tokenizer, unet=unet,
                                       scheduler=_dpmpp_2m_karras(), safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    else:
        import copy

        tokenizer_2 = copy.deepcopy(tokenizer)
        tokenizer_2.pad_token = "!"  # id 0: OpenCLIP pads with 0, as ComfyUI does
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=towers[0], text_encoder_2=towers[1], tokenizer=tokenizer,
                                         tokenizer_2=tokenizer_2, unet=unet, scheduler=_dpmpp_2m_karras(),
                                         force_zeros_for_empty_prompt=False)
    vae.config.scaling_factor = 0.18215 if family == "sd15" else 0.13025
    noise = initial_noise([1, 4, 8, 8], 42)
    image = pipe("a photo of a red cat", negative_prompt="blurry", num_inference_steps=6, guidance_scale=7.0,
                 height=64, width=64, latents=noise, output_type="np").images[0]
    theirs = np.clip(255.0 * image, 0, 255).astype(int)  # ComfyUI truncates when saving
    assert np.abs(ours - theirs).max() <= 1


def test_separate_part_files_give_the_checkpoints_image(tiny_models, tmp_path):
    """UNETLoader + DualCLIPLoader (files in either order) + VAELoader on the SDXL checkpoint's
    parts sample exactly what CheckpointLoaderSimple does; CLIPLoader picks CLIP-L for SD1.x."""
    import numpy as np

    whole = _run_graph_image(tiny_models, tmp_path / "a", _graph("tiny_sdxl.safetensors", "euler", "normal", 5.0))
    parts = _graph("tiny_sdxl.safetensors", "euler", "normal", 5.0)
    parts["4"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_sdxl_unet.safetensors", "weight_dtype": "default"}}
    parts["1"] = {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "tiny_clip_g.safetensors",
                                                             "clip_name2": "tiny_clip_l.safetensors", "type": "sdxl"}}
    parts["2"] = {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_sdxl_vae.safetensors"}}
    parts["6"]["inputs"]["clip"] = parts["7"]["inputs"]["clip"] = ["1", 0]
    parts["8"]["inputs"]["vae"] = ["2", 0]
    assert np.array_equal(_run_graph_image(tiny_models, tmp_path / "b", parts), whole)
    fp8 = json.loads(json.dumps(parts))
    fp8["4"]["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    assert not np.array_equal(_run_graph_image(tiny_models, tmp_path / "c", fp8), whole)


@pytest.mark.parametrize("checkpoint", ["tiny_sdxl", "tiny_sd2_v"])
def test_a_diffusers_format_unet_file_loads_as_its_checkpoint_does(checkpoint, tiny_models, tmp_path):
    """UNETLoader on `diffusion_pytorch_model.safetensors` names (a UNet saved by diffusers):
    same family, config and prediction type (SD2-v read through the LDM view), same image."""
    import shutil

    import numpy as np
    from safetensors.torch import save_file

    from nodes.sd.part_loaders import unet_handle

    path = tiny_models / "checkpoints" / f"{checkpoint}.safetensors"
    reference = _handle(path)
    unet = reference.load()
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models, copy_function=os.link)
    diffusers_file = models / "unet" / f"{checkpoint}_diffusers.safetensors"
    diffusers_file.parent.mkdir(exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in unet.state_dict().items()}, str(diffusers_file))
    handle = unet_handle(diffusers_file, "cpu")
    assert (handle.layout, handle.family_name, handle.prediction) == ("diffusers", reference.family_name,
                                                                     reference.prediction)
    assert json.loads(handle.unet_config_json) == json.loads(reference.unet_config_json)
    if checkpoint == "tiny_sdxl":
        graph = _graph("tiny_sdxl.safetensors", "euler", "normal", 5.0)
        whole = _run_graph_image(models, tmp_path / "a", graph)
        graph["41"] = graph["4"]  # text encoders and VAE still from the checkpoint
        graph["4"] = {"class_type": "UNETLoader", "inputs": {"unet_name": diffusers_file.name, "weight_dtype": "default"}}
        graph["6"]["inputs"]["clip"] = graph["7"]["inputs"]["clip"] = ["41", 1]
        graph["8"]["inputs"]["vae"] = ["41", 2]
        assert np.array_equal(_run_graph_image(models, tmp_path / "b", graph), whole)


def test_a_diffusers_unet_of_another_family_is_refused_by_name(tiny_models):
    from engine import ModelLoadError
    from nodes.sd.part_loaders import unet_handle

    kolors = tiny_models / "diffusers" / "Kolors" / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    with pytest.raises(ModelLoadError, match="no SD/SDXL UNet has .*encoder_hid_proj"):
        unet_handle(kolors, "cpu")


def _save_pipeline(folder: Path, checkpoint: Path, family_name: str, variant: str | None) -> None:
    """The checkpoint's modules as diffusers' save_pretrained lays out a pipeline folder."""
    unet, towers, vae = _pipeline_parts(checkpoint, family_name)
    unet.save_pretrained(folder / "unet", variant=variant)
    vae.save_pretrained(folder / "vae", variant=variant)
    for part, tower in zip(("text_encoder", "text_encoder_2"), towers):
        tower.save_pretrained(folder / part, variant=variant)
    pipeline = "StableDiffusionXLPipeline" if len(towers) == 2 else "StableDiffusionPipeline"
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))


@pytest.mark.parametrize("family,variant", [("sd15", "fp16"), ("sdxl", None)])
def test_diffusers_loader_runs_a_saved_pipeline_as_its_checkpoint(family, variant, tiny_models, tmp_path):
    """DiffusersLoader on a folder written by save_pretrained (`.fp16` variant files for SD1.5):
    the same UNet, text encoders and VAE, so the same image as CheckpointLoaderSimple's."""
    import shutil

    import numpy as np

    checkpoint = tiny_models / "checkpoints" / f"tiny_{family}.safetensors"
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models, copy_function=os.link)
    _save_pipeline(models / "diffusers" / "saved" / family, checkpoint, detect(CheckpointFile(checkpoint)).family.name,
                   variant)
    graph = _graph(checkpoint.name, "euler", "normal", 5.0)
    whole = _run_graph_image(models, tmp_path / "a", graph)
    graph["4"] = {"class_type": "DiffusersLoader", "inputs": {"model_path": f"saved/{family}"}}
    assert np.array_equal(_run_graph_image(models, tmp_path / "b", graph), whole)


def test_diffusers_loader_errors_name_the_folder_and_the_part(tiny_models, tmp_path):
    import shutil

    from engine import Session, Settings

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models, copy_function=os.link)
    sd15 = tiny_models / "checkpoints" / "tiny_sd15.safetensors"
    _save_pipeline(models / "diffusers" / "mixed", sd15, "sd1", None)
    sdxl = models / "diffusers" / "sdxl_parts"
    _save_pipeline(sdxl, tiny_models / "checkpoints" / "tiny_sdxl.safetensors", "sdxl", None)
    shutil.rmtree(models / "diffusers" / "mixed" / "text_encoder")
    shutil.copytree(sdxl / "text_encoder", models / "diffusers" / "mixed" / "text_encoder")
    shutil.copytree(sdxl / "text_encoder_2", models / "diffusers" / "mixed" / "text_encoder_2")
    shutil.rmtree(sdxl / "vae")
    session = Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu"), cache=False)

    def error(model_path):
        graph = _graph("tiny_sd15.safetensors", "euler", "normal", 5.0)
        graph["4"] = {"class_type": "DiffusersLoader", "inputs": {"model_path": model_path}}
        result = session.execute(graph, raise_on_error=False)
        assert result.status == "invalid", result.errors  # bad input: exit code 2
        return " ".join(str(e) for e in result.errors)

    assert "text encoders are sdxl's but its UNet is sd1's" in error("mixed")
    assert "no vae weights" in error("sdxl_parts")
    assert "Kolors pipeline" in error("Kolors")
    assert "not among the choices ('Kolors', 'mixed', 'sdxl_parts')" in error("../checkpoints")


def test_clip_loader_types(tiny_models):
    from engine import ModelLoadError
    from nodes.sd.families import CLIP_G_REFINER, CLIP_L_SD1
    from nodes.sd.part_loaders import text_tower

    folder = tiny_models / "text_encoders"
    role = {"l": CLIP_L_SD1, "g": CLIP_G_REFINER}
    assert text_tower(folder / "tiny_clip_l.safetensors", "cpu", role).spec.name == "l"
    assert text_tower(folder / "tiny_clip_g.safetensors", "cpu", role).spec.name == "g"
    with pytest.raises(ModelLoadError, match="CLIP-G"):
        text_tower(folder / "tiny_clip_g.safetensors", "cpu", {"l": CLIP_L_SD1})


def test_sd2_v_prediction_and_openclip_h_match_diffusers(tiny_models, tmp_path):
    """SD2-v: the v parameterisation and CLIP-H's penultimate layer (with the final norm), which
    diffusers' SD2 gets by shipping the text encoder one layer short."""
    import copy

    import numpy as np
    from diffusers import StableDiffusionPipeline

    from nodes.sampling.noise import initial_noise
    from nodes.sd.clip_text import clip_tokenizer
    from nodes.sd.tiny import write_sd2

    path = tiny_models / "checkpoints" / "tiny_sd2_v.safetensors"
    info = detect(CheckpointFile(path))
    assert (info.family.name, info.prediction) == ("sd2", "v")
    eps = detect(CheckpointFile(write_sd2(tmp_path / "sd2_eps.safetensors", v_prediction=False)))
    assert eps.prediction == "eps"
    ours = _run_graph_image(tiny_models, tmp_path, _graph(path.name, "dpmpp_2m", "karras", 7.0))
    unet, towers, vae = _pipeline_parts(path, "sd2")
    short = copy.deepcopy(towers[0])
    short.encoder.layers = short.encoder.layers[:-1]
    short.config.num_hidden_layers -= 1
    tokenizer = copy.deepcopy(clip_tokenizer())
    tokenizer.pad_token = "!"  # OpenCLIP pads with 0
    scheduler = _dpmpp_2m_karras()
    scheduler.register_to_config(prediction_type="v_prediction")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=short, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    vae.config.scaling_factor = 0.18215
    image = pipe("a photo of a red cat", negative_prompt="blurry", num_inference_steps=6, guidance_scale=7.0,
                 height=64, width=64, latents=initial_noise([1, 4, 8, 8], 42), output_type="np").images[0]
    assert np.abs(ours - np.clip(255.0 * image, 0, 255).astype(int)).max() <= 1


def test_float8_checkpoints_upcast_exactly_and_pickles_load_without_running_code(tiny_models, tmp_path):
    from safetensors.torch import save_file

    from engine import ModelLoadError

    source = CheckpointFile(tiny_models / "checkpoints" / "tiny_sd15.safetensors").tensors("")
    mixed = {k: (v.to(torch.float8_e4m3fn) if k.startswith("model.diffusion_model.") and v.ndim >= 2 else v)
             for k, v in source.items()}
    save_file(mixed, str(tmp_path / "fp8.safetensors"))
    unet = _handle(tmp_path / "fp8.safetensors").load()
    reference = _handle(tiny_models / "checkpoints" / "tiny_sd15.safetensors").load()
    conv_in = mixed["model.diffusion_model.input_blocks.0.0.weight"].float()
    assert torch.equal(unet.conv_in.weight, conv_in)
    assert torch.equal(unet.conv_in.bias, reference.conv_in.bias)  # fp16 biases as stored
    torch.save({"state_dict": source, "global_step": 1}, tmp_path / "model.ckpt")
    from_pickle = _handle(tmp_path / "model.ckpt").load()
    assert all(torch.equal(a, b) for a, b in zip(from_pickle.state_dict().values(), reference.state_dict().values()))
    torch.save({"state_dict": source, "callback": print}, tmp_path / "evil.ckpt")
    with pytest.raises(ModelLoadError, match="not a plain tensor file"):
        CheckpointFile(tmp_path / "evil.ckpt")


def _inpainting_checkpoint(models: Path) -> None:
    """A tiny SD1.5 inpainting checkpoint: 9 UNet input channels."""
    from nodes.sd.tiny import CLIP_L, _clip, _save, _unet, _vae

    generator = torch.Generator().manual_seed(9)
    state = {"model.diffusion_model." + k: v for k, v in _unet({**SD15_UNET, "in_channels": 9}, generator).items()}
    state |= {"cond_stage_model.transformer." + k: v for k, v in _clip(CLIP_L, generator, False).items()}
    state |= {"first_stage_model." + k: v for k, v in _vae(generator).items()}
    _save(models / "checkpoints" / "inpaint.safetensors", state)


def test_an_sd15_inpainting_checkpoint_runs_with_its_mask_channels(tmp_path):
    """9 input channels: the UNet gets the rounded mask and the masked latent next to x."""
    import numpy as np
    from PIL import Image

    from engine import Session, Settings

    _inpainting_checkpoint(tmp_path / "models")
    examples = Path(__file__).resolve().parent.parent / "examples" / "input"
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "inpaint.safetensors"}},
        "1": {"class_type": "LoadImage", "inputs": {"image": "yosemite_inpaint_example.png"}},
        "2": {"class_type": "VAEEncodeForInpaint", "inputs": {"pixels": ["1", 0], "vae": ["4", 2], "mask": ["1", 1],
                                                             "grow_mask_by": 6}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "seed": 1, "steps": 3, "cfg": 5.0,
                                                   "sampler_name": "uni_pc_bh2", "scheduler": "normal", "denoise": 1.0,
                                                   "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["2", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    session = Session(settings=Settings(models_dir=tmp_path / "models", input_dir=examples, output_dir=tmp_path / "out",
                                        device="cpu"))
    result = session.execute(graph)
    assert result.status == "ok"
    assert np.asarray(Image.open(result.outputs["9"].files[0])).shape == (96, 128, 3)


def test_inpaint_model_conditioning_samples_the_whole_image_and_shows_the_model_the_masked_one(tmp_path):
    """The latent it gives is the plain encoding (so decoding it is VAEEncode's round trip); the
    entries carry the masked image for the inpainting UNet, which changes the result; without
    `noise_mask` the latent has none and the whole image is sampled."""
    import numpy as np
    from PIL import Image

    from engine import Session, Settings

    _inpainting_checkpoint(tmp_path / "models")
    examples = Path(__file__).resolve().parent.parent / "examples" / "input"
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "inpaint.safetensors"}},
        "1": {"class_type": "LoadImage", "inputs": {"image": "yosemite_inpaint_example.png"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "2": {"class_type": "InpaintModelConditioning", "inputs": {
            "positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "pixels": ["1", 0], "mask": ["1", 1],
            "noise_mask": True}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 2], "vae": ["4", 2]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
        "12": {"class_type": "VAEEncode", "inputs": {"pixels": ["1", 0], "vae": ["4", 2]}},
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["4", 2]}},
        "14": {"class_type": "PreviewImage", "inputs": {"images": ["13", 0]}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "seed": 1, "steps": 3, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                                                   "positive": ["2", 0], "negative": ["2", 1], "latent_image": ["2", 2]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    session = Session(settings=Settings(models_dir=tmp_path / "models", input_dir=examples, output_dir=tmp_path / "out",
                                        device="cpu"))

    def images(graph):
        result = session.execute(graph)
        assert result.status == "ok", result.errors
        return {k: np.asarray(Image.open(result.outputs[k].files[0])).astype(int) for k in ("9", "11", "14")}

    first = images(graph)
    assert np.array_equal(first["11"], first["14"])
    plain = {**graph, "3": {**graph["3"], "inputs": {**graph["3"]["inputs"], "positive": ["6", 0], "negative": ["7", 0]}}}
    assert np.abs(images(plain)["9"] - first["9"]).max() > 10  # the default concat is another input
    unmasked = {**graph, "2": {**graph["2"], "inputs": {**graph["2"]["inputs"], "noise_mask": False}}}
    assert np.abs(images(unmasked)["9"] - first["9"]).max() > 10
