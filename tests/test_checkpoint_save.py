"""CheckpointSave, ModelSave, VAESave, CLIPSave: files in ComfyUI's layout that load back as they sampled."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from engine import Session, Settings
from engine.errors import ValidationFailed

CHECKPOINTS = ["tiny_sd15.safetensors", "tiny_sd2_v.safetensors", "tiny_sdxl.safetensors",
               "tiny_sdxl_refiner.safetensors"]


@pytest.fixture
def models(tiny_models, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(tiny_models, folder, copy_function=os.link)
    return folder


def _session(models, tmp_path):
    return Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu"), cache=False)


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_a_saved_checkpoint_has_the_source_layout_and_weights(checkpoint, models, tmp_path):
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
             "2": {"class_type": "CheckpointSave", "inputs": {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2],
                                                             "filename_prefix": "checkpoints/merged"}}}
    result = _session(models, tmp_path).execute(graph)
    [path] = result.files
    assert path == str(tmp_path / "out" / "checkpoints" / "merged_00001_.safetensors")
    with safe_open(models / "checkpoints" / checkpoint, "pt") as source, safe_open(path, "pt") as saved:
        added = set(saved.keys()) - set(source.keys())
        assert set(source.keys()) <= set(saved.keys())
        # ComfyUI's markers: v_pred for a v model, CLIP-L's position ids for SDXL
        assert added == {"sd2_v": {"v_pred"}, "sdxl": {"conditioner.embedders.0.transformer.text_model.embeddings."
                                                       "position_ids"}}.get(checkpoint[5:-12], set())
        for key in source.keys():
            assert torch.equal(saved.get_tensor(key).float(), source.get_tensor(key).float()), key
        metadata = saved.metadata()
    assert metadata["modelspec.predict_key"] == ("v" if "sd2_v" in checkpoint else "epsilon")
    assert ("modelspec.architecture" in metadata) == ("sdxl" in checkpoint)
    assert '"CheckpointSave"' in metadata["prompt"]


def _sample_graph(model, clip, vae):
    return {
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": clip}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"model": model, "seed": 2, "steps": 3, "cfg": 6.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                                                   "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": vae}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }


def test_loras_are_baked_in_and_the_parts_save_alone(models, tmp_path):
    session = _session(models, tmp_path)

    def pixels(graph):
        result = session.execute(graph)
        return np.asarray(Image.open(next(f for f in result.files if f.endswith(".png")))).astype(int)

    loaded = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
              "10": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "strength_model": 1.0,
                                                            "strength_clip": 1.0,
                                                            "lora_name": "tiny_sd15_kohya.safetensors"}}}
    with_lora = pixels(loaded | _sample_graph(["10", 0], ["10", 1], ["1", 2]))
    plain = pixels(loaded | _sample_graph(["1", 0], ["1", 1], ["1", 2]))
    assert np.abs(with_lora - plain).max() > 5
    saves = {"20": {"class_type": "CheckpointSave", "inputs": {"model": ["10", 0], "clip": ["10", 1], "vae": ["1", 2],
                                                               "filename_prefix": "checkpoints/lora_baked"}},
             "21": {"class_type": "ModelSave", "inputs": {"model": ["10", 0], "filename_prefix": "unet/baked"}},
             "22": {"class_type": "VAESave", "inputs": {"vae": ["1", 2], "filename_prefix": "vae/copy"}}}
    files = session.execute(loaded | saves).files
    out = tmp_path / "out"
    assert sorted(files) == sorted(str(out / p) for p in ("checkpoints/lora_baked_00001_.safetensors",
                                                         "unet/baked_00001_.safetensors", "vae/copy_00001_.safetensors"))
    # Read back from a models folder that holds them: the same image as the patched models gave.
    for folder in ("checkpoints", "unet", "vae"):
        (models / folder).mkdir(exist_ok=True)
        for file in (out / folder).iterdir():
            shutil.copy(file, models / folder / file.name)
    again = pixels({"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "lora_baked_00001_.safetensors"}}}
                   | _sample_graph(["1", 0], ["1", 1], ["1", 2]))
    assert np.abs(again - with_lora).max() <= 1
    parts = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
             "11": {"class_type": "UNETLoader", "inputs": {"unet_name": "baked_00001_.safetensors", "weight_dtype": "default"}},
             "12": {"class_type": "VAELoader", "inputs": {"vae_name": "copy_00001_.safetensors"}},
             "10": loaded["10"]}
    unet_only = pixels(parts | _sample_graph(["11", 0], ["10", 1], ["12", 0]))
    assert np.abs(unet_only - with_lora).max() <= 1


def test_a_prefix_outside_the_output_folder_is_refused(models, tmp_path):
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
             "2": {"class_type": "ModelSave", "inputs": {"model": ["1", 0], "filename_prefix": "../escape"}}}
    with pytest.raises(ValidationFailed) as failed:
        _session(models, tmp_path).execute(graph)
    assert failed.value.errors[0].input == "filename_prefix"
    assert not (tmp_path / "escape_00001_.safetensors").exists()


@pytest.mark.parametrize("lora_type", ["full_diff", "standard"])
def test_a_lora_extracted_from_a_difference_recreates_the_patched_model(lora_type, models, tmp_path):
    from safetensors.torch import load_file

    session = _session(models, tmp_path)

    def pixels(graph):
        result = session.execute(graph)
        return np.asarray(Image.open(next(f for f in result.files if f.endswith(".png")))).astype(int)

    base = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}}}
    lora = {"10": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "strength_model": 1.0,
                                                          "strength_clip": 1.0,
                                                          "lora_name": "tiny_sd15_kohya.safetensors"}}}
    patched = pixels(base | lora | _sample_graph(["10", 0], ["10", 1], ["1", 2]))
    plain = pixels(base | _sample_graph(["1", 0], ["1", 1], ["1", 2]))
    extract = {
        "11": {"class_type": "ModelMergeSubtract", "inputs": {"model1": ["10", 0], "model2": ["1", 0], "multiplier": 1.0}},
        "12": {"class_type": "CLIPMergeSubtract", "inputs": {"clip1": ["10", 1], "clip2": ["1", 1], "multiplier": 1.0}},
        "13": {"class_type": "LoraSave", "inputs": {"filename_prefix": "loras/extracted", "rank": 4,
                                                    "lora_type": lora_type, "bias_diff": True,
                                                    "model_diff": ["11", 0], "text_encoder_diff": ["12", 0]}}}
    [path] = session.execute(base | lora | extract).files
    state = load_file(path)
    assert all(k.startswith(("diffusion_model.", "text_encoders.clip_l.transformer.text_model.")) for k in state)
    assert all(v.dtype == torch.float16 for v in state.values())
    assert any(k.endswith(".lora_up.weight") for k in state) == (lora_type == "standard")
    shutil.copy(path, models / "loras" / f"extracted_{lora_type}.safetensors")
    again = {"10": {**lora["10"], "inputs": {**lora["10"]["inputs"], "lora_name": f"extracted_{lora_type}.safetensors"}}}
    recreated = pixels(base | again | _sample_graph(["10", 0], ["10", 1], ["1", 2]))
    if lora_type == "full_diff":
        assert np.abs(recreated - patched).max() <= 2
        return
    assert np.abs(recreated - plain).max() > 5  # the extracted LoRA acts


def test_extract_lora_is_a_clamped_truncated_svd():
    """Each weight's truncated SVD, singular values folded into `up`, both factors clamped at the
    99th percentile of their signed values (so the factors depend on the SVD's signs, as in
    ComfyUI); convolutions flattened and shaped back."""
    from nodes.sd.lora_extract import extract_lora

    generator = torch.Generator().manual_seed(0)
    diff = torch.randn(12, 3, generator=generator) @ torch.randn(3, 20, generator=generator)
    up, down = extract_lora(diff, 3)
    u, s, vh = torch.linalg.svd(diff)
    high = torch.quantile(torch.cat([(u[:, :3] * s[:3]).flatten(), vh[:3].flatten()]), 0.99)
    assert torch.allclose(up, (u[:, :3] * s[:3]).clamp(-high, high)) and torch.allclose(down, vh[:3].clamp(-high, high))
    assert torch.allclose(up @ down, diff, atol=0.05 * float(diff.abs().max()))
    conv_up, conv_down = extract_lora(torch.randn(8, 4, 3, 3, generator=generator), 2)
    assert conv_up.shape == (8, 2, 1, 1) and conv_down.shape == (2, 4, 3, 3)
    assert extract_lora(diff, 50)[0].shape == (12, 12)  # the rank is capped by the weight's sides


def test_clip_save_writes_each_tower_as_a_file_the_clip_loaders_read_back(models, tmp_path):
    session = _session(models, tmp_path)
    out = tmp_path / "out"

    def pixels(graph):
        result = session.execute(graph)
        return np.asarray(Image.open(next(f for f in result.files if f.endswith(".png")))).astype(int)

    # SD1.5 with a LoRA on its CLIP: baked into the one file CLIPLoader reads
    sd15 = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
            "10": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "strength_model": 0.0,
                                                          "strength_clip": 1.0,
                                                          "lora_name": "tiny_sd15_kohya.safetensors"}}}
    with_lora = pixels(sd15 | _sample_graph(["1", 0], ["10", 1], ["1", 2]))
    assert np.abs(with_lora - pixels(sd15 | _sample_graph(["1", 0], ["1", 1], ["1", 2]))).max() > 5
    # SDXL: CLIP-L and bigG (with its projection) in two files for DualCLIPLoader
    sdxl = {"2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sdxl.safetensors"}}}
    plain_sdxl = pixels(sdxl | _sample_graph(["2", 0], ["2", 1], ["2", 2]))
    saves = {"20": {"class_type": "CLIPSave", "inputs": {"clip": ["10", 1], "filename_prefix": "clip/sd15"}},
             "21": {"class_type": "CLIPSave", "inputs": {"clip": ["2", 1], "filename_prefix": "clip/sdxl"}}}
    files = session.execute(sd15 | sdxl | saves).files
    assert sorted(files) == sorted(str(out / "clip" / n) for n in ("sd15_clip_l_00001_.safetensors",
                                                                 "sdxl_clip_l_00001_.safetensors",
                                                                 "sdxl_clip_g_00001_.safetensors"))
    with safe_open(out / "clip" / "sdxl_clip_g_00001_.safetensors", "pt") as saved:
        assert "text_projection.weight" in saved.keys() and saved.metadata()["format"] == "pt"
        assert saved.get_tensor("text_model.final_layer_norm.weight").dtype == torch.float16  # as stored
    (models / "text_encoders").mkdir(exist_ok=True)
    for file in (out / "clip").iterdir():
        shutil.copy(file, models / "text_encoders" / file.name)
    loaded = {"30": {"class_type": "CLIPLoader", "inputs": {"clip_name": "sd15_clip_l_00001_.safetensors",
                                                            "type": "stable_diffusion"}},
              "31": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "sdxl_clip_g_00001_.safetensors",
                                                                "clip_name2": "sdxl_clip_l_00001_.safetensors",
                                                                "type": "sdxl"}}}
    assert np.abs(pixels(sd15 | loaded | _sample_graph(["1", 0], ["30", 0], ["1", 2])) - with_lora).max() <= 1
    assert np.abs(pixels(sdxl | loaded | _sample_graph(["2", 0], ["31", 0], ["2", 2])) - plain_sdxl).max() <= 1


def test_clip_save_keeps_sd2s_text_projection_which_encoding_leaves_out(models, tmp_path):
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd2_v.safetensors"}},
             "2": {"class_type": "CLIPSave", "inputs": {"clip": ["1", 1], "filename_prefix": "clip/sd2"}}}
    [path] = _session(models, tmp_path).execute(graph).files
    assert path.endswith("sd2_clip_h_00001_.safetensors")
    with safe_open(models / "checkpoints" / "tiny_sd2_v.safetensors", "pt") as source, safe_open(path, "pt") as saved:
        projection = source.get_tensor("cond_stage_model.model.text_projection")
        assert torch.equal(saved.get_tensor("text_projection.weight"), projection.T)
