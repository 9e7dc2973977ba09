"""CFG++ samplers (Chung et al. 2024): the step *direction* comes from the unconditional x0
estimate, the landing point from the guided one. Each reads `ctx.uncond()`, the unconditional
estimate of the denoiser call just made; the negative is evaluated even at cfg 1
(names.NEEDS_UNCOND).

For ε-prediction models α = 1 throughout, which is all these formulas assume.
"""
from __future__ import annotations

import torch

from .base import Denoiser, SamplingContext, ancestral_step, lambda_of, sigma_batch, sigma_of, to_d


def euler_ancestral_cfg_pp(denoise: Denoiser, x, sigmas, ctx: SamplingContext, eta: float = 1.0,
                           s_noise: float = 1.0):
    """x = D + σ↓·d_uncond, then fresh noise of size σ↑."""
    noise = ctx.step_noise(x)
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigma_batch(x, sigmas[i]))
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            d = to_d(x, sigmas[i], ctx.uncond())
            sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
            x = denoised + sigma_down * d
            if eta > 0 and s_noise > 0:
                x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        ctx.on_step(i + 1, len(sigmas) - 1)
    return x


def dpmpp_2s_ancestral_cfg_pp(denoise: Denoiser, x, sigmas, ctx: SamplingContext, eta: float = 1.0,
                              s_noise: float = 1.0):
    """DPM-Solver++(2S) to σ↓ from x shifted by the guidance (D − D_uncond), as ComfyUI 0.3.64
    writes it; the midpoint's guided estimate makes the step."""
    noise = ctx.step_noise(x)
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigma_batch(x, sigmas[i]))
        uncond = ctx.uncond()
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = denoised + to_d(x, sigmas[i], uncond) * sigma_down
        else:
            t, t_next = lambda_of(sigmas[i]), lambda_of(sigma_down)
            h = t_next - t
            s = t + h / 2
            shifted = x + (denoised - uncond)
            x_mid = (sigma_of(s) / sigma_of(t)) * shifted - (-h / 2).expm1() * denoised
            denoised_mid = denoise(x_mid, sigma_batch(x, sigma_of(s)))
            x = (sigma_of(t_next) / sigma_of(t)) * shifted - (-h).expm1() * denoised_mid
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        ctx.on_step(i + 1, len(sigmas) - 1)
    return x


def dpmpp_2m_cfg_pp(denoise: Denoiser, x, sigmas, ctx: SamplingContext):
    """DPM-Solver++(2M) whose history and decay use the unconditional estimate."""
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigma_batch(x, sigmas[i]))
        uncond = ctx.uncond()
        t, t_next = lambda_of(sigmas[i]), lambda_of(sigmas[i + 1])
        h = t_next - t
        mix = -torch.exp(-h) * uncond
        if old_uncond is not None and sigmas[i + 1] != 0:
            r = (t - lambda_of(sigmas[i - 1])) / h
            mix = mix - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + torch.exp(-h) * x
        old_uncond = uncond
        ctx.on_step(i + 1, len(sigmas) - 1)
    return x
