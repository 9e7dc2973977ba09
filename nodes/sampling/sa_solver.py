"""SA-Solver (Xue et al. 2023): a stochastic Adams predictor (order 3) and corrector (order 4)
in data prediction over λ = −ln σ. Stochastic only inside the middle of the schedule (by default σ
between the 20 % and 80 % points, τ = 1), an ODE solver elsewhere; the PECE form re-evaluates the
corrected state. ε-prediction models have α = 1, which these formulas assume."""
from __future__ import annotations

import math

import torch

from .base import Denoiser, SamplingContext, lambda_of, sigma_batch


def adams_weights(lambdas, lam_s, lam_t, tau: float) -> torch.Tensor:
    """The weights b_k of the estimates at `lambdas` for the step λ_s → λ_t: the integral of
    e^{(1+τ²)(λ−λ_t)}·(1+τ²) times each Lagrange basis polynomial, from the moments
    ∫ e^{(1+τ²)(λ−λ_t)}(1+τ²)λ^p dλ (integration by parts) and a Vandermonde solve."""
    count = lambdas.shape[0]
    stretch = 1 + tau ** 2
    p = torch.arange(count, dtype=lam_s.dtype, device=lam_s.device)
    boundary = lam_t ** p - lam_s ** p * (-stretch * (lam_t - lam_s)).exp()
    depth = p.unsqueeze(1) - p.unsqueeze(0)
    log_factorial = (p + 1).lgamma()
    log_ratio = log_factorial.unsqueeze(1) - log_factorial.unsqueeze(0)
    if tau > 0:
        log_ratio = log_ratio - depth * math.log(stretch)
    signs = torch.where(depth % 2 == 0, 1.0, -1.0)
    moments = (log_ratio.exp() * signs).tril() @ boundary
    vandermonde = torch.vander(lambdas, count, increasing=True)
    return torch.linalg.solve(vandermonde.T, moments)


def simple_order_2_weights(lambdas, lam_s, lam_t, tau: float, corrector: bool) -> torch.Tensor:
    """SamplerSASolver's `simple_order_2`: closed-form two-estimate weights instead of the solve."""
    stretch, h = 1 + tau ** 2, lam_t - lam_s
    whole = (-h * stretch).expm1().neg()
    if corrector:
        newer = 0.5 * stretch * h
        return torch.stack([whole - newer, newer])
    older = 0.5 * stretch * h ** 2 / (lambdas[-2] - lam_s)
    return torch.stack([older, whole - older])


def sa_solver(denoise: Denoiser, x, sigmas, ctx: SamplingContext, s_noise: float = 1.0,
              predictor_order: int = 3, corrector_order: int = 4, pece: bool = False,
              tau_window: tuple[float, float, float] | None = None, simple_order_2: bool = False):
    """`tau_window`: (σ start, σ end, η), the stochastic stretch; by default the 20 %–80 % points
    of the model's schedule with η = 1."""
    if len(sigmas) <= 1:
        return x
    noise = ctx.step_noise(x)
    lambdas = lambda_of(sigmas)
    start, end, eta = tau_window or (ctx.percent_to_sigma(0.2), ctx.percent_to_sigma(0.8), 1.0)

    def tau_at(sigma) -> float:
        return eta if eta > 0 and start >= float(sigma) >= end else 0.0

    def weights_for(window, lam_s, lam_t, tau, corrector: bool):
        if simple_order_2 and window.shape[0] == 2:
            return simple_order_2_weights(window, lam_s, lam_t, tau, corrector)
        return adams_weights(window, lam_s, lam_t, tau)

    x_pred, h, tau, step_noise = x, 0.0, 0.0, 0.0
    estimates: list[torch.Tensor] = []  # oldest first
    # lower the orders towards a final σ = 0, for stability
    to_zero = float(sigmas[-1]) == 0
    for i in range(len(sigmas) - 1):
        denoised = denoise(x_pred, sigma_batch(x, sigmas[i]))
        estimates = (estimates + [denoised])[-max(predictor_order, corrector_order):]
        p_order = min(predictor_order, len(estimates))
        c_order = 0 if i == 0 or (sigmas[i + 1] == 0 and not pece) else min(corrector_order, len(estimates))
        if to_zero:
            p_order = min(p_order, len(sigmas) - 2 - i)
            c_order = min(c_order, len(sigmas) - 1 - i)

        if c_order == 0:
            x = x_pred
        else:
            weights = weights_for(lambdas[i - c_order + 1:i + 1], lambdas[i - 1], lambdas[i], tau, corrector=True)
            x = sigmas[i] / sigmas[i - 1] * (-(tau ** 2) * h).exp() * x + _combine(estimates[-c_order:], weights)
            if tau > 0 and s_noise > 0:
                x = x + step_noise
            if pece:
                denoised = denoise(x, sigma_batch(x, sigmas[i]))
                estimates[-1] = denoised

        if sigmas[i + 1] == 0:
            x_pred = denoised
        else:
            tau = tau_at(sigmas[i + 1])
            weights = weights_for(lambdas[i - p_order + 1:i + 1], lambdas[i], lambdas[i + 1], tau, corrector=False)
            h = lambdas[i + 1] - lambdas[i]
            x_pred = sigmas[i + 1] / sigmas[i] * (-(tau ** 2) * h).exp() * x + _combine(estimates[-p_order:], weights)
            if tau > 0 and s_noise > 0:
                spread = (-2 * tau ** 2 * h).expm1().neg().sqrt()
                step_noise = noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * spread * s_noise
                x_pred = x_pred + step_noise
        ctx.on_step(i + 1, len(sigmas) - 1)
    return x_pred


def _combine(estimates: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    return torch.tensordot(torch.stack(estimates, dim=1), weights, dims=([1], [0]))


def sa_solver_pece(denoise: Denoiser, x, sigmas, ctx: SamplingContext):
    return sa_solver(denoise, x, sigmas, ctx, pece=True)
