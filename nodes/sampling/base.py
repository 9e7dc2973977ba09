"""What every sampler shares: the context it draws noise and reports steps through, and the
small step formulas of k-diffusion (d, the ancestral split, DPM-Solver's λ = −ln σ)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .noise import BrownianTreeNoiseSampler, GlobalGenerators, NoiseSampler, device_noise_sampler

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, σ per image) -> x0 estimate


@dataclass
class SamplingContext:
    seed: int
    on_step: Callable[[int, int], None] = lambda done, total: None
    # Some samplers (lcm) re-noise through the model's parameterisation.
    noise_scaling: Callable | None = None
    # A test or a custom noise node may supply its own source.
    noise_sampler: NoiseSampler | None = None
    # CFG++ samplers read the unconditional x0 estimate of the last denoiser call
    uncond: Callable[[], torch.Tensor] | None = None
    # The σ at a fraction of the model's schedule (SA-Solver's stochastic window)
    percent_to_sigma: Callable[[float], float] | None = None
    # What stands for torch's global generators (SamplerLCMUpscale's re-noising)
    generators: GlobalGenerators | None = None

    def global_generator(self, device) -> torch.Generator:
        """The generator standing for torch's global one on `device` (seeded with the seed when
        the caller gave none)."""
        if self.generators is None:
            self.generators = GlobalGenerators(torch.Generator("cpu").manual_seed(self.seed), self.seed)
        return self.generators.on(device)

    def step_noise(self, x: torch.Tensor) -> NoiseSampler:
        return self.noise_sampler or device_noise_sampler(x, self.seed)

    def brownian_noise(self, x, sigmas, on_cpu: bool) -> NoiseSampler:
        if self.noise_sampler is not None:
            return self.noise_sampler
        return BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), self.seed, on_cpu=on_cpu)


def sigma_batch(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return sigma * x.new_ones([x.shape[0]])


def to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def ancestral_step(sigma, sigma_next, eta: float = 1.0):
    """Split the step to σ' into a deterministic part down to σ↓ and fresh noise of size σ↑."""
    if not eta:
        return sigma_next, torch.zeros_like(sigma_next)
    sigma_up = torch.minimum(sigma_next, eta * (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5)
    return (sigma_next ** 2 - sigma_up ** 2) ** 0.5, sigma_up


def lambda_of(sigma):  # DPM-Solver's λ = −ln σ
    return sigma.log().neg()


def sigma_of(t):
    return t.neg().exp()
