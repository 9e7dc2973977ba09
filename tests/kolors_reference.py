"""The diffusers side of the comparisons: components loaded the plain diffusers way, independent of
the engine's loaders, and KolorsPipeline runs with the engine's noise convention."""
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, KolorsImg2ImgPipeline, KolorsPipeline, UNet2DConditionModel
from diffusers.pipelines.kolors import ChatGLMModel, ChatGLMTokenizer
from diffusers.utils.torch_utils import randn_tensor

from nodes.kolors.sampler import make_scheduler
from nodes.kolors.tiny import VAE_CONFIG


def reference_parts(models: Path, scratch: Path, vae_config: dict = VAE_CONFIG, dtype=torch.float32) -> dict:
    """KolorsPipeline's components from the model folder, loaded the plain diffusers way."""
    kolors = models / "diffusers" / "Kolors"
    (scratch / "config.json").write_text(json.dumps(vae_config))
    return dict(
        unet=UNet2DConditionModel.from_pretrained(kolors, subfolder="unet", variant="fp16", dtype=dtype),
        text_encoder=ChatGLMModel.from_pretrained(kolors / "text_encoder", dtype=dtype),
        tokenizer=ChatGLMTokenizer.from_pretrained(kolors / "text_encoder"),
        vae=AutoencoderKL.from_single_file(str(models / "vae" / "sdxl.vae.safetensors"), config=str(scratch),
                                           local_files_only=True, torch_dtype=dtype),
    )


def reference_run(parts, scheduler, prompts, *, cfg, steps, seed, size, output_type, init=None, strength=1.0):
    generator = torch.Generator("cpu").manual_seed(seed)
    common = dict(prompt=prompts, num_inference_steps=steps, guidance_scale=cfg, generator=generator,
                  height=size, width=size, output_type=output_type)
    if init is None:
        pipe = KolorsPipeline(**parts, scheduler=make_scheduler(scheduler), force_zeros_for_empty_prompt=False)
        shape = (len(prompts), 4, size // 8, size // 8)
        noise = randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32)
        return pipe(latents=noise, **common).images
    pipe = KolorsImg2ImgPipeline(**parts, scheduler=make_scheduler(scheduler), force_zeros_for_empty_prompt=False)
    return pipe(image=init, strength=strength, **common).images
