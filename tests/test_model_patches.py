"""ModelSamplingDiscrete (prediction types, LCM's distilled table, zsnr) and RescaleCFG."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import Session, Settings
from nodes.sampling.guidance import rescaled_cfg
from nodes.sampling.model_sampling import DiscreteSampling, LcmSampling, model_sampling


def test_lcm_samples_on_every_20th_sigma_and_maps_timesteps_back_to_the_full_table():
    full, lcm = DiscreteSampling(), LcmSampling()
    assert len(lcm.sigmas) == 50 and torch.equal(lcm.sigmas, full.sigmas[19::20])
    assert lcm.timestep(lcm.sigmas).tolist() == [19.0 + 20 * k for k in range(50)]
    assert torch.allclose(lcm.sigma(lcm.timestep(lcm.sigmas)), lcm.sigmas, rtol=1e-6)
    assert lcm.sigma_max == full.sigma_max and lcm.sigma_min == float(full.sigmas[19])
    # the distilled timestep of a σ between two table entries is the nearer one's
    between = (lcm.sigmas[10] * lcm.sigmas[11]) ** 0.5 * 0.99
    assert float(lcm.timestep(between)) == 19 + 20 * 10


def test_lcm_boundary_conditions():
    lcm = LcmSampling()
    sigma = torch.tensor([float(lcm.sigmas[30])])
    x, eps = torch.randn([1, 4, 2, 2]), torch.randn([1, 4, 2, 2])
    t = (19 + 20 * 30) * 10.0
    c_skip, c_out = 0.25 / (t ** 2 + 0.25), t / (t ** 2 + 0.25) ** 0.5
    assert torch.allclose(lcm.denoised(sigma, eps, x), c_out * (x - sigma * eps) + c_skip * x)


def test_x0_and_img_to_img_predict_the_image_itself():
    sigma, x, out = torch.tensor([3.0]), torch.randn([1, 4, 2, 2]), torch.randn([1, 4, 2, 2])
    assert torch.equal(model_sampling("x0").denoised(sigma, out, x), out)
    img = model_sampling("img_to_img")
    assert torch.equal(img.model_input(x, sigma), x) and torch.equal(img.denoised(sigma, out, x), out)
    assert torch.allclose(model_sampling("x0").model_input(x, sigma), x / 10 ** 0.5)


def test_rescale_cfg_brings_the_guided_v_to_the_conditional_spread():
    generator = torch.Generator().manual_seed(0)
    x, cond, uncond = (torch.randn([2, 4, 8, 8], generator=generator) for _ in range(3))
    sigma = torch.tensor([2.0, 0.5])
    plain = uncond + 7.0 * (cond - uncond)
    assert torch.allclose(rescaled_cfg(cond, uncond, 7.0, x, sigma, 0.0), plain, atol=1e-4)

    def v(denoised):  # the v prediction a denoised estimate stands for
        s = sigma.reshape(-1, 1, 1, 1)
        return (x / (s * s + 1) - denoised) * (s * s + 1) ** 0.5 / s

    full = v(rescaled_cfg(cond, uncond, 7.0, x, sigma, 1.0))
    assert torch.allclose(full.std(dim=(1, 2, 3)), v(cond).std(dim=(1, 2, 3)), rtol=1e-4)
    assert torch.allclose(full / full.std(dim=(1, 2, 3), keepdim=True),
                          v(plain) / v(plain).std(dim=(1, 2, 3), keepdim=True), atol=1e-4)


def _graph(checkpoint: str, patch: dict | None, sampler="euler", steps=4):
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 3, "steps": steps, "cfg": 6.0,
                                                   "sampler_name": sampler, "scheduler": "normal", "denoise": 1.0,
                                                   "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0]}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }
    if patch is not None:
        graph["8"] = {**patch, "inputs": {**patch["inputs"], "model": ["1", 0]}}
        graph["5"]["inputs"]["model"] = ["8", 0]
    return graph


def _pixels(tiny_models, tmp_path, graph):
    from PIL import Image

    result = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path, device="cpu")).execute(graph)
    assert result.status == "ok", result.errors
    return np.asarray(Image.open(result.files[0])).astype(int)


def _sampling(kind: str, zsnr=False):
    return {"class_type": "ModelSamplingDiscrete", "inputs": {"sampling": kind, "zsnr": zsnr}}


def test_model_sampling_discrete_sets_how_the_model_is_read(tiny_models, tmp_path):
    """On the SD2-v checkpoint (detected as v), asking for v changes nothing, asking for eps
    does, and so do zsnr, x0 and LCM; RescaleCFG at 0 is plain CFG."""
    checkpoint = "tiny_sd2_v.safetensors"
    base = _pixels(tiny_models, tmp_path, _graph(checkpoint, None))
    assert np.array_equal(_pixels(tiny_models, tmp_path, _graph(checkpoint, _sampling("v_prediction"))), base)
    others = [_pixels(tiny_models, tmp_path, _graph(checkpoint, patch)) for patch in
              (_sampling("eps"), _sampling("v_prediction", zsnr=True), _sampling("x0"), _sampling("lcm"))]
    assert all(np.abs(image - base).max() > 10 for image in others)
    rescale = {"class_type": "RescaleCFG", "inputs": {"multiplier": 0.0}}
    assert np.abs(_pixels(tiny_models, tmp_path, _graph(checkpoint, rescale)) - base).max() <= 1
    rescale["inputs"]["multiplier"] = 0.7
    assert np.abs(_pixels(tiny_models, tmp_path, _graph(checkpoint, rescale)) - base).max() > 10


@pytest.mark.parametrize("sampler", ["lcm", "euler"])
def test_an_lcm_patched_model_samples(sampler, tiny_models, tmp_path):
    pixels = _pixels(tiny_models, tmp_path, _graph("tiny_sd15.safetensors", _sampling("lcm"), sampler=sampler))
    assert pixels.shape == (64, 64, 3) and pixels.std() > 0


def test_pag_adds_the_gap_between_the_positive_and_its_perturbed_prediction():
    from nodes.sampling.conditioning import CondEntry
    from nodes.sampling.guidance import cfg_denoiser
    from nodes.sampling.post_cfg import PerturbedAttention

    def predict(x, sigma, entries, areas, perturbed=False):
        values = torch.tensor([float(e.cross_attn.mean()) for e in entries]).reshape(-1, 1, 1, 1)
        return values.expand_as(x) - (0.5 if perturbed else 0.0)

    positive, negative = [CondEntry(torch.full((1, 4, 2), 2.0))], [CondEntry(torch.full((1, 4, 2), -1.0))]
    x, sigma = torch.zeros([1, 4, 8, 8]), torch.tensor([1.0])
    plain = cfg_denoiser(predict, positive, negative, 3.0, DiscreteSampling())(x, sigma)
    assert torch.allclose(plain, torch.full_like(x, -1.0 + 3.0 * 3.0))
    pag = cfg_denoiser(predict, positive, negative, 3.0, DiscreteSampling(), post_cfg=(PerturbedAttention(2.0),))(x, sigma)
    assert torch.allclose(pag, plain + 0.5 * 2.0)
    alone = cfg_denoiser(predict, positive, negative, 1.0, DiscreteSampling(), post_cfg=(PerturbedAttention(2.0),))(x, sigma)
    assert torch.allclose(alone, torch.full_like(x, 2.0 + 0.5 * 2.0))  # cfg 1: the positive plus PAG


def test_the_perturbed_self_attention_is_its_value_projection(tiny_models):
    from nodes.sd.models import middle_self_attention_as_values
    from tests.test_sd_models import _handle

    unet = _handle(tiny_models / "checkpoints" / "tiny_sdxl.safetensors").load()
    layers = [b.attn1 for a in unet.mid_block.attentions for b in a.transformer_blocks]
    assert len(layers) == 2  # every transformer block of the middle block (SDXL-like depth 2)
    tokens = torch.randn([1, 16, layers[0].to_v.in_features])
    before = layers[0](tokens)
    with middle_self_attention_as_values(unet):
        assert torch.allclose(layers[1](tokens), layers[1].to_out[0](layers[1].to_v(tokens)))
    assert torch.equal(layers[0](tokens), before)  # put back


def test_pag_node(tiny_models, tmp_path):
    base = _pixels(tiny_models, tmp_path, _graph("tiny_sdxl.safetensors", None))
    pag = {"class_type": "PerturbedAttentionGuidance", "inputs": {"scale": 0.0}}
    assert np.array_equal(_pixels(tiny_models, tmp_path, _graph("tiny_sdxl.safetensors", pag)), base)
    pag["inputs"]["scale"] = 3.0
    assert np.abs(_pixels(tiny_models, tmp_path, _graph("tiny_sdxl.safetensors", pag)) - base).max() > 10


def test_differential_diffusion_changes_a_soft_masked_img2img(tiny_models, tmp_path):
    graph = _graph("tiny_sd15.safetensors", None)
    graph["10"] = {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 64, "height": 64}}
    graph["11"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["4", 0], "mask": ["10", 0]}}
    graph["5"]["inputs"]["latent_image"] = ["11", 0]
    base = _pixels(tiny_models, tmp_path, graph)
    patched = {**graph, "8": {"class_type": "DifferentialDiffusion", "inputs": {"model": ["1", 0]}}}
    patched["5"] = {**graph["5"], "inputs": {**graph["5"]["inputs"], "model": ["8", 0]}}
    assert np.abs(_pixels(tiny_models, tmp_path, patched) - base).max() > 10


def test_fourier_filter_scales_only_the_lowest_frequencies():
    from nodes.sd.freeu import fourier_filter

    x = torch.randn([1, 2, 8, 8], generator=torch.Generator().manual_seed(0))
    assert torch.allclose(fourier_filter(x, 1, 1.0), x, atol=1e-6)
    flat = torch.full([1, 1, 8, 8], 3.0)  # only the zero frequency: scaled as a whole
    assert torch.allclose(fourier_filter(flat, 1, 0.2), flat * 0.2, atol=1e-6)


def test_freeu_patches_the_decoder_inputs_whose_backbone_half_is_4x_or_2x_wide(tiny_models, monkeypatch):
    """h's width is read from the running decoder (the middle's, then each resnet's output), so
    each cat([h, skip]) is split where ComfyUI's h ends; neutral settings change nothing (up to
    the fft round trip) and the hooks go when the block ends."""
    import nodes.sd.freeu as freeu
    from tests.test_sd_models import _handle

    unet = _handle(tiny_models / "checkpoints" / "tiny_sd2_v.safetensors").load()  # widths 32, 32, 64, 64
    widths = []
    real = freeu.patched

    def spy(h, skip, settings, model_channels):
        widths.append((h.shape[1], skip.shape[1]))
        return real(h, skip, settings, model_channels)

    monkeypatch.setattr(freeu, "patched", spy)
    # 16×16 latents: FreeU_V2's min-max normalisation divides by zero on a 1×1 map, in ComfyUI too
    inputs = dict(sample=torch.randn([1, 4, 16, 16]), timestep=torch.tensor([500.0]),
                  encoder_hidden_states=torch.randn([1, 77, 64]), return_dict=False)
    with torch.no_grad():
        plain = unet(**inputs)[0]
        with freeu.freeu_applied(unet, freeu.FreeU(2, 1.0, 1.0, 1.0, 1.0)):
            same = unet(**inputs)[0]
        with freeu.freeu_applied(unet, freeu.FreeU(2, 1.3, 1.4, 0.9, 0.2)):
            changed = unet(**inputs)[0]
    assert torch.allclose(same, plain, atol=1e-4) and (changed - plain).abs().max() > 1e-2
    # 4 levels × 3 resnets: h is 64 wide until the third level's last resnet, then 32
    assert [h for h, _ in widths[:12]] == [64] * 7 + [32] * 5
    assert [skip for _, skip in widths[:12]] == [64, 64, 64, 64, 64, 32, 32, 32, 32, 32, 32, 32]
    assert not any(r._forward_pre_hooks for b in unet.up_blocks for r in b.resnets)


def test_freeu_nodes(tiny_models, tmp_path):
    base = _pixels(tiny_models, tmp_path, _graph("tiny_sdxl.safetensors", None))
    neutral = {"class_type": "FreeU", "inputs": {"b1": 1.0, "b2": 1.0, "s1": 1.0, "s2": 1.0}}
    assert np.abs(_pixels(tiny_models, tmp_path, _graph("tiny_sdxl.safetensors", neutral)) - base).max() <= 1
    for node in ("FreeU", "FreeU_V2"):
        patch = {"class_type": node, "inputs": {"b1": 1.5, "b2": 1.6, "s1": 0.5, "s2": 0.2}}
        assert np.abs(_pixels(tiny_models, tmp_path, _graph("tiny_sdxl.safetensors", patch)) - base).max() > 10


def test_model_compute_dtype_runs_the_unet_in_the_dtype_named(tiny_models, tmp_path):
    def pixels(dtype):
        patch = {"class_type": "ModelComputeDtype", "inputs": {"dtype": dtype}}
        return _pixels(tiny_models, tmp_path / dtype, _graph("tiny_sd15.safetensors", patch))

    plain = _pixels(tiny_models, tmp_path / "plain", _graph("tiny_sd15.safetensors", None))
    assert np.array_equal(pixels("fp32"), plain)  # the CPU's default
    half = pixels("bf16")
    assert 0 < np.abs(half - plain).max() <= 32 and np.abs(half - plain).mean() < 2
    import dataclasses

    from .test_sd_models import _handle

    handle = _handle(tiny_models / "checkpoints" / "tiny_sd15.safetensors")
    assert dataclasses.replace(handle, compute_dtype="bf16").load().dtype == torch.bfloat16
