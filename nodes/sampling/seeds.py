"""SEEDS-2 and SEEDS-3 (Gonzalez et al. 2023): stochastic explicit exponential solvers in data
prediction, two or three evaluations per step at intermediate λ = −ln σ. The noise of each
sub-step is carried on, decayed, into the next, so one step's total noise has the right
variance. ε-prediction models have α = 1, which these formulas assume.

`h·φ₁(h) = eʰ − 1` and `h·φ₂(h) = (eʰ − 1 − h)/h` are the exponential integrator's weights
(negative for the negative arguments used here, hence `x − estimate` adds them).
"""
from __future__ import annotations

import torch

from .base import Denoiser, SamplingContext, lambda_of, sigma_batch, sigma_of


def _h_phi_1(h):
    return torch.expm1(h)


def _h_phi_2(h):
    return (torch.expm1(h) - h) / h


class _Step:
    """One step σ → σ' in λ: its stages land at fractions r of h, each from the step's start x,
    with the Brownian noise of the sub-intervals carried on, decayed, from stage to stage (so a
    step's total noise has the right variance)."""

    def __init__(self, x, sigma, sigma_next, eta: float, s_noise: float, draw):
        self.x, self.sigma, self.eta, self.s_noise, self.draw = x, sigma, eta, s_noise, draw
        self.lam_s, self.lam_t = lambda_of(sigma), lambda_of(sigma_next)
        self.h = self.lam_t - self.lam_s
        self.h_eta = self.h * (eta + 1)
        self.stochastic = eta > 0 and s_noise > 0
        self.noise, self.at, self.last_sigma = None, 0.0, sigma

    def sigma_at(self, fraction: float):
        return sigma_of(torch.lerp(self.lam_s, self.lam_t, fraction))

    def land(self, fraction: float, sigma_to, estimate):
        """x at λ_s + fraction·h: the decayed start minus the weighted estimates, plus noise."""
        x = sigma_to / self.sigma * (-fraction * self.h * self.eta).exp() * self.x - estimate
        if self.stochastic:
            if self.noise is None:
                spread = (-2 * fraction * self.h * self.eta).expm1().neg().sqrt()
                self.noise = spread * self.draw(self.sigma, sigma_to)
            else:
                segment = (self.at - fraction) * self.h * self.eta
                fresh = segment.mul(2).expm1().neg().sqrt() * self.draw(self.last_sigma, sigma_to)
                self.noise = self.noise * segment.exp() + fresh
            x = x + self.noise * sigma_to * self.s_noise
        self.at, self.last_sigma = fraction, sigma_to
        return x


def _solve(denoise: Denoiser, x, sigmas, ctx: SamplingContext, eta: float, s_noise: float, stages):
    noise = ctx.step_noise(x)
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigma_batch(x, sigmas[i]))
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = stages(_Step(x, sigmas[i], sigmas[i + 1], eta, s_noise, noise), denoised, sigmas[i + 1])
        ctx.on_step(i + 1, len(sigmas) - 1)
    return x


def seeds_2(denoise: Denoiser, x, sigmas, ctx: SamplingContext, eta: float = 1.0, s_noise: float = 1.0,
            r: float = 0.5):
    """One evaluation at λ_s + r·h, then the step from the φ₁ mix of the two estimates."""
    def stages(step: _Step, denoised, sigma_next):
        sigma_1 = step.sigma_at(r)
        x_1 = step.land(r, sigma_1, _h_phi_1(-r * step.h_eta) * denoised)
        denoised_1 = denoise(x_1, sigma_batch(x_1, sigma_1))
        return step.land(1.0, sigma_next, _h_phi_1(-step.h_eta) * torch.lerp(denoised, denoised_1, 1 / (2 * r)))

    return _solve(denoise, x, sigmas, ctx, eta, s_noise, stages)


def seeds_3(denoise: Denoiser, x, sigmas, ctx: SamplingContext, eta: float = 1.0, s_noise: float = 1.0,
            r_1: float = 1 / 3, r_2: float = 2 / 3):
    """Evaluations at λ_s + r₁h and λ_s + r₂h; the step uses φ₁ and φ₂ of the first and last."""
    def stages(step: _Step, denoised, sigma_next):
        sigma_1, sigma_2 = step.sigma_at(r_1), step.sigma_at(r_2)
        x_1 = step.land(r_1, sigma_1, _h_phi_1(-r_1 * step.h_eta) * denoised)
        denoised_1 = denoise(x_1, sigma_batch(x_1, sigma_1))
        a_2 = r_2 / r_1 * _h_phi_2(-r_2 * step.h_eta)
        a_1 = _h_phi_1(-r_2 * step.h_eta) - a_2
        x_2 = step.land(r_2, sigma_2, a_1 * denoised + a_2 * denoised_1)
        denoised_2 = denoise(x_2, sigma_batch(x_2, sigma_2))
        b_3 = _h_phi_2(-step.h_eta) / r_2
        b_1 = _h_phi_1(-step.h_eta) - b_3
        return step.land(1.0, sigma_next, b_1 * denoised + b_3 * denoised_2)

    return _solve(denoise, x, sigmas, ctx, eta, s_noise, stages)
