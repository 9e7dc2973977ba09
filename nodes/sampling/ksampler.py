"""KSampler's flow: schedule, noise, noise mask, CFG, sampler; model-independent.

The family supplies a `predict(x_in, timestep, entries, size, concat)` that runs its network on
`c_in`-scaled input at integer timesteps and returns the raw output (ε or v); `concat` holds the
extra input channels of inpainting models (mask and masked latent), or None."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .conditioning import CondEntry
from .guidance import cfg_denoiser
from .latent_format import LatentFormat
from .model_sampling import DiscreteSampling
from .names import NEEDS_UNCOND
from .noise import GlobalGenerators, initial_noise
from .samplers import SAMPLERS, SamplingContext
from .schedules import ksampler_sigmas, truncate

# (x_in [N,C,h,w], integer timesteps [N], one entry per image, (latent height, width), concat) -> output
RawPredictor = Callable[[torch.Tensor, torch.Tensor, list[CondEntry], tuple[int, int], Any], torch.Tensor]

# "Zero" pixels (mid grey) in SD's latent space: what an inpainting model sees without a mask
BLANK_INPAINT_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)
IP2P_CHANNELS = 4  # an InstructPix2Pix UNet's extra input: the image latent (inpainting UNets take 5)


@dataclass(frozen=True)
class SamplingModel:
    predict: RawPredictor
    model_sampling: DiscreteSampling
    latent_format: LatentFormat
    device: str
    concat_channels: int = 0  # inpainting UNets take 5 more: the mask and the masked latent
    cfg_rescale: float | None = None  # RescaleCFG: the guided prediction's spread brought back
    perp_neg: tuple | None = None  # the PerpNeg patch's (empty prompt entries, neg_scale): a CFG function
    post_cfg: tuple = ()  # the model's post-CFG steps in order (post_cfg.py)
    pre_cfg: tuple = ()  # the model's pre-CFG steps in order (pre_cfg.py)
    differential_diffusion: float | None = None  # its strength: the noise mask becomes a moving threshold
    wants_sigma: bool = False  # predict() takes sigma= (patches that act in a σ window: Deep Shrink)
    ip2p_scale: float = 1.0  # an InstructPix2Pix UNet's image latent is taken × this (CosXL edit: the latent scale)
    attention: Callable[[], Any] = lambda: None  # the attention map SelfAttentionGuidance recorded last
    # given the generators standing for torch's global ones once sampling starts (HyperTile, ToMe)
    takes_generators: Callable[[GlobalGenerators], None] | None = None
    # the family's last word on the entries once the seed is known (SDXL: unCLIP's pooled vector)
    prepare: Callable[[list[CondEntry], int], list[CondEntry]] | None = None


@dataclass(frozen=True)
class Steps:
    """Which σ to run: KSampler's denoise, or KSamplerAdvanced's window."""

    steps: int
    denoise: float = 1.0
    start_at_step: int | None = None
    end_at_step: int | None = None
    force_full_denoise: bool = False


def sample(model: SamplingModel, latent: torch.Tensor, *, positive: list[CondEntry], negative: list[CondEntry],
           seed: int, cfg: float, sampler_name: str, scheduler: str, steps: Steps, add_noise: bool = True,
           noise_mask: torch.Tensor | None = None, batch_index: list[int] | None = None,
           on_step: Callable[[int, int], None] = lambda done, total: None) -> torch.Tensor:
    """KSampler: unscaled latent in, unscaled latent out (float32, CPU)."""
    ms = model.model_sampling
    sigmas = ksampler_sigmas(ms, sampler_name, scheduler, steps.steps, steps.denoise)
    if steps.start_at_step is not None or steps.end_at_step is not None:
        sigmas = truncate(sigmas, steps.start_at_step or 0, steps.end_at_step if steps.end_at_step is not None
                          else 10000, steps.force_full_denoise)
    if sigmas is None or len(sigmas) <= 1:
        return latent
    generator = torch.Generator("cpu")
    noise = initial_noise(latent.shape, seed, batch_index, generator) if add_noise else torch.zeros_like(latent)
    samples, _ = sample_sigmas(model, latent, sigmas, noise, positive=positive, negative=negative, seed=seed, cfg=cfg,
                               sampler_name=sampler_name, noise_mask=noise_mask, on_step=on_step,
                               generator=generator if add_noise else None)
    return samples


def sample_sigmas(model: SamplingModel, latent: torch.Tensor, sigmas: torch.Tensor, noise: torch.Tensor, *,
                  positive: list[CondEntry], negative: list[CondEntry], seed: int, cfg: float, sampler_name: str,
                  noise_mask: torch.Tensor | None = None,
                  on_step: Callable[[int, int], None] = lambda done, total: None,
                  sampler_options: dict | None = None, perp_neg: tuple | None = None,
                  dual: tuple | None = None, generator: torch.Generator | None = None):
    """Run a sampler over explicit σ from `noise` (unit scale) and an unscaled latent. Returns the
    unscaled result and the last step's x0 prediction (SamplerCustom's `denoised_output`).
    `sampler_options`: the sampler's own settings (eta, s_noise…), as the Sampler… nodes give them;
    `perp_neg`: PerpNegGuider's (empty prompt entries, neg_scale); `dual`: DualCFGGuider's
    (middle entries, cfg2, nested), `cfg` then being its cfg1; `generator`: the CPU generator after
    the initial noise draw (torch's global one in ComfyUI; without noise, one seeded with `seed`)."""
    ms = model.model_sampling
    device = model.device
    latent = latent.to(device, torch.float32)
    # ComfyUI leaves an all-zero latent as it is (no Playground shift of an empty latent)
    scaled = model.latent_format.process_in(latent) if torch.count_nonzero(latent) > 0 else latent
    noise = noise.to(device)
    sigmas = sigmas.to(device)
    x = ms.noise_scaling(sigmas[0], noise, scaled, max_denoise=ms.is_max_denoise(float(sigmas[0])))
    size = tuple(latent.shape[-2:])

    batch = scaled.shape[0]
    concats: dict[int | None, torch.Tensor] = {}

    def concat_of(entry: CondEntry) -> torch.Tensor:
        """A UNet's extra channels for an entry (ComfyUI's concat_cond). An inpainting UNet's: the
        entry's masked image and mask, or the sampled latent and noise mask. An InstructPix2Pix
        UNet's (4 channels): the entry's image latent, unscaled as ComfyUI's IP2P models take it
        (scaled for an EDM one, CosXL edit), or zeros."""
        key = None if entry.concat_latent is None else id(entry)
        if key not in concats:
            edit = model.concat_channels == IP2P_CHANNELS
            if key is None:
                concats[key] = torch.zeros_like(scaled) if edit else _inpaint_concat(noise_mask, scaled)
            else:
                image = entry.concat_latent.to(device, torch.float32)
                image = image * model.ip2p_scale if edit else model.latent_format.process_in(image)
                if image.shape[1:] != scaled.shape[1:]:
                    from ..core.resample import common_upscale

                    image = common_upscale(image, scaled.shape[-1], scaled.shape[-2], "bilinear", "center")
                image = resize_to_batch(image, batch)
                concats[key] = image if edit else _inpaint_concat(entry.concat_mask, image)
        return concats[key]

    def raw(x_part, sigma_part, entries, areas, perturbed: bool = False):
        extra = None if not model.concat_channels else torch.cat([
            concat_of(entry)[i % batch:i % batch + 1, :, y:y + h, x:x + w]
            for i, (entry, (h, w, y, x)) in enumerate(zip(entries, areas))])
        options = _active_controls(entries, float(sigma_part[0]), ms, batch=batch)
        if perturbed:
            options["perturbed"] = True
        if model.wants_sigma:
            options["sigma"] = float(sigma_part[0])
        output = model.predict(ms.model_input(x_part, sigma_part), ms.timestep(sigma_part), entries, size, extra,
                               **options)
        return ms.denoised(sigma_part, output.float(), x_part)

    negative = [entry.replace(prompt_type="negative") for entry in negative]
    if perp_neg is None and model.perp_neg is not None:
        # the deprecated PerpNeg patch: PerpNegGuider's formula as the model's CFG function, called
        # at CFG 1 too, with the skipped negative predicting 0
        perp_neg = (*model.perp_neg, False)
    if perp_neg is not None:  # the empty prompt counts as a negative one, in both forms
        perp_neg = ([entry.replace(prompt_type="negative") for entry in perp_neg[0]], *perp_neg[1:])
    if model.prepare is not None:
        positive, negative = model.prepare(positive, seed), model.prepare(negative, seed)
        if perp_neg is not None:
            perp_neg = (model.prepare(perp_neg[0], seed), *perp_neg[1:])
    if dual is not None:  # the middle conditioning counts as a negative one (Guider_DualCFG.set_conds)
        middle = [entry.replace(prompt_type="negative") for entry in dual[0]]
        dual = ((model.prepare(middle, seed) if model.prepare is not None else middle),) + tuple(dual[1:])
    guided = cfg_denoiser(raw, positive, negative, cfg, ms, always_uncond=sampler_name in NEEDS_UNCOND,
                          rescale=model.cfg_rescale, post_cfg=model.post_cfg, attention=model.attention,
                          perp_neg=perp_neg, dual=dual, pre_cfg=model.pre_cfg)
    denoise = guided
    if noise_mask is not None:
        # ddim holds the masked-out area to fresh CPU noise drawn from seed + 1, as ComfyUI does
        held = noise
        if sampler_name == "ddim":  # reseeding torch's global generator in ComfyUI
            generator = torch.Generator("cpu")
            held = initial_noise(noise.shape, seed + 1, generator=generator).to(noise.device)
        denoise = _inpainting(denoise, noise_mask, held, scaled, ms, sigmas, model.differential_diffusion)
    generators = GlobalGenerators(generator if generator is not None else torch.Generator("cpu").manual_seed(seed),
                                  seed)
    if model.takes_generators is not None:
        model.takes_generators(generators)
    # the x0 estimate of each step's first evaluation, as ComfyUI's preview callback sees it
    step_estimates: list[torch.Tensor] = []
    last = {}

    def recording(x_now, sigma):
        out = denoise(x_now, sigma)
        step_estimates.append(out)
        return out

    def stepped(done, total):
        if step_estimates:
            last["x0"] = step_estimates[0]
        step_estimates.clear()
        on_step(done, total)

    ctx = SamplingContext(seed=seed, on_step=stepped, uncond=guided.uncond, percent_to_sigma=ms.percent_to_sigma,
                          generators=generators,
                          noise_scaling=lambda sigma, n, lat: ms.noise_scaling(sigma, n, lat))
    with torch.inference_mode():
        x = SAMPLERS[sampler_name](recording, x, sigmas, ctx, **(sampler_options or {}))
    denoised = last.get("x0", x)
    out = model.latent_format.process_out
    return out(x).float().cpu(), out(denoised).float().cpu()


def _active_controls(entries: list[CondEntry], sigma: float, ms: DiscreteSampling, batch: int) -> dict:
    """The ControlNets and T2I-Adapters of a batch (its entries share one chain) that act at σ,
    oldest first, and how many conditionings the batch holds (a hint batch is spread over each
    one's images)."""
    link = entries[0].control
    if link is None:
        return {}
    active = [each for each in link.chain() if each.active(sigma, ms.percent_to_sigma)]
    return {"control": (active, len(entries) // batch)} if active else {}


def _inpaint_concat(noise_mask, scaled: torch.Tensor) -> torch.Tensor:
    """An inpainting UNet's extra input: the rounded mask and the (scaled) latent, or, without a
    mask, ones and a mid-grey latent (ComfyUI's concat_cond)."""
    if noise_mask is None:
        blank = torch.tensor(BLANK_INPAINT_LATENT, device=scaled.device).reshape(1, -1, 1, 1).expand_as(scaled)
        return torch.cat([torch.ones_like(scaled[:, :1]), blank], dim=1)
    mask = noise_mask.reshape(-1, 1, *noise_mask.shape[-2:]).float().to(scaled.device)
    if mask.shape[-2:] != scaled.shape[-2:]:
        from ..core.resample import common_upscale

        mask = common_upscale(mask, scaled.shape[-1], scaled.shape[-2], "bilinear", "center")
    return torch.cat([resize_to_batch(mask.round(), scaled.shape[0]), scaled], dim=1)


def resize_to_batch(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """ComfyUI's resize_to_batch_size: a batch stretched (or thinned) to `size` by picking
    evenly spread items, so [a, b] becomes [a, a, b, b], not [a, b, a, b]."""
    count = tensor.shape[0]
    if count == size or size <= 1:
        return tensor[:size]
    if size < count:
        scale = (count - 1) / (size - 1)
        picks = [min(round(i * scale), count - 1) for i in range(size)]
    else:
        scale = count / size
        picks = [min(math.floor((i + 0.5) * scale), count - 1) for i in range(size)]
    return tensor[picks]


def _inpainting(denoise, noise_mask, noise, scaled, ms: DiscreteSampling, sigmas: torch.Tensor,
                differential: float | None = None):
    """Outside the mask the sample is held to the (re-noised) input latent at every call. With
    Differential Diffusion (`differential`: its strength) the mask is a threshold that falls as
    the schedule runs, so each pixel starts changing when its mask value says."""
    mask = noise_mask.reshape(-1, 1, *noise_mask.shape[-2:]).float().to(scaled.device)
    mask = torch.nn.functional.interpolate(mask, size=scaled.shape[-2:], mode="bilinear")
    mask = mask.expand(-1, scaled.shape[1], -1, -1)
    if mask.shape[0] < scaled.shape[0]:
        mask = mask.repeat(-(-scaled.shape[0] // mask.shape[0]), 1, 1, 1)[:scaled.shape[0]]

    def masked(x, sigma):
        current = mask if differential is None else differential_mask(mask, sigma, sigmas, ms, differential)
        keep = 1.0 - current
        held = noise * sigma.reshape(-1, 1, 1, 1) + scaled
        out = denoise(x * current + held * keep, sigma)
        return out * current + scaled * keep

    return masked


def differential_mask(mask: torch.Tensor, sigma: torch.Tensor, sigmas: torch.Tensor, ms: DiscreteSampling,
                      strength: float) -> torch.Tensor:
    """ComfyUI's DifferentialDiffusion: the pixels whose mask reaches how far the schedule has
    come (in timesteps, from its first σ down to its last or σ_min) are denoised; below strength 1
    the binary mask is blended with the soft one."""
    sigma_to = max(float(sigmas[-1]), ms.sigma_min)
    ts_from, ts_to = ms.timestep(sigmas[0]), ms.timestep(torch.tensor(sigma_to))
    threshold = (ms.timestep(sigma[0]) - ts_to) / (ts_from - ts_to)
    binary = (mask >= threshold).to(mask.dtype)
    if strength and strength < 1:
        return strength * binary + (1 - strength) * mask
    return binary
