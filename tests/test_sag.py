"""SelfAttentionGuidance: the blur map, the post-CFG step and the recorded attention."""
from __future__ import annotations

import numpy as np
import torch

from nodes.sampling.conditioning import CondEntry
from nodes.sampling.guidance import cfg_denoiser
from nodes.sampling.model_sampling import DiscreteSampling
from nodes.sampling.sag import SelfAttentionGuidance, blur_map, gaussian_blur_2d

from .test_model_patches import _graph, _pixels


def test_the_blur_map_blurs_where_keys_draw_more_than_their_share():
    x0 = torch.zeros(1, 1, 8, 8)
    x0[0, 0, 2, 2] = 1.0
    tokens = 16  # the middle block's 4×4 grid of an 8×8 latent
    uniform = torch.full((2, tokens, tokens), 1.0 / tokens)  # 2 heads; each key gets exactly 1
    assert torch.equal(blur_map(x0, uniform, 2.0), x0)
    drawn = uniform.clone()
    drawn[:, :, 5] += 0.5  # key 5 = cell (1, 1) of the 4×4 grid = latent rows/cols 2–3
    drawn /= drawn.sum(-1, keepdim=True)
    out = blur_map(x0, drawn, 2.0)
    blurred = gaussian_blur_2d(x0, 9, 2.0)
    assert torch.allclose(out[..., 2:4, 2:4], blurred[..., 2:4, 2:4])
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:4, 2:4] = False
    assert torch.equal(out[0, 0][outside], x0[0, 0][outside])
    # the kernel: a normalised Gaussian on integer offsets, separable
    impulse = torch.zeros(1, 1, 20, 20)
    impulse[0, 0, 10, 10] = 1.0
    kernel = torch.exp(-0.5 * (torch.arange(-4.0, 5.0) / 2.0) ** 2)
    kernel /= kernel.sum()
    assert torch.allclose(gaussian_blur_2d(impulse, 9, 2.0)[0, 0, 6:15, 6:15], kernel[:, None] * kernel[None, :])


def test_sag_adds_the_gap_between_the_degraded_image_and_its_unconditional_prediction():
    def predict(x, sigma, entries, areas):
        values = torch.tensor([float(e.cross_attn.mean()) for e in entries]).reshape(-1, 1, 1, 1)
        return values.expand_as(x) + 0.25 * x  # depends on x, so the degraded input shows

    positive, negative = [CondEntry(torch.full((1, 4, 2), 2.0))], [CondEntry(torch.full((1, 4, 2), -1.0))]
    generator = torch.Generator().manual_seed(0)
    x, sigma = torch.randn([1, 4, 8, 8], generator=generator), torch.tensor([1.0])
    attention = torch.softmax(torch.randn(2, 16, 16, generator=generator) * 3, dim=-1)
    sag = {"post_cfg": (SelfAttentionGuidance(0.7, 1.5),), "attention": lambda: attention}
    plain = cfg_denoiser(predict, positive, negative, 3.0, DiscreteSampling())(x, sigma)
    guided = cfg_denoiser(predict, positive, negative, 3.0, DiscreteSampling(), **sag)(x, sigma)
    uncond = -1.0 + 0.25 * x
    degraded = blur_map(uncond, attention, 1.5)
    assert not torch.equal(degraded, uncond)
    expected = plain + (degraded - (-1.0 + 0.25 * (degraded + x - uncond))) * 0.7
    assert torch.allclose(guided, expected, atol=1e-6)
    # cfg 1 still evaluates the negative side; a latent of 4 or fewer cells is left alone
    at_one = cfg_denoiser(predict, positive, negative, 1.0, DiscreteSampling(), **sag)(x, sigma)
    assert not torch.allclose(at_one, 2.0 + 0.25 * x)
    small = torch.zeros([1, 4, 4, 4])
    assert torch.equal(cfg_denoiser(predict, positive, negative, 3.0, DiscreteSampling(), **sag)(small, sigma),
                       cfg_denoiser(predict, positive, negative, 3.0, DiscreteSampling())(small, sigma))


def test_the_recorded_attention_is_the_negative_rows_probabilities(tiny_models):
    from nodes.sd.sag_attention import RecordingSelfAttention, recording_middle_attention
    from tests.test_sd_models import _handle

    unet = _handle(tiny_models / "checkpoints" / "tiny_sdxl.safetensors").load()
    layer = unet.mid_block.attentions[0].transformer_blocks[0].attn1
    tokens = torch.randn([3, 16, layer.to_q.in_features])
    recorded = {}
    before = layer(tokens)
    with recording_middle_attention(unet, slice(1, 3), recorded):
        assert isinstance(layer.processor, RecordingSelfAttention)
        assert torch.allclose(layer(tokens), before, atol=1e-5)
    assert not isinstance(layer.processor, RecordingSelfAttention)
    q, k = layer.to_q(tokens[1:]), layer.to_k(tokens[1:])
    head = q.shape[-1] // layer.heads
    q, k = (t.view(2, 16, layer.heads, head).transpose(1, 2) for t in (q, k))
    expected = torch.softmax(q @ k.transpose(-1, -2) / head ** 0.5, dim=-1).flatten(0, 1)
    assert recorded["attention"].shape == (2 * layer.heads, 16, 16)
    assert torch.allclose(recorded["attention"], expected, atol=1e-6)


def test_sag_node(tiny_models, tmp_path):
    checkpoint = "tiny_sd15.safetensors"
    base = _pixels(tiny_models, tmp_path, _graph(checkpoint, None))
    sag = {"class_type": "SelfAttentionGuidance", "inputs": {"scale": 0.0, "blur_sigma": 2.0}}
    assert np.abs(_pixels(tiny_models, tmp_path, _graph(checkpoint, sag)) - base).max() <= 1
    sag["inputs"]["scale"] = 2.0
    assert np.abs(_pixels(tiny_models, tmp_path, _graph(checkpoint, sag)) - base).max() > 5
