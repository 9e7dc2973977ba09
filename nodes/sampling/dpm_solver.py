"""DPM-Solver (Lu et al. 2022) as k-diffusion's `DPMSolver` runs it for ComfyUI's `dpm_fast`
(fixed orders 3,…,3,2,1 or 3,…,r over a λ-uniform grid with `steps` model calls) and
`dpm_adaptive` (embedded 2/3-order pairs with a PID step-size controller). Both integrate from
σ_max to the smallest σ > 0 of the schedule, in λ = −ln σ, with ε predictions."""
from __future__ import annotations

import math

import torch

from .base import ancestral_step


class _Solver:
    def __init__(self, denoise, x):
        self.denoise, self.ones = denoise, x.new_ones([x.shape[0]])

    @staticmethod
    def sigma(t):
        return t.neg().exp()

    def eps(self, cache: dict, key: str, x, t):
        if key not in cache:
            cache[key] = (x - self.denoise(x, self.sigma(t) * self.ones)) / self.sigma(t)
        return cache[key]

    def step_1(self, x, t, t_next, cache):
        h = t_next - t
        return x - self.sigma(t_next) * h.expm1() * self.eps(cache, "eps", x, t)

    def step_2(self, x, t, t_next, cache, r1=0.5):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = x - self.sigma(s2) * (r2 * h).expm1() * eps \
            - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)


def _range(sigmas):
    """ComfyUI's ends: σ_max and the last σ, or the one before a final 0."""
    low = sigmas[-1] if sigmas[-1] > 0 else sigmas[-2]
    return -sigmas[0].log(), -low.log()


def dpm_fast(denoise, x, sigmas, ctx):
    if len(sigmas) <= 1:
        return x
    solver = _Solver(denoise, x)
    t_start, t_end = _range(sigmas)
    calls = len(sigmas) - 1
    m = math.floor(calls / 3) + 1
    ts = torch.linspace(float(t_start), float(t_end), m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if calls % 3 == 0 else [3] * (m - 1) + [calls % 3]
    step = {1: solver.step_1, 2: solver.step_2, 3: solver.step_3}
    for i, order in enumerate(orders):
        x = step[order](x, ts[i], ts[i + 1], {})
        ctx.on_step(i + 1, len(orders))
    return x


class _StepSize:
    """k-diffusion's PID step-size controller (integral-only with ComfyUI's defaults)."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order, accept_safety, eps=1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety, self.eps = accept_safety, eps
        self.errs: list[float] = []

    def propose(self, error) -> bool:
        inverse = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inverse, inverse, inverse]
        self.errs[0] = inverse
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return accept


def dpm_adaptive(denoise, x, sigmas, ctx, order: int = 3, rtol: float = 0.05, atol: float = 0.0078,
                 h_init: float = 0.05, pcoeff: float = 0.0, icoeff: float = 1.0, dcoeff: float = 0.0,
                 accept_safety: float = 0.81, eta: float = 0.0, s_noise: float = 1.0):
    """With eta > 0 each step lands at the ancestral σ↓ and adds fresh noise up to its σ (the
    seeded per-step noise of the ancestral samplers), and the controller assumes order 1.5."""
    if len(sigmas) <= 1:
        return x
    if order not in (2, 3):
        raise ValueError(f"dpm_adaptive's order must be 2 or 3, not {order}")
    solver = _Solver(denoise, x)
    s, t_end = _range(sigmas)
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    x_prev = x
    controller = _StepSize(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    noise = ctx.step_noise(x) if eta else None
    accepted = 0
    while s < t_end - 1e-5:
        cache: dict = {}
        t = torch.minimum(t_end, s + controller.h)
        landing, up = t, 0.0
        if eta:
            down, _ = ancestral_step(solver.sigma(s), solver.sigma(t), eta)
            landing = torch.minimum(t_end, -down.log())
            up = (solver.sigma(t) ** 2 - solver.sigma(landing) ** 2) ** 0.5
        if order == 2:
            x_low, x_high = solver.step_1(x, s, landing, cache), solver.step_2(x, s, landing, cache)
        else:
            x_low, x_high = solver.step_2(x, s, landing, cache, r1=1 / 3), solver.step_3(x, s, landing, cache)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if controller.propose(error):
            x_prev, x = x_low, x_high
            if eta:
                x = x + up * s_noise * noise(solver.sigma(s), solver.sigma(t))
            s = t
            accepted += 1
            ctx.on_step(accepted, accepted + 1)
    return x
