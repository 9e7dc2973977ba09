"""KolorsSampler: the wrapper's trimmed SDXL pipeline, with diffusers schedulers.

Initial noise is drawn as the wrapper draws it: a generator on the run's device, in the UNet's
dtype, so a seed saved from ComfyUI on a GPU gives the image its user saw. `noise_device: cpu`
(the widget, or `--noise-device cpu` for every sampler) draws on the CPU instead, which gives
the same image on every device.

Mirrors: kijai/ComfyUI-KwaiKolorsWrapper:kolors/pipelines/pipeline_stable_diffusion_xl_chatglm_256.py
"""
from __future__ import annotations

import inspect
from typing import Literal

from engine import Link, Node, Widget

from ..core.latent import LatentOut
from ..types import Latent
from .constants import KOLORS_SCHEDULER_CONFIG, VAE_SCALING_FACTOR
from .lora import lora_applied
from .models import KolorsEmbeds, KolorsModel

SchedulerName = Literal["EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                        "DPMSolverMultistepScheduler", "DPMSolverMultistepScheduler_SDE_karras",
                        "UniPCMultistepScheduler", "DEISMultistepScheduler"]

# name -> (diffusers class, settings added to the Kolors base, base settings removed)
_SCHEDULERS = {
    "EulerDiscreteScheduler": ("EulerDiscreteScheduler", {"interpolation_type": "linear"},
                               ("dynamic_thresholding_ratio",)),
    "EulerAncestralDiscreteScheduler": ("EulerAncestralDiscreteScheduler", {}, ("dynamic_thresholding_ratio",)),
    "DPMSolverMultistepScheduler": ("DPMSolverMultistepScheduler", {}, ()),
    "DPMSolverMultistepScheduler_SDE_karras": ("DPMSolverMultistepScheduler",
                                               {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}, ()),
    "UniPCMultistepScheduler": ("UniPCMultistepScheduler", {}, ("rescale_betas_zero_snr",)),
    "DEISMultistepScheduler": ("DEISMultistepScheduler", {}, ("rescale_betas_zero_snr",)),
}


def make_scheduler(name: str):
    """A fresh diffusers scheduler with the Kolors constants, as the wrapper builds per call."""
    import diffusers

    class_name, added, removed = _SCHEDULERS[name]
    config = {k: v for k, v in KOLORS_SCHEDULER_CONFIG.items() if k not in removed} | added
    return getattr(diffusers, class_name).from_config(config)


def add_time_ids(height: int, width: int):
    # original_size + crop (0, 0) + target_size, as the wrapper and DiffSynth's trainer use
    return [height, width, 0, 0, height, width]


def noise_device(widget: str, settings, device: str) -> str:
    """Where the initial noise is drawn: `--noise-device` (settings) wins over the widget."""
    choice = settings.noise_device or widget
    return "cpu" if choice == "cpu" else device


class KolorsSampler(Node):
    """Denoise latents from Kolors embeddings; txt2img, or img2img with latent + denoise_strength."""

    class_type = "KolorsSampler"
    display_name = "Kolors Sampler"
    category = "KwaiKolorsWrapper"
    output_names = ("latent",)

    kolors_model: KolorsModel = Link()
    kolors_embeds: KolorsEmbeds = Link()
    # Widgets in the wrapper's order: UI widgets_values map onto them by position.
    width: int = Widget(1024, ge=64, le=2048, step=64, multiple_of=8)
    height: int = Widget(1024, ge=64, le=2048, step=64, multiple_of=8)
    seed: int = Widget(0, ge=0, le=2**64 - 1)
    steps: int = Widget(25, ge=1, le=200)
    cfg: float = Widget(5.0, ge=0.0, le=20.0, step=0.01)
    scheduler: SchedulerName = Widget("EulerDiscreteScheduler")
    latent: Latent | None = Link(optional=True)
    denoise_strength: float = Widget(1.0, ge=0.0, le=1.0, step=0.01, optional=True)
    # Not in the wrapper, which always draws on the run's device ("device"). "cpu" gives the same
    # image on every device, but not the wrapper's image on a GPU.
    noise_device: Literal["device", "cpu"] = Widget("device", optional=True, extension=True)

    @classmethod
    def fingerprint(cls, constants, settings):
        # `--noise-device` and `--compile` change the latents without changing the graph (compiled
        # kernels round differently): they belong in the key.
        return [settings.noise_device, settings.compile]

    @classmethod
    def check_inputs(cls, constants, linked_types, vctx):
        # img2img keeps int(steps * denoise_strength) steps; zero would return the input unchanged
        steps, strength = constants.get("steps"), constants.get("denoise_strength", 1.0)
        if "latent" in linked_types and isinstance(steps, int) and isinstance(strength, (int, float)) \
                and int(steps * strength) < 1:
            return [("denoise_strength", f"with a latent, steps x denoise_strength must be at least 1 "
                                         f"({steps} x {strength} runs no step); raise either")]
        return []

    def execute(self, ctx) -> LatentOut:
        import torch

        unet = ctx.models.get(self.kolors_model)
        device, dtype = self.kolors_model.device, unet.dtype
        drawn_on = noise_device(self.noise_device, ctx.settings, device)
        ctx.record("noise", {"device": drawn_on, "dtype": str(dtype).removeprefix("torch.")})
        with ctx.models.modifying(self.kolors_model) as change, \
                lora_applied(unet, self.kolors_model.loras, change):
            latents = sample(unet, make_scheduler(self.scheduler), self.kolors_embeds, width=self.width,
                             height=self.height, seed=self.seed, steps=self.steps, cfg=self.cfg,
                             init_latent=None if self.latent is None else self.latent.samples,
                             strength=self.denoise_strength, device=device, dtype=dtype,
                             noise_device=drawn_on, on_step=ctx.progress)
        return LatentOut(Latent((latents.float() / VAE_SCALING_FACTOR).to("cpu", torch.float32)))


def sample(unet, scheduler, embeds: KolorsEmbeds, *, width: int, height: int, seed: int, steps: int,
           cfg: float, init_latent, strength: float, device: str, dtype, noise_device: str, on_step):
    """The denoising loop; returns scaled latents (as diffusers pipelines do)."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    generator = torch.Generator(noise_device).manual_seed(seed)
    prompt_embeds = embeds.prompt_embeds.to(device, dtype)
    batch = prompt_embeds.shape[0]
    scheduler.set_timesteps(steps, device=device)
    # The wrapper always applies the img2img truncation; with strength 1 it keeps every step.
    t_start = max(steps - min(int(steps * strength), steps), 0)
    timesteps = scheduler.timesteps[t_start * scheduler.order:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * scheduler.order)
    if init_latent is None:
        shape = (batch, unet.config.in_channels, height // 8, width // 8)
        latents = randn_tensor(shape, generator=generator, device=torch.device(device), dtype=dtype)
        latents = latents * scheduler.init_noise_sigma
    else:
        init = (init_latent * VAE_SCALING_FACTOR).to(device, dtype)
        if init.shape[0] < batch and batch % init.shape[0] == 0:
            init = init.repeat(batch // init.shape[0], 1, 1, 1)
        noise = randn_tensor(init.shape, generator=generator, device=torch.device(device), dtype=dtype)
        latents = scheduler.add_noise(init, noise, timesteps[:1].repeat(init.shape[0]))

    do_cfg = cfg > 1.0
    text_embeds = embeds.pooled_prompt_embeds.to(device, dtype)
    time_ids = torch.tensor([add_time_ids(height, width)], device=device, dtype=dtype)
    if do_cfg:
        prompt_embeds = torch.cat([embeds.negative_prompt_embeds.to(device, dtype), prompt_embeds])
        text_embeds = torch.cat([embeds.negative_pooled_prompt_embeds.to(device, dtype), text_embeds])
        time_ids = torch.cat([time_ids, time_ids])
    time_ids = time_ids.repeat(batch, 1)
    step_params = inspect.signature(scheduler.step).parameters
    extra = {k: v for k, v in (("generator", generator), ("eta", 0.0)) if k in step_params}
    added = {"text_embeds": text_embeds, "time_ids": time_ids}
    with torch.inference_mode():
        for index, t in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if do_cfg else latents
            model_input = scheduler.scale_model_input(model_input, t)
            eps = unet(model_input, t, encoder_hidden_states=prompt_embeds, added_cond_kwargs=added,
                       return_dict=False)[0]
            if do_cfg:
                uncond, cond = eps.chunk(2)
                eps = uncond + cfg * (cond - uncond)
            latents = scheduler.step(eps, t, latents, **extra, return_dict=False)[0].to(dtype)
            on_step(index + 1, len(timesteps))
    return latents
