"""How raw VAE latents enter the sampler's space and leave it (ComfyUI's latent_formats)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LatentFormat:
    """× scale_factor, or, with per-channel statistics (Playground v2.5), (x − mean)·scale/std."""

    scale_factor: float
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def _stats(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, len(self.mean), 1, 1)
        return (torch.tensor(self.mean, dtype=latent.dtype, device=latent.device).view(shape),
                torch.tensor(self.std, dtype=latent.dtype, device=latent.device).view(shape))

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return latent * self.scale_factor
        mean, std = self._stats(latent)
        return (latent - mean) * self.scale_factor / std

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return latent / self.scale_factor
        mean, std = self._stats(latent)
        return latent * std / self.scale_factor + mean


# ComfyUI's SDXL_Playground_2_5: the SDXL VAE's latent statistics over Playground's data
PLAYGROUND_V2_5 = LatentFormat(0.5, (-1.6574, 1.886, -1.383, 2.5155), (8.4927, 5.9022, 6.5498, 5.2299))
