"""ModelSamplingDiscrete: the 1000-step σ table of SD/SDXL and how a denoiser sees it; and the
continuous σ of EDM-style models (ModelSamplingContinuousEDM / V).

Samplers live in VE space (`x = x0 + σ·n`); the UNet sees `x·c_in` and the nearest *integer*
timestep, and its output is turned back into a denoised estimate by the prediction type.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

# eps and v: what SD/SDXL checkpoints predict; x0, lcm and img_to_img: ModelSamplingDiscrete's
# other choices (lcm also samples on its distilled 50-step table, see LcmSampling)
Prediction = Literal["eps", "v", "x0", "lcm", "img_to_img", "edm"]


def _sigma_table(linear_start: float, linear_end: float, timesteps: int, zero_terminal_snr: bool) -> torch.Tensor:
    """σ_t in float64 (ComfyUI's "linear" betas are diffusers' scaled_linear, in float64)."""
    betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    if zero_terminal_snr:
        alphas_cumprod = _rescale_zero_terminal_snr(alphas_cumprod)
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def _rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023: shift and scale √ᾱ so the last step has zero SNR; the last ᾱ is then
    nudged off zero so σ stays finite (as ComfyUI does for ztsnr checkpoints)."""
    root = alphas_cumprod.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    alphas_cumprod = root ** 2
    alphas_cumprod[-1] = 4.8973451890853435e-08
    return alphas_cumprod


@dataclass(frozen=True, eq=False)
class DiscreteSampling:
    """σ_t for t = 0…999 and the prediction type (sigma_data = 1)."""

    prediction: Prediction = "eps"
    linear_start: float = 0.00085
    linear_end: float = 0.012
    zero_terminal_snr: bool = False
    sigmas: torch.Tensor = field(init=False, repr=False)
    log_sigmas: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        sigmas = _sigma_table(self.linear_start, self.linear_end, 1000, self.zero_terminal_snr)
        # both stored in float32, the log taken before the rounding, as ComfyUI stores them
        object.__setattr__(self, "sigmas", sigmas.float())
        object.__setattr__(self, "log_sigmas", sigmas.log().float())

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma(self, timestep) -> torch.Tensor:
        """σ at a (fractional) timestep: linear interpolation in log σ."""
        t = torch.as_tensor(timestep, dtype=torch.float32).clamp(0, len(self.sigmas) - 1)
        low = t.floor().long()
        high = t.ceil().long()
        weight = t - low
        return ((1 - weight) * self.log_sigmas[low] + weight * self.log_sigmas[high]).exp()

    def timestep(self, sigma) -> torch.Tensor:
        """The nearest integer timestep to σ (as float): what the UNet is given."""
        log_sigma = torch.as_tensor(sigma, dtype=torch.float32).log()
        distances = (log_sigma.reshape(-1)[None, :] - self.log_sigmas[:, None]).abs()
        return distances.argmin(dim=0).reshape(log_sigma.shape).float()

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * 999.0)))

    def model_input(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x·c_in, as ComfyUI computes it: x / √(σ² + 1) (img_to_img models take x as it is)."""
        if self.prediction == "img_to_img":
            return x
        return x / (sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1)) ** 2 + 1.0) ** 0.5

    def denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor) -> torch.Tensor:
        sigma = sigma.reshape(sigma.shape[:1] + (1,) * (model_output.ndim - 1))
        if self.prediction == "v":
            return model_input / (sigma ** 2 + 1.0) - model_output * sigma / (sigma ** 2 + 1.0) ** 0.5
        if self.prediction in ("x0", "img_to_img"):
            return model_output
        return model_input - model_output * sigma

    def noise_scaling(self, sigma, noise: torch.Tensor, latent: torch.Tensor, max_denoise: bool = False):
        """The sampler's start: full denoise starts at √(1+σ²)·n (the VP prior), anything less at σ·n.
        In float32 tensor arithmetic, as ComfyUI computes it (a float64 √ can round differently)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=noise.device)
        scale = torch.sqrt(1.0 + sigma ** 2.0) if max_denoise else sigma
        return noise * scale + latent

    def is_max_denoise(self, sigma: float) -> bool:
        return math.isclose(self.sigma_max, sigma, rel_tol=1e-05) or sigma > self.sigma_max


@dataclass(frozen=True, eq=False)
class LcmSampling(DiscreteSampling):
    """ComfyUI's ModelSamplingDiscreteDistilled with LCM's boundary conditions: the 50 σ an
    LCM was distilled on (every 20th of the table, ending at t = 999), timesteps mapped back to
    the full table (index·20 + 19), and x0 = c_skip·x + c_out·(x − σ·ε) at 10× the timestep."""

    prediction: Prediction = "lcm"
    original_steps: int = 50

    def __post_init__(self):
        super().__post_init__()
        skip = len(self.sigmas) // self.original_steps
        picked = torch.stack([self.sigmas[len(self.sigmas) - 1 - k * skip] for k in range(self.original_steps)]).flip(0)
        object.__setattr__(self, "skip", skip)
        object.__setattr__(self, "sigmas", picked.float())
        object.__setattr__(self, "log_sigmas", picked.float().log())

    def timestep(self, sigma) -> torch.Tensor:
        return super().timestep(sigma) * self.skip + (self.skip - 1)

    def sigma(self, timestep) -> torch.Tensor:
        t = (torch.as_tensor(timestep, dtype=torch.float32) - (self.skip - 1)) / self.skip
        return super().sigma(t)

    def denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor) -> torch.Tensor:
        timestep = self.timestep(sigma).reshape(sigma.shape[:1] + (1,) * (model_output.ndim - 1)) * 10.0
        x0 = super().denoised(sigma, model_output, model_input)
        sigma_data = 0.5
        c_skip = sigma_data ** 2 / (timestep ** 2 + sigma_data ** 2)
        c_out = timestep / (timestep ** 2 + sigma_data ** 2) ** 0.5
        return c_out * x0 + c_skip * model_input


@dataclass(frozen=True, eq=False)
class ContinuousSampling(DiscreteSampling):
    """ComfyUI's ModelSamplingContinuousEDM (and ContinuousV): σ anywhere in [σ_min, σ_max], the
    UNet given t = ¼·ln σ (or, `arctan`, 2·atan(σ)/π), inputs scaled by 1/√(σ² + σ_data²), and
    eps, v or EDM outputs with σ_data. The 1000-entry table, log-spaced, serves the schedulers."""

    prediction: Prediction = "v"
    sigma_low: float = 0.002
    sigma_high: float = 120.0
    sigma_data: float = 1.0
    arctan: bool = False

    def __post_init__(self):
        sigmas = torch.linspace(math.log(self.sigma_low), math.log(self.sigma_high), 1000).exp()
        object.__setattr__(self, "sigmas", sigmas)
        object.__setattr__(self, "log_sigmas", sigmas.log())

    def timestep(self, sigma) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        return sigma.atan() / math.pi * 2 if self.arctan else 0.25 * sigma.log()

    def sigma(self, timestep) -> torch.Tensor:
        timestep = torch.as_tensor(timestep, dtype=torch.float32)
        return (timestep * math.pi / 2).tan() if self.arctan else (timestep / 0.25).exp()

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        low = math.log(self.sigma_min)
        return math.exp((math.log(self.sigma_max) - low) * (1.0 - percent) + low)

    def model_input(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1))
        return x / (sigma ** 2 + self.sigma_data ** 2) ** 0.5

    def denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor) -> torch.Tensor:
        if self.prediction == "eps":
            return super().denoised(sigma, model_output, model_input)
        sigma = sigma.reshape(sigma.shape[:1] + (1,) * (model_output.ndim - 1))
        data = self.sigma_data
        skip = model_input * data ** 2 / (sigma ** 2 + data ** 2)
        out = model_output * sigma * data / (sigma ** 2 + data ** 2) ** 0.5
        return skip + out if self.prediction == "edm" else skip - out


def model_sampling(prediction: str, zero_terminal_snr: bool = False, continuous: tuple | None = None
                   ) -> DiscreteSampling:
    """`continuous`: (σ_min, σ_max, σ_data, arctan timesteps) for ContinuousSampling."""
    if continuous is not None:
        low, high, data, arctan = continuous
        return ContinuousSampling(prediction=prediction, sigma_low=low, sigma_high=high, sigma_data=data,
                                  arctan=arctan)
    if prediction == "lcm":
        return LcmSampling(zero_terminal_snr=zero_terminal_snr)
    return DiscreteSampling(prediction=prediction, zero_terminal_snr=zero_terminal_snr)
