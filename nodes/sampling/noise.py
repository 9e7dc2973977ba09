"""Where ComfyUI's random numbers come from.

- Initial noise: the CPU generator seeded with the seed, float32, drawn per `batch_index` when
  the latent has one (LatentFromBatch, RepeatLatentBatch).
- Per-step noise of ancestral samplers: a generator on the sample's device seeded with the same
  seed, one draw of the whole batch per call.
- SDE samplers: torchsde's Brownian tree over [σ_min, σ_max] of the schedule, seeded likewise;
  on the CPU for the plain names and on the device for the `_gpu` ones.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

# torchsde warns when σ_max, rounded to float32 on its way in, lands a hair past the tree's end;
# the increment is still right, and the message would print on every SDE run.
warnings.filterwarnings("ignore", message="Should have t[ab]", category=UserWarning)

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def initial_noise(shape, seed: int, batch_index: list[int] | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The noise ComfyUI's prepare_noise draws. `generator`, when given, is the one drawn from,
    left in the state ComfyUI leaves torch's global generator in (what HyperTile draws from)."""
    # A private generator gives the numbers torch.manual_seed(seed) would, without touching the
    # process-wide RNG that other code (and other runs) share.
    generator = (generator or torch.Generator("cpu")).manual_seed(seed)
    if batch_index is None:
        return torch.randn(list(shape), dtype=torch.float32, generator=generator)
    draws = [torch.randn([1, *shape[1:]], dtype=torch.float32, generator=generator)
             for _ in range(max(batch_index) + 1)]
    return torch.cat([draws[i] for i in batch_index])


class GlobalGenerators:
    """Where the draws ComfyUI takes from torch's global generators during sampling come from
    (HyperTile, ToMe, SamplerLCMUpscale): on the CPU, the generator in the state its seeded
    initial noise leaves the global one; on a GPU, one seeded with the seed, as
    `torch.manual_seed(seed)` seeds every device and the CPU noise leaves the GPU's untouched."""

    def __init__(self, cpu: torch.Generator, seed: int):
        self.seed, self._by_device = seed, {"cpu": cpu}

    def on(self, device) -> torch.Generator:
        device = torch.device(device)
        if device.type not in self._by_device:
            self._by_device[device.type] = torch.Generator(device).manual_seed(self.seed)
        return self._by_device[device.type]


def device_noise_sampler(x: torch.Tensor, seed: int) -> NoiseSampler:
    generator = torch.Generator(x.device).manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)


class BrownianTreeNoiseSampler:
    """Unit-variance increments `(W(σ') − W(σ)) / √|σ' − σ|` of one Brownian tree per sampling
    call, so the noise depends on σ, not on the step count's accidents."""

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seed: int, on_cpu: bool = True):
        import torchsde

        self.device, self.dtype, self.on_cpu = x.device, x.dtype, on_cpu
        t0, t1 = sorted((float(sigma_min), float(sigma_max)))
        where = "cpu" if on_cpu else x.device
        self.tree = torchsde.BrownianTree(torch.tensor(t0, device=where), torch.zeros_like(x, device=where),
                                          torch.tensor(t1, device=where), entropy=seed)

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        a, b = torch.as_tensor(sigma).float(), torch.as_tensor(sigma_next).float()
        sign = 1.0 if b >= a else -1.0
        low, high = (a, b) if sign > 0 else (b, a)
        if self.on_cpu:
            low, high = low.cpu(), high.cpu()
        else:
            low, high = low.to(self.device), high.to(self.device)
        increment = self.tree(low, high).to(self.device, self.dtype) * sign
        return increment / (b - a).abs().sqrt().to(self.device)
