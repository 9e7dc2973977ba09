"""Post-CFG steps (Epsilon Scaling, CFGZeroStar, CFGNorm, with PAG and SAG): formulas and order."""
from __future__ import annotations

import numpy as np
import torch

from nodes.sampling.conditioning import CondEntry
from nodes.sampling.guidance import cfg_denoiser
from nodes.sampling.model_sampling import DiscreteSampling
from nodes.sampling.post_cfg import CFGNorm, CFGZeroStar, EpsilonScaling, optimized_scale

from .test_model_patches import _graph, _pixels


def _predict(x, sigma, entries, areas):
    values = torch.tensor([float(e.cross_attn.mean()) for e in entries]).reshape(-1, 1, 1, 1)
    return values.expand_as(x) + 0.3 * x


def _guided(cfg, *steps):
    positive, negative = [CondEntry(torch.full((1, 4, 2), 2.0))], [CondEntry(torch.full((1, 4, 2), -1.0))]
    x = torch.randn([2, 4, 4, 4], generator=torch.Generator().manual_seed(0))
    return x, cfg_denoiser(_predict, positive, negative, cfg, DiscreteSampling(), post_cfg=steps)(x, torch.tensor([1.5]))


def test_post_cfg_formulas_and_their_order():
    x, plain = _guided(4.0)
    cond, uncond = 2.0 + 0.3 * x, -1.0 + 0.3 * x
    assert torch.allclose(plain, uncond + 4.0 * (cond - uncond))
    _, scaled = _guided(4.0, EpsilonScaling(1.25))
    assert torch.allclose(scaled, x - (x - plain) / 1.25)
    _, zero_star = _guided(4.0, CFGZeroStar())
    alpha = optimized_scale(x - cond, x - uncond)
    assert alpha.shape == (2, 1, 1, 1)
    assert torch.allclose(zero_star, plain + uncond * (alpha - 1.0) + 4.0 * uncond * (1.0 - alpha), atol=1e-6)
    _, normed = _guided(4.0, CFGNorm(0.9))
    ratio = (cond.norm(dim=1, keepdim=True) / (plain.norm(dim=1, keepdim=True) + 1e-8)).clamp(0, 1)
    assert torch.allclose(normed, plain * ratio * 0.9, atol=1e-6)
    # in the order added: each step sees the last one's result
    _, first = _guided(4.0, EpsilonScaling(1.25), CFGNorm(0.9))
    _, second = _guided(4.0, CFGNorm(0.9), EpsilonScaling(1.25))
    after_eps = x - (x - plain) / 1.25
    assert torch.allclose(first, after_eps * (cond.norm(dim=1, keepdim=True) / (after_eps.norm(dim=1, keepdim=True)
                                                                                 + 1e-8)).clamp(0, 1) * 0.9,
                          atol=1e-6)
    assert not torch.allclose(first, second)
    # CFG 1 leaves the negative out; CFG-Zero* then sees zeros for it and changes nothing
    _, at_one = _guided(1.0, CFGZeroStar())
    assert torch.allclose(at_one, cond)


def test_post_cfg_nodes(tiny_models, tmp_path):
    checkpoint = "tiny_sd15.safetensors"
    base = _pixels(tiny_models, tmp_path, _graph(checkpoint, None))
    neutral = {"class_type": "Epsilon Scaling", "inputs": {"scaling_factor": 1.0}}
    assert np.abs(_pixels(tiny_models, tmp_path, _graph(checkpoint, neutral)) - base).max() <= 1
    for patch in ({"class_type": "Epsilon Scaling", "inputs": {"scaling_factor": 1.2}},
                  {"class_type": "CFGZeroStar", "inputs": {}},
                  {"class_type": "CFGNorm", "inputs": {"strength": 0.8}}):
        assert np.abs(_pixels(tiny_models, tmp_path, _graph(checkpoint, patch)) - base).max() > 3, patch
