"""SEEDS-2 and SEEDS-3 (Gonzalez et al. 2023): stochastic explicit exponential solvers in data
prediction, two or three evaluations per step at intermediate λ = −ln σ. The noise of each
sub-step is carried on, decayed, into the next, so one step's total noise has the right
variance. ε-prediction models have α = 1, which these formulas assume.

`h·φ₁(h) = eʰ − 1` and `h·φ₂(h) = (eʰ − 1 − h)/h` are the exponential integrator's weights.
"""
from __future__ import annotations

import torch

from .base import Denoiser, SamplingContext, lambda_of, sigma_batch, sigma_of


def _h_phi_1(h):
    return torch.expm1(h)


def _h_phi_2(h):
    return (torch.expm1(h) - h) / h


class _CarriedNoise:
    """The Brownian increments of one step: each sub-interval's draw is added to the decayed
    noise of the sub-intervals before it."""

    def __init__(self, draw, h, eta: float):
        self.draw, self.h, self.eta, self.total, self.at = draw, h, eta, None, 0.0

    def to(self, fraction: float, sigma_from, sigma_to):
        if self.total is None:
            self.total = (-2 * fraction * self.h * self.eta).expm1().neg().sqrt() * self.draw(sigma_from, sigma_to)
        else:
            segment = (self.at - fraction) * self.h * self.eta
            self.total = self.total * segment.exp() + segment.mul(2).expm1().neg().sqrt() * self.draw(sigma_from, sigma_to)
        self.at = fraction
        return self.total


def seeds_2(denoise: Denoiser, x, sigmas, ctx: SamplingContext, eta: float = 1.0, s_noise: float = 1.0,
            r: float = 0.5):
    """One evaluation at λ_s + r·h, then the step from the φ₁ mix of the two estimates."""
    noise = ctx.step_noise(x)
    stochastic = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigma_batch(x, sigmas[i]))
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = lambda_of(sigmas[i]), lambda_of(sigmas[i + 1])
            h = lam_t - lam_s
            h_eta = h * (eta + 1)
            sigma_1 = sigma_of(torch.lerp(lam_s, lam_t, r))
            carried = _CarriedNoise(noise, h, eta)
            x_1 = sigma_1 / sigmas[i] * (-r * h * eta).exp() * x - _h_phi_1(-r * h_eta) * denoised
            if stochastic:
                x_1 = x_1 + carried.to(r, sigmas[i], sigma_1) * sigma_1 * s_noise
            denoised_1 = denoise(x_1, sigma_batch(x, sigma_1))
            mixed = torch.lerp(denoised, denoised_1, 1 / (2 * r))
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - _h_phi_1(-h_eta) * mixed
            if stochastic:
                x = x + carried.to(1.0, sigma_1, sigmas[i + 1]) * sigmas[i + 1] * s_noise
        ctx.on_step(i + 1, len(sigmas) - 1)
    return x


def seeds_3(denoise: Denoiser, x, sigmas, ctx: SamplingContext, eta: float = 1.0, s_noise: float = 1.0,
            r_1: float = 1 / 3, r_2: float = 2 / 3):
    """Evaluations at λ_s + r₁h and λ_s + r₂h; the step uses φ₁ and φ₂ of the first and last."""
    noise = ctx.step_noise(x)
    stochastic = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigma_batch(x, sigmas[i]))
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = lambda_of(sigmas[i]), lambda_of(sigmas[i + 1])
            h = lam_t - lam_s
            h_eta = h * (eta + 1)
            sigma_1, sigma_2 = sigma_of(torch.lerp(lam_s, lam_t, r_1)), sigma_of(torch.lerp(lam_s, lam_t, r_2))
            carried = _CarriedNoise(noise, h, eta)
            x_1 = sigma_1 / sigmas[i] * (-r_1 * h * eta).exp() * x - _h_phi_1(-r_1 * h_eta) * denoised
            if stochastic:
                x_1 = x_1 + carried.to(r_1, sigmas[i], sigma_1) * sigma_1 * s_noise
            denoised_1 = denoise(x_1, sigma_batch(x, sigma_1))

            a_2 = r_2 / r_1 * _h_phi_2(-r_2 * h_eta)
            a_1 = _h_phi_1(-r_2 * h_eta) - a_2
            x_2 = sigma_2 / sigmas[i] * (-r_2 * h * eta).exp() * x - (a_1 * denoised + a_2 * denoised_1)
            if stochastic:
                x_2 = x_2 + carried.to(r_2, sigma_1, sigma_2) * sigma_2 * s_noise
            denoised_2 = denoise(x_2, sigma_batch(x, sigma_2))

            b_3 = _h_phi_2(-h_eta) / r_2
            b_1 = _h_phi_1(-h_eta) - b_3
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - (b_1 * denoised + b_3 * denoised_2)
            if stochastic:
                x = x + carried.to(1.0, sigma_2, sigmas[i + 1]) * sigmas[i + 1] * s_noise
        ctx.on_step(i + 1, len(sigmas) - 1)
    return x
