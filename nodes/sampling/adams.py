"""Linear multistep samplers on the slope d = (x − D)/σ: iPNDM (Adams–Bashforth), iPNDM-v (its
weights for uneven steps) and DEIS (Zhang & Chen 2022, its tabulated 'tab' form). Each keeps the
last few slopes, newest first, and ends on D."""
from __future__ import annotations

import torch

from .base import Denoiser, SamplingContext, sigma_batch, to_d


def ipndm(denoise: Denoiser, x, sigmas, ctx: SamplingContext, max_order: int = 4):
    """Improved pseudo-numerical steps: Adams–Bashforth's fixed weights, up to 4th order."""
    def slope(i, order, slopes):
        return sum(c * s for c, s in zip(_ADAMS_BASHFORTH[order], slopes)) / _ADAMS_BASHFORTH_DIVISOR[order]

    return _multistep(denoise, x, sigmas, ctx, max_order, slope)


def ipndm_v(denoise: Denoiser, x, sigmas, ctx: SamplingContext, max_order: int = 4):
    """Adams–Bashforth weights recomputed for the actual step ratios h_n/h_{n−1}…, up to 4th
    order."""
    def slope(i, order, slopes):
        return sum(w * s for w, s in zip(_variable_step_weights(sigmas, i, order), slopes))

    return _multistep(denoise, x, sigmas, ctx, max_order, slope)


_ADAMS_BASHFORTH = {1: (1,), 2: (3, -1), 3: (23, -16, 5), 4: (55, -59, 37, -9)}
_ADAMS_BASHFORTH_DIVISOR = {1: 1, 2: 2, 3: 12, 4: 24}


def _multistep(denoise: Denoiser, x, sigmas, ctx: SamplingContext, max_order: int, slope):
    """x' = x + (σ' − σ)·slope(i, order, [d_i, d_{i−1}, …]); the final step lands on D."""
    slopes: list[torch.Tensor] = []  # newest first
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigma_batch(x, sigmas[i]))
        d = to_d(x, sigmas[i], denoised)
        order = min(max_order, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = x + (sigmas[i + 1] - sigmas[i]) * slope(i, order, ([d] + slopes)[:order])
        slopes = ([d] + slopes)[:max_order - 1]
        ctx.on_step(i + 1, len(sigmas) - 1)
    return x


def _variable_step_weights(sigmas, i: int, order: int) -> list:
    """The weights of d_i, d_{i−1}, … for step i (Zhang et al.'s iPNDM-v)."""
    if order == 1:
        return [1.0]
    h = [sigmas[i + 1] - sigmas[i]] + [sigmas[i - k] - sigmas[i - k - 1] for k in range(order - 1)]
    ratio = h[0] / h[1]
    weights = [(2 + ratio) / 2, -ratio / 2]
    if order == 2:
        return weights
    third = (1 - h[0] / (3 * (h[0] + h[1])) * (h[0] * (h[0] + h[1])) / (h[1] * (h[1] + h[2]))) / 2
    weights = [weights[0] + third, weights[1] - (1 + h[1] / h[2]) * third, third * h[1] / h[2]]
    if order == 3:
        return weights
    earlier = h[1] * (h[1] + h[2]) / (h[2] * (h[2] + h[3]))
    fourth = ((1 - h[0] / (3 * (h[0] + h[1]))) / 2 + (1 - h[0] / (2 * (h[0] + h[1]))) * h[0] / (6 * (h[0] + h[1] + h[2]))) \
        * (h[0] * (h[0] + h[1]) * (h[0] + h[1] + h[2])) / (h[1] * (h[1] + h[2]) * (h[1] + h[2] + h[3]))
    return [weights[0] + fourth,
            weights[1] - (1 + h[1] / h[2] + earlier) * fourth,
            weights[2] + (h[1] / h[2] + earlier * (1 + h[2] / h[3])) * fourth,
            -fourth * earlier * h[1] / h[2]]


def deis(denoise: Denoiser, x, sigmas, ctx: SamplingContext, max_order: int = 3):
    """DEIS-tab: x' = x + Σ_j C_j·d_{i−j}, where C_j integrates d's Lagrange basis polynomial (in
    the VP time t of EDM's schedule) over σ from σ_i to σ_{i+1}."""
    coefficients = _deis_coefficients(sigmas, max_order)
    slopes: list[torch.Tensor] = []  # newest first
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigma_batch(x, sigmas[i]))
        d = to_d(x, sigmas[i], denoised)
        order = 1 if sigmas[i + 1] <= 0 else min(max_order, i + 1)
        if order == 1:
            x = x + (sigmas[i + 1] - sigmas[i]) * d
        else:
            x = x + sum(c * s for c, s in zip(coefficients[i], [d] + slopes))
        slopes = ([d] + slopes)[:max_order - 1]
        ctx.on_step(i + 1, len(sigmas) - 1)
    return x


# DEIS maps σ to the time of a VP SDE fitted to EDM's range, whatever the model's own range
_EPSILON_S, _EDM_SIGMA_MIN, _EDM_SIGMA_MAX = 1e-3, 0.002, 80.0
_QUADRATURE_POINTS = 10000


def _deis_coefficients(sigmas, max_order: int) -> list[list[torch.Tensor]]:
    """Per step, the weights of the newest slopes, integrated by a left Riemann sum over 10 000
    points in float32, as the DEIS reference does (steps of order 1 get none)."""
    sigmas = sigmas.detach().float().cpu()
    log_max = torch.log(torch.tensor(_EDM_SIGMA_MAX) ** 2 + 1)
    log_min = torch.log(torch.tensor(_EDM_SIGMA_MIN) ** 2 + 1)
    beta_d = 2 * (log_min / _EPSILON_S - log_max) / (_EPSILON_S - 1)
    beta_min = log_max - 0.5 * beta_d
    times = ((beta_min ** 2 + 2 * beta_d * (sigmas ** 2 + 1).log()).sqrt() - beta_min) / beta_d

    def dsigma_dt(taus):  # −½ (d ln α/dt) / √(α(1 − α)) for α = exp(−½ β_d t² − β_min t)
        alpha = torch.exp(-0.5 * taus ** 2 * beta_d - taus * beta_min)
        return -0.5 * (-taus * beta_d - beta_min) / torch.sqrt(alpha * (1 - alpha))

    coefficients: list[list[torch.Tensor]] = []
    for i in range(len(times) - 1):
        order = min(i + 1, max_order)
        if order == 1 or sigmas[i + 1] <= 0:
            coefficients.append([])
            continue
        taus = torch.linspace(float(times[i]), float(times[i + 1]), _QUADRATURE_POINTS)
        dtau = (times[i + 1] - times[i]) / _QUADRATURE_POINTS
        nodes = [times[i - k] for k in range(order)]
        weight = dsigma_dt(taus)
        row = []
        for j in range(order):
            basis = torch.ones_like(taus)
            for k in range(order):
                if k != j:
                    basis = basis * (taus - nodes[k]) / (nodes[j] - nodes[k])
            row.append(torch.sum(weight * basis) * dtau)
        coefficients.append(row)
    return coefficients
