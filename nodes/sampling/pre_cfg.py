"""What ComfyUI runs between the model's predictions and CFG (`sampler_pre_cfg_function`), in the
order the model's nodes added them: APG, TCFG and FreSca. Each step takes [positive, negative]
x0 estimates (the negative zeros where CFG 1 left it out) and returns the pair CFG then combines;
the settings live on the MODEL handle, a step's running state on the sampling run."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PreCfgArgs:
    conds: list[torch.Tensor]  # [positive, negative] estimates
    negative_evaluated: bool  # False at CFG 1, where ComfyUI passes None for the negative
    cfg: float
    x: torch.Tensor
    sigma: torch.Tensor


def _per_image_norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v, 2, dim=(-1, -2, -3), keepdim=True)


@dataclass(frozen=True)
class AdaptiveProjectedGuidance:
    """APG (Sadat et al. 2024): the guidance (positive − negative), optionally averaged with momentum
    and capped in norm, split along the positive estimate; the parallel part is scaled by eta."""

    eta: float
    norm_threshold: float
    momentum: float

    def __call__(self, args: PreCfgArgs, state: dict) -> list[torch.Tensor]:
        cond, uncond = args.conds
        sigma = float(args.sigma.reshape(-1)[0])
        if state.get("sigma") is not None and sigma > state["sigma"]:
            state.pop("average", None)  # a new schedule starts
        state["sigma"] = sigma
        guidance = cond - uncond
        if self.momentum > 0:
            average = state.get("average")
            guidance = state["average"] = guidance if average is None else self.momentum * average + guidance
        if self.norm_threshold > 0:
            guidance = guidance * torch.minimum(torch.ones_like(_per_image_norm(guidance)),
                                                self.norm_threshold / _per_image_norm(guidance))
        direction = cond / _per_image_norm(cond).clamp_min(1e-12)
        parallel = (guidance * direction).sum(dim=[-1, -2, -3], keepdim=True) * direction
        modified = guidance - parallel + self.eta * parallel
        return [uncond + modified + (cond - uncond) / args.cfg, uncond]


def damped_negative_noise(cond_noise: torch.Tensor, uncond_noise: torch.Tensor) -> torch.Tensor:
    """TCFG: the negative's noise kept only along the first right singular vector of the
    [negative; positive] matrix, per image."""
    batch = cond_noise.shape[0]
    uncond_flat = uncond_noise.reshape(batch, 1, -1).float()
    stacked = torch.cat((uncond_flat, cond_noise.reshape(batch, 1, -1).float()), dim=1)
    principal = torch.linalg.svd(stacked.cpu() if stacked.device.type == "mps" else stacked,
                                 full_matrices=False)[2][:, :1, :].to(uncond_flat.device)
    damped = (uncond_flat @ principal.transpose(-2, -1)) * principal
    return damped.reshape_as(uncond_noise).to(uncond_noise.dtype)


@dataclass(frozen=True)
class TangentialDamping:
    """TCFG (2503.18137): the negative's tangential components removed before CFG."""

    def __call__(self, args: PreCfgArgs, state: dict) -> list[torch.Tensor]:
        if not args.negative_evaluated:
            return args.conds
        cond, uncond = args.conds
        return [cond, args.x - damped_negative_noise(args.x - cond, args.x - uncond)]


def frequency_scaled(x: torch.Tensor, scale_low: float, scale_high: float, cutoff: int) -> torch.Tensor:
    """x with its centred spectrum's low band (±cutoff around the centre, clamped to the grid)
    × scale_low and the rest × scale_high."""
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    height, width = spectrum.shape[-2:]
    row, column = height // 2, width // 2
    mask = torch.full(spectrum.shape, scale_high, device=x.device)
    band_rows, band_columns = min(cutoff, row), min(cutoff, column)
    mask[..., row - band_rows:row + band_rows, column - band_columns:column + band_columns] = scale_low
    spectrum = torch.fft.ifftshift(spectrum * mask, dim=(-2, -1))
    return torch.fft.ifftn(spectrum, dim=(-2, -1)).real.to(x.dtype)


@dataclass(frozen=True)
class FrequencyScaledGuidance:
    """FreSca: the guidance (positive − negative) rescaled by frequency band."""

    scale_low: float
    scale_high: float
    cutoff: int

    def __call__(self, args: PreCfgArgs, state: dict) -> list[torch.Tensor]:
        if not args.negative_evaluated:
            return args.conds
        cond, uncond = args.conds
        return [frequency_scaled(cond - uncond, self.scale_low, self.scale_high, self.cutoff) + uncond, uncond]
