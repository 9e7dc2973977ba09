"""CLIPVisionLoader, CLIPVisionEncode and unCLIPConditioning (SDXL revision)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import Session, Settings
from nodes.sd.clip_vision import ClipVision, _augmentation_schedule, clip_preprocess, encode_image, revision_pooled

TINY = "tiny_clip_vision_g.safetensors"


def test_the_tiny_tower_loads_as_written_and_encodes_a_batch(tiny_models):
    from safetensors.torch import load_file

    model = ClipVision(str(tiny_models / "clip_vision" / TINY), "cpu").load()
    written = load_file(str(tiny_models / "clip_vision" / TINY))
    assert all(torch.equal(model.state_dict()[k], v.float()) for k, v in written.items())
    assert (model.config.image_size, model.config.patch_size, model.config.num_attention_heads) == (224, 14, 1)
    out = encode_image(model, torch.rand([2, 96, 160, 3], generator=torch.Generator().manual_seed(0)), crop=True)
    assert out.image_embeds.shape == (2, 128) and out.last_hidden_state.shape == (2, 257, 64)
    assert not torch.allclose(out.image_embeds[0], out.image_embeds[1])


def test_preprocessing_crops_the_centre_square_and_rounds_to_8_bit_levels():
    generator = torch.Generator().manual_seed(1)
    wide = torch.rand([1, 224, 320, 3], generator=generator)
    other_margins = wide.clone()
    other_margins[:, :, :40] = 0.0  # outside the centre 224 columns
    other_margins[:, :, -40:] = 1.0
    assert torch.equal(clip_preprocess(wide, 224, crop=True), clip_preprocess(other_margins, 224, crop=True))
    assert not torch.equal(clip_preprocess(wide, 224, crop=False), clip_preprocess(other_margins, 224, crop=False))
    square = torch.rand([1, 224, 224, 3], generator=generator)
    expected = (torch.round(square.movedim(-1, 1) * 255) / 255 - torch.tensor([0.48145466, 0.4578275, 0.40821073])
                .view(3, 1, 1)) / torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    assert torch.allclose(clip_preprocess(square, 224, crop=True), expected, atol=1e-6)


def test_noise_augmentation_follows_the_squared_cosine_schedule():
    from diffusers import DDPMScheduler

    keep, noise = _augmentation_schedule()
    reference = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod.double()
    assert torch.allclose(keep.double(), reference.sqrt(), atol=1e-6)
    # diffusers keeps ᾱ in float32, so 1 − ᾱ near t = 0 carries its rounding (1e-7 of 4e-5)
    assert torch.allclose(noise.double(), (1 - reference).sqrt(), atol=2e-5)


def test_revision_pooled_vectors():
    embeds = torch.randn([1, 8], generator=torch.Generator().manual_seed(2))
    keep, scale = _augmentation_schedule()
    draw = torch.Generator().manual_seed(42 - 10)
    first, second = torch.randn([1, 8], generator=draw), torch.randn([1, 8], generator=draw)
    one = revision_pooled(((embeds, 0.75, 0.0),), seed=42, width=8)
    assert torch.allclose(one, 0.75 * (keep[0] * embeds + scale[0] * first))
    noised = revision_pooled(((embeds, 1.0, 0.5),), seed=42, width=8)
    assert torch.allclose(noised, keep[500] * embeds + scale[500] * first)
    # two images: each noised with the same draw, summed, then noised again with the next draw
    two = revision_pooled(((embeds, 0.75, 0.0), (-embeds, 0.5, 0.0)), seed=42, width=8)
    merged = 0.75 * (keep[0] * embeds + scale[0] * first) + 0.5 * (keep[0] * -embeds + scale[0] * first)
    assert torch.allclose(two, keep[0] * merged + scale[0] * second, atol=1e-6)


def _revision(checkpoint: str, strength: float):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": TINY}},
        "5": {"class_type": "LoadImage", "inputs": {"image": "landscape_shapes.png"}},
        "6": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["4", 0], "image": ["5", 0], "crop": "center"}},
        "7": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2", 0]}},
        "8": {"class_type": "unCLIPConditioning", "inputs": {"conditioning": ["7", 0], "clip_vision_output": ["6", 0],
                                                             "strength": strength, "noise_augmentation": 0.0}},
        "9": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "10": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 5, "steps": 3, "cfg": 6.0,
                                                    "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                                                    "positive": ["8", 0], "negative": ["3", 0], "latent_image": ["9", 0]}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}},
    }


@pytest.mark.parametrize("checkpoint, changes", [("tiny_sdxl.safetensors", True), ("tiny_sd15.safetensors", False)])
def test_revision_steers_sdxl_and_is_ignored_by_sd15(checkpoint, changes, tiny_models, tmp_path):
    """SDXL takes the pooled vector from the image (a zeroed text gets one back); SD1.5 has no
    pooled input, and ComfyUI's non-unCLIP SD1.5 models ignore unCLIP conditioning."""
    from pathlib import Path

    from PIL import Image

    inputs = Path(__file__).resolve().parent.parent / "examples" / "input"
    session = Session(settings=Settings(models_dir=tiny_models, input_dir=inputs, output_dir=tmp_path, device="cpu"))

    def pixels(strength):
        result = session.execute(_revision(checkpoint, strength))
        assert result.status == "ok", result.errors
        return np.asarray(Image.open(result.files[0])).astype(int)

    without = pixels(0.0)
    assert (np.abs(pixels(0.75) - without).max() > 10) == changes
