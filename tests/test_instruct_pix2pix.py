"""InstructPixToPixConditioning on an InstructPix2Pix UNet (8 input channels), against diffusers."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from engine import Session, Settings
from nodes.sd.tiny import write_sd15

from .test_sd_models import _dpmpp_2m_karras, _pipeline_parts


@pytest.fixture(scope="module")
def edit_models(tiny_models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ip2p") / "models"
    shutil.copytree(tiny_models, folder, copy_function=os.link)
    write_sd15(folder / "checkpoints" / "tiny_sd15_ip2p.safetensors", seed=11, in_channels=8)
    inputs = folder.parent / "input"
    inputs.mkdir()
    generator = np.random.default_rng(0)
    picture = np.clip(np.linspace(0, 255, 64)[None, :, None] + generator.normal(0, 40, (64, 64, 3)), 0, 255)
    Image.fromarray(picture.astype(np.uint8)).save(inputs / "photo.png")
    return folder


def _graph(cfg=7.0, negative="blurry"):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15_ip2p.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "make it a watercolor", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["1", 1]}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "5": {"class_type": "InstructPixToPixConditioning", "inputs": {"positive": ["2", 0], "negative": ["3", 0],
                                                                     "vae": ["1", 2], "pixels": ["4", 0]}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 42, "steps": 6, "cfg": cfg,
                                                   "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1.0,
                                                   "positive": ["5", 0], "negative": ["5", 1], "latent_image": ["5", 2]}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }


def _pixels(models, graph):
    session = Session(settings=Settings(models_dir=models, input_dir=models.parent / "input",
                                        output_dir=models.parent / "out", device="cpu"))
    result = session.execute(graph)
    assert result.status == "ok", result.errors
    return np.asarray(Image.open(result.files[0])).astype(int), result


def test_instruct_pix2pix_matches_diffusers_at_image_guidance_one(edit_models):
    """ComfyUI's IP2P is plain CFG between (prompt, image) and (negative, image): diffusers'
    three-way guidance with image_guidance_scale 1."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from nodes.sampling.noise import initial_noise
    from nodes.sd.clip_text import clip_tokenizer

    ours, result = _pixels(edit_models, _graph())
    assert result.outputs["5"].latent.samples.abs().max() == 0  # sampling starts from an empty latent
    unet, towers, vae = _pipeline_parts(edit_models / "checkpoints" / "tiny_sd15_ip2p.safetensors", "sd1")
    assert unet.config.in_channels == 8
    vae.config.scaling_factor = 0.18215
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=towers[0], tokenizer=clip_tokenizer(), unet=unet, scheduler=_dpmpp_2m_karras(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    photo = torch.from_numpy(np.array(Image.open(edit_models.parent / "input" / "photo.png"))).float() / 255
    image = pipe("make it a watercolor", image=photo.permute(2, 0, 1)[None], negative_prompt="blurry",
                 num_inference_steps=6, guidance_scale=7.0, image_guidance_scale=1.0,
                 latents=initial_noise([1, 4, 8, 8], 42), output_type="np").images[0]
    theirs = np.clip(255.0 * image, 0, 255).astype(int)
    assert np.abs(ours - theirs).max() <= 1


def test_the_image_steers_the_edit(edit_models):
    ours, _ = _pixels(edit_models, _graph())
    other = _graph()
    other["4"]["inputs"]["image"] = "photo_flipped.png"
    Image.open(edit_models.parent / "input" / "photo.png").transpose(Image.FLIP_LEFT_RIGHT) \
        .save(edit_models.parent / "input" / "photo_flipped.png")
    flipped, _ = _pixels(edit_models, other)
    assert np.abs(ours - flipped).max() > 20
