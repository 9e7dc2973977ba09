"""Pre-CFG steps (APG, TCFG, FreSca, latent operations) and Mahiro's post-CFG step: formulas, CFG 1, nodes."""
from __future__ import annotations

import numpy as np
import torch

from nodes.sampling.conditioning import CondEntry
from nodes.sampling.guidance import cfg_denoiser
from nodes.sampling.model_sampling import DiscreteSampling
from nodes.sampling.post_cfg import Mahiro, PostCfgArgs
from nodes.sampling.pre_cfg import (AdaptiveProjectedGuidance, FrequencyScaledGuidance, PreCfgArgs,
                                    TangentialDamping, damped_negative_noise, frequency_scaled)

from .test_model_patches import _graph, _pixels


def _predict(x, sigma, entries, areas):
    values = torch.tensor([float(e.cross_attn.mean()) for e in entries]).reshape(-1, 1, 1, 1)
    return values.expand_as(x) + 0.3 * x + 0.1 * torch.arange(x.shape[-1], dtype=x.dtype)


def _guided(cfg, steps, sigma=1.5, x=None):
    positive, negative = [CondEntry(torch.full((1, 4, 2), 2.0))], [CondEntry(torch.full((1, 4, 2), -1.0))]
    x = torch.randn([2, 4, 4, 4], generator=torch.Generator().manual_seed(0)) if x is None else x
    guided = cfg_denoiser(_predict, positive, negative, cfg, DiscreteSampling(), pre_cfg=steps)
    return x, guided


def test_apg_projects_the_guidance_on_the_positive_estimate():
    x, guided = _guided(4.0, (AdaptiveProjectedGuidance(eta=1.0, norm_threshold=0.0, momentum=0.0),))
    cond = 2.0 + 0.3 * x + 0.1 * torch.arange(4.0)
    uncond = -1.0 + 0.3 * x + 0.1 * torch.arange(4.0)
    # eta 1, no cap: ComfyUI's APG is CFG at cfg + 1
    assert torch.allclose(guided(x, torch.tensor([1.5])), uncond + 5.0 * (cond - uncond), atol=1e-5)
    # eta 0: the guidance keeps only its part orthogonal to the positive estimate
    step = AdaptiveProjectedGuidance(eta=0.0, norm_threshold=0.0, momentum=0.0)
    modified, _ = step(PreCfgArgs([cond, uncond], True, 4.0, x, torch.tensor([1.5])), {})
    orthogonal = modified - uncond - (cond - uncond) / 4.0
    assert torch.allclose((orthogonal * cond).sum(dim=(1, 2, 3)), torch.zeros(2), atol=1e-4)
    # the cap: the guidance's norm per image at most the threshold
    capped, _ = AdaptiveProjectedGuidance(1.0, 0.5, 0.0)(PreCfgArgs([cond, uncond], True, 4.0, x,
                                                                     torch.tensor([1.5])), {})
    capped_guidance = capped - uncond - (cond - uncond) / 4.0
    assert torch.allclose(torch.linalg.vector_norm(capped_guidance, dim=(1, 2, 3)), torch.full((2,), 0.5))


def test_apg_momentum_runs_over_steps_and_restarts_with_a_new_schedule():
    step, state = AdaptiveProjectedGuidance(eta=1.0, norm_threshold=0.0, momentum=0.5), {}
    x = torch.zeros(1, 4, 2, 2)
    uncond = torch.zeros(1, 4, 2, 2)
    first, second = torch.ones(1, 4, 2, 2), torch.full((1, 4, 2, 2), 3.0)

    def guidance(cond, sigma):
        out, _ = step(PreCfgArgs([cond, uncond], True, 1.0, x, torch.tensor([sigma])), state)
        return out - uncond - cond  # at cfg 1: the (averaged) guidance itself

    assert torch.allclose(guidance(first, 2.0), first)
    assert torch.allclose(guidance(second, 1.0), 0.5 * first + second)
    assert torch.allclose(guidance(second, 5.0), second)  # σ went up: a new run, the average restarts


def test_tcfg_keeps_the_negative_noise_along_the_principal_direction_only():
    cond = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(damped_negative_noise(cond, 2.0 * cond), 2.0 * cond, atol=1e-5)  # already aligned
    uncond = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(2))
    damped = damped_negative_noise(cond, uncond)
    for image in range(2):
        stacked = torch.stack([uncond[image].flatten(), cond[image].flatten()])
        principal = torch.linalg.svd(stacked, full_matrices=False)[2][0]
        expected = (uncond[image].flatten() @ principal) * principal
        assert torch.allclose(damped[image].flatten(), expected, atol=1e-5)
    skipped = [cond, torch.zeros_like(cond)]
    assert TangentialDamping()(PreCfgArgs(skipped, False, 1.0, cond, torch.tensor([1.0])), {}) is skipped


def test_fresca_scales_the_low_and_high_bands_apart():
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(frequency_scaled(x, 1.0, 1.0, 2), x, atol=1e-6)
    assert torch.allclose(frequency_scaled(x, 3.0, 3.0, 2), 3.0 * x, atol=1e-5)
    # high band × 0: what is left lies within one frequency of the centre (the kept 2×2 block and,
    # the real part being taken, its mirror)
    only_low = frequency_scaled(x, 1.0, 0.0, 1)
    spectrum = torch.fft.fftshift(torch.fft.fftn(only_low, dim=(-2, -1)), dim=(-2, -1)).abs()
    centre = torch.zeros_like(spectrum, dtype=torch.bool)
    centre[..., 3:6, 3:6] = True
    assert spectrum[~centre].max() < 1e-5 and spectrum[centre].max() > 0.1
    _, guided = _guided(3.0, (FrequencyScaledGuidance(2.0, 2.0, 20),))
    x0, plain = _guided(6.0, ())
    assert torch.allclose(guided(x0, torch.tensor([1.5])), plain(x0, torch.tensor([1.5])), atol=1e-5)


def test_mahiro_leans_to_the_positive_leap_when_the_negative_disagrees():
    cond = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(4))

    def mahiro(uncond, cfg):
        denoised = uncond + cfg * (cond - uncond)
        return Mahiro()(PostCfgArgs(denoised, cond, uncond, cfg, cond, torch.tensor([1.0]), None, None, None))

    assert torch.allclose(mahiro(torch.zeros_like(cond), 1.0), cond)  # CFG 1: the negative is zeros
    # a negative pointing the positive's way: similarity 1, the guided estimate is kept
    same_way = 0.5 * cond
    assert torch.allclose(mahiro(same_way, 3.0), same_way + 3.0 * (cond - same_way), atol=1e-5)


def test_guidance_nodes_change_the_image_as_their_formulas_say(tiny_models, tmp_path):
    runs = iter(range(100))

    def pixels(patch, cfg):
        graph = _graph("tiny_sd15.safetensors", patch)
        graph["5"]["inputs"]["cfg"] = cfg
        return _pixels(tiny_models, tmp_path / str(next(runs)), graph)

    apg = {"class_type": "APG", "inputs": {"eta": 1.0, "norm_threshold": 0.0, "momentum": 0.0}}
    assert np.abs(pixels(apg, 4.0) - pixels(None, 5.0)).max() <= 1  # ComfyUI's APG: CFG at cfg + 1
    fresca = {"class_type": "FreSca", "inputs": {"scale_low": 2.0, "scale_high": 2.0, "freq_cutoff": 20}}
    assert np.abs(pixels(fresca, 3.0) - pixels(None, 6.0)).max() <= 1
    plain = pixels(None, 6.0)
    for patch in ({"class_type": "TCFG", "inputs": {}}, {"class_type": "Mahiro", "inputs": {}}):
        assert np.abs(pixels(patch, 6.0) - plain).max() > 2
    assert np.array_equal(pixels({"class_type": "TCFG", "inputs": {}}, 1.0), pixels(None, 1.0))


def test_reinhard_compresses_lengths_and_keeps_directions():
    from nodes.core.latent_operations import ReinhardTonemap

    latent = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(5)) * 3
    mapped = ReinhardTonemap(1.0)(latent)
    before, after = torch.linalg.vector_norm(latent, dim=1), torch.linalg.vector_norm(mapped, dim=1)
    assert torch.allclose(mapped / after[:, None], latent / before[:, None], atol=1e-5)
    assert torch.all(after < before)
    for image in range(2):  # one knee per image: within it, longer stays longer
        order = before[image].flatten().argsort()
        assert torch.all(torch.diff(after[image].flatten()[order]) >= -1e-6)
    assert torch.allclose(ReinhardTonemap(1e4)(latent), latent, rtol=1e-3, atol=1e-3)  # a far knee: untouched


def test_sharpen_leaves_flat_latents_and_alpha_zero_alone_and_raises_a_spike():
    from nodes.core.latent_operations import LatentSharpen

    latent = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(6))
    assert torch.allclose(LatentSharpen(3, 1.0, 0.0)(latent), latent, atol=1e-5)
    flat = torch.ones(1, 4, 12, 12) * torch.tensor([1.0, -2.0, 0.5, 3.0]).view(1, 4, 1, 1)
    assert torch.allclose(LatentSharpen(3, 1.0, 0.5)(flat), flat, atol=1e-5)
    spike = flat.clone()
    spike[:, :, 6, 6] = torch.tensor([3.0, 1.0, 0.5, -1.0])
    sharpened = LatentSharpen(2, 1.0, 0.5)(spike)
    direction = spike[0, :, 6, 6] / spike[0, :, 6, 6].norm()
    assert float(sharpened[0, :, 6, 6] @ direction) > float(spike[0, :, 6, 6] @ direction)


def test_latent_operation_nodes(tiny_models, tmp_path):
    runs = iter(range(100))

    def pixels(patch, operation):
        graph = _graph("tiny_sd15.safetensors", patch)
        if operation is not None:
            graph["9"] = operation
        return _pixels(tiny_models, tmp_path / str(next(runs)), graph)

    plain = pixels(None, None)
    on_guidance = {"class_type": "LatentApplyOperationCFG", "inputs": {"operation": ["9", 0]}}
    far_knee = {"class_type": "LatentOperationTonemapReinhard", "inputs": {"multiplier": 100.0}}
    assert np.abs(pixels(on_guidance, far_knee) - plain).max() <= 1
    near_knee = {"class_type": "LatentOperationTonemapReinhard", "inputs": {"multiplier": 0.5}}
    assert np.abs(pixels(on_guidance, near_knee) - plain).max() > 2
    graph = _graph("tiny_sd15.safetensors", None)
    graph["9"] = {"class_type": "LatentOperationSharpen", "inputs": {"sharpen_radius": 2, "sigma": 1.0,
                                                                      "alpha": 0.0}}
    graph["10"] = {"class_type": "LatentApplyOperation", "inputs": {"samples": ["5", 0], "operation": ["9", 0]}}
    graph["6"]["inputs"]["samples"] = ["10", 0]
    assert np.abs(_pixels(tiny_models, tmp_path / "applied", graph) - plain).max() <= 1
