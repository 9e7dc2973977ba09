"""UniPC (Zhao et al. 2023) as ComfyUI runs it for `uni_pc` / `uni_pc_bh2`: multistep, data
(x0) prediction, in VP space with α = 1/√(1+σ²), λ = ln(α/std); order min(3, len(σ) − 2) with
lower orders to start and to finish; the UniC corrector after every step but the last; B(h) = h
(bh1) or e^h − 1 (bh2). The final σ = 0 is replaced by 0.001, and the result mapped back to VE."""
from __future__ import annotations

import torch


def _coefficients(h: torch.Tensor, rks: list, order: int, variant: str):
    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    factorial = 1
    rows, rhs = [], []
    ratios = torch.tensor(rks + [1.0], dtype=h.dtype, device=h.device)
    for i in range(1, order + 1):
        rows.append(ratios ** (i - 1))
        rhs.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(rows), torch.stack(rhs), h_phi_1, b_h


# ComfyUI's SigmaConvert: VP quantities of σ, through log α = ½·ln(1/(σ² + 1)). Computed this
# way in float32 they are not exact (std at σ = 0.001 is a few % off), and the images follow them.
def _log_alpha(sigma):
    return 0.5 * torch.log(1 / ((sigma * sigma) + 1))


def _alpha(sigma):
    return torch.exp(_log_alpha(sigma))


def _std(sigma):
    return torch.sqrt(1. - torch.exp(2. * _log_alpha(sigma)))


def _lambda(sigma):
    log_alpha = _log_alpha(sigma)
    return log_alpha - 0.5 * torch.log(1. - torch.exp(2. * log_alpha))


def _update(x, history, t_history, t, order, model_fn, variant, use_corrector):
    """One UniP step to t from the last point of the history (and, with the corrector, UniC)."""
    alpha, std = _alpha, _std
    s0, m0 = t_history[-1], history[-1]
    lam_t, lam_s0 = _lambda(t), _lambda(s0)
    h = lam_t - lam_s0
    rks, d1s = [], []
    for i in range(1, order):
        rk = (_lambda(t_history[-(i + 1)]) - lam_s0) / h
        rks.append(float(rk))
        d1s.append((history[-(i + 1)] - m0) / rk)
    r, b, h_phi_1, b_h = _coefficients(h, rks, order, variant)
    x_t_ = std(t) / std(s0) * x - alpha(t) * h_phi_1 * m0
    if d1s:
        rhos_p = torch.tensor([0.5], dtype=x.dtype, device=x.device) if order == 2 \
            else torch.linalg.solve(r[:-1, :-1], b[:-1]).to(x.dtype)
        x_t = x_t_ - alpha(t) * b_h * sum(rho * d for rho, d in zip(rhos_p, d1s))
    else:
        x_t = x_t_
    if not use_corrector:
        return x_t, None
    model_t = model_fn(x_t, t)
    rhos_c = torch.tensor([0.5], dtype=x.dtype, device=x.device) if order == 1 \
        else torch.linalg.solve(r, b).to(x.dtype)
    correction = sum(rho * d for rho, d in zip(rhos_c[:-1], d1s)) if d1s else 0
    x_t = x_t_ - alpha(t) * b_h * (correction + rhos_c[-1] * (model_t - m0))
    return x_t, model_t


def uni_pc(denoise, x, sigmas, ctx, variant: str = "bh1"):
    timesteps = sigmas.clone()
    if timesteps[-1] == 0:
        timesteps[-1] = 0.001
    steps = len(timesteps) - 1
    # ComfyUI's order; with a single step it is 0 and the sample is never updated (its quirk)
    order = min(3, len(timesteps) - 2)

    def model_fn(x_vp, t):
        """The data prediction at σ = t, through ComfyUI's ε round trip (predict_eps_sigma)."""
        x_ve = x_vp * ((t ** 2 + 1.0) ** 0.5)
        eps = (x_ve - denoise(x_ve, t * x_vp.new_ones([x_vp.shape[0]]))) / t
        return (x_vp - _std(t) * eps) / _alpha(t)

    x = x / torch.sqrt(1.0 + timesteps[0] ** 2)
    t_history, history = [timesteps[0]], [model_fn(x, timesteps[0])]
    for step in range(1, steps + 1 if order > 0 else 1):
        t = timesteps[step]
        step_order = min(step, order, steps + 1 - step)  # warm-up and lower_order_final
        x, model_x = _update(x, history, t_history, t, step_order, model_fn, variant, use_corrector=step < steps)
        t_history, history = (t_history + [t])[-order:], history
        if step < steps:
            history = (history + [model_x])[-order:]
        ctx.on_step(step, steps)
    return x / _alpha(timesteps[-1])
