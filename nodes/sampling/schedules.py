"""The σ schedules of ComfyUI's `scheduler` widget, and KSampler's step/denoise arithmetic.
Every schedule ends with σ = 0."""
from __future__ import annotations

import math

import torch

from .model_sampling import DiscreteSampling
from .names import DISCARD_PENULTIMATE_SIGMA, SCHEDULERS

# Align Your Steps' σ for 10 steps (Sabour, Fidler & Kreis 2024), per model kind
AYS_NOISE_LEVELS = {
    "SD1": (14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
            0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582),
    "SDXL": (14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582),
    "SVD": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((high + ramp * (low - high)) ** rho)


def exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    ramp = torch.linspace(1, 0, n) ** rho
    return _append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def variance_preserving(n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> torch.Tensor:
    t = torch.linspace(1, eps_s, n)
    return _append_zero(torch.sqrt(torch.exp(beta_d * t ** 2 / 2 + beta_min * t) - 1))


def laplace(n: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta: float = 0.5) -> torch.Tensor:
    """Tiankai et al. (2024): log σ spaced by a Laplace distribution's quantiles around `mu`,
    clamped to [σ_min, σ_max]. As in ComfyUI, n values and no final 0: the run stops at σ_min."""
    x = torch.linspace(0, 1, n)
    lam = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + 1e-5)
    return torch.clamp(torch.exp(lam), min=sigma_min, max=sigma_max)


def extended(sigmas: torch.Tensor, steps: int, start_at_sigma: float, end_at_sigma: float,
             spacing: str) -> torch.Tensor:
    """`steps − 1` σ inserted into every interval whose upper end lies in [end, start]
    (start < 0: no upper bound), spaced linearly or by a quarter sine / cosine."""
    if start_at_sigma < 0:
        start_at_sigma = float("inf")
    shape = {"linear": lambda t: t, "cosine": lambda t: torch.sin(t * math.pi / 2),
             "sine": lambda t: 1 - torch.cos(t * math.pi / 2)}[spacing]
    fractions = shape(torch.linspace(0, 1, steps + 1)[1:-1])
    out: list[float] = []
    for current, following in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        out.append(current)
        if end_at_sigma <= current <= start_at_sigma:
            out.extend((fractions * (following - current) + current).tolist())
    if len(sigmas) > 0:
        out.append(float(sigmas[-1]))
    return torch.tensor(out, dtype=torch.float32)


def align_your_steps(model_type: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The table, log-linearly interpolated to `steps`, its last `steps·denoise` steps, ending at 0."""
    import numpy as np

    if denoise <= 0.0:
        return torch.zeros(0)
    total = round(steps * denoise) if denoise < 1.0 else steps
    sigmas = list(AYS_NOISE_LEVELS[model_type])
    if steps + 1 != len(sigmas):
        positions = np.linspace(0, 1, len(sigmas))
        logs = np.log(sigmas[::-1])
        sigmas = list(np.exp(np.interp(np.linspace(0, 1, steps + 1), positions, logs))[::-1])
    sigmas = sigmas[-(total + 1):]
    sigmas[-1] = 0
    return torch.tensor(np.array(sigmas, dtype=np.float64), dtype=torch.float32)


def _uniform_in_t(ms: DiscreteSampling, steps: int, sgm: bool) -> torch.Tensor:
    start = float(ms.timestep(ms.sigma_max))
    end = float(ms.timestep(ms.sigma_min))
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=1e-5):  # tables that reach σ = 0 themselves
            steps, append_zero = steps + 1, False
        timesteps = torch.linspace(start, end, steps)
    sigmas = torch.stack([ms.sigma(t) for t in timesteps])
    return _append_zero(sigmas) if append_zero else sigmas


def _simple(ms: DiscreteSampling, steps: int) -> torch.Tensor:
    stride = len(ms.sigmas) / steps
    return _append_zero(torch.tensor([float(ms.sigmas[-(1 + int(k * stride))]) for k in range(steps)]))


def _ddim_uniform(ms: DiscreteSampling, steps: int) -> torch.Tensor:
    # 1000 // steps strides from t = 1: more than `steps` values when 1000 % steps != 0, as ComfyUI
    stride = max(len(ms.sigmas) // steps, 1)
    picked = [float(ms.sigmas[t]) for t in range(1, len(ms.sigmas), stride)]
    return _append_zero(torch.tensor(picked[::-1]))


def _beta(ms: DiscreteSampling, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    import numpy as np
    from scipy import stats

    last = len(ms.sigmas) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    timesteps = np.rint(stats.beta.ppf(quantiles, alpha, beta) * last)
    picked, previous = [], -1
    for t in timesteps:
        if t != previous:  # repeated timesteps are dropped, so short schedules may lose steps
            picked.append(float(ms.sigmas[int(t)]))
        previous = t
    return _append_zero(torch.tensor(picked))


def _linear_quadratic(ms: DiscreteSampling, steps: int, threshold: float = 0.025) -> torch.Tensor:
    """Mochi's schedule in 1 − σ/σ_max: linear to `threshold` over the first half, then quadratic."""
    if steps == 1:
        levels = [1.0, 0.0]
    else:
        linear_steps = steps // 2
        quadratic_steps = steps - linear_steps
        step_gap = linear_steps - threshold * steps
        quad = step_gap / (linear_steps * quadratic_steps ** 2)
        lin = threshold / linear_steps - 2 * step_gap / quadratic_steps ** 2
        const = quad * linear_steps ** 2
        rising = [k * threshold / linear_steps for k in range(linear_steps)]
        rising += [quad * k ** 2 + lin * k + const for k in range(linear_steps, steps)]
        levels = [1.0 - v for v in rising + [1.0]]
    return torch.tensor(levels, dtype=torch.float32) * ms.sigma_max


def _kl_optimal(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    fraction = torch.arange(n, dtype=torch.float32) / (n - 1)
    sigmas = torch.zeros(n + 1)
    sigmas[:-1] = (fraction * math.atan(sigma_min) + (1 - fraction) * math.atan(sigma_max)).tan()
    return sigmas


def schedule(ms: DiscreteSampling, name: str, steps: int) -> torch.Tensor:
    """σ_0 > … > 0 for `steps` steps of scheduler `name` (float32)."""
    if name in ("normal", "sgm_uniform"):
        return _uniform_in_t(ms, steps, sgm=name == "sgm_uniform")
    if name == "simple":
        return _simple(ms, steps)
    if name == "ddim_uniform":
        return _ddim_uniform(ms, steps)
    if name == "beta":
        return _beta(ms, steps)
    if name == "linear_quadratic":
        return _linear_quadratic(ms, steps)
    if name == "karras":
        return karras(steps, ms.sigma_min, ms.sigma_max)
    if name == "exponential":
        return exponential(steps, ms.sigma_min, ms.sigma_max)
    if name == "kl_optimal":
        return _kl_optimal(steps, ms.sigma_min, ms.sigma_max)
    raise ValueError(f"unknown scheduler {name!r}; expected one of {', '.join(SCHEDULERS)}")


def ksampler_sigmas(ms: DiscreteSampling, sampler: str, scheduler: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """KSampler's schedule: the whole one at full denoise; otherwise the last `steps + 1` values
    of a schedule for `int(steps / denoise)` steps, so `steps` steps always run."""
    if denoise <= 0.0:
        return torch.zeros(0)
    total = steps if denoise > 0.9999 else int(steps / denoise)
    discard = sampler in DISCARD_PENULTIMATE_SIGMA
    sigmas = schedule(ms, scheduler, total + 1 if discard else total)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas if denoise > 0.9999 else sigmas[-(steps + 1):]


def truncate(sigmas: torch.Tensor, start_at_step: int, end_at_step: int, force_full_denoise: bool) -> torch.Tensor | None:
    """KSamplerAdvanced's window. None means: run nothing, return the input latent."""
    if end_at_step < len(sigmas) - 1:
        sigmas = sigmas[:end_at_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_at_step < len(sigmas) - 1:
        return sigmas[start_at_step:]
    return None
