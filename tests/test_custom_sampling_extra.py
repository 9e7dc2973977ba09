"""The rest of custom sampling: Laplace σ, extended and percent σ, SamplerDPMAdaptative (eta),
SamplerER_SDE's variants, SamplerSASolver's window and simple order 2, and DualCFGGuider."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nodes.core.custom_sampling import Sigmas
from nodes.sampling.model_sampling import DiscreteSampling
from nodes.sampling.samplers import SAMPLERS, SamplingContext
from nodes.sampling.schedules import schedule

from .kdiffusion_reference import load_sampling
from .test_custom_sampling import base, decoded, session  # noqa: F401 - the fixture
from .test_samplers import MU, SPREAD, ReplayNoise, gaussian_denoiser, toy_denoiser

MS = DiscreteSampling()


def test_laplace_schedule_has_no_final_zero_and_centres_on_mu():
    from nodes.core.schedulers import LaplaceScheduler

    sigmas = LaplaceScheduler(steps=9, sigma_max=14.614642, sigma_min=0.0291675, mu=0.0, beta=0.5) \
        .execute(None).SIGMAS.sigmas
    assert len(sigmas) == 9 and float(sigmas[-1]) == pytest.approx(0.0291675)  # clamped, not 0
    assert float(sigmas[0]) == pytest.approx(14.614642) and float(sigmas[4]) == pytest.approx(1.0)
    assert torch.all(sigmas[1:] <= sigmas[:-1])
    x = torch.linspace(0, 1, 9)
    expected = torch.exp(-0.5 * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + 1e-5))
    assert torch.allclose(sigmas, expected.clamp(0.0291675, 14.614642))


def test_extend_intermediate_sigmas_splits_the_intervals_in_range():
    from nodes.core.schedulers import ExtendIntermediateSigmas

    sigmas = Sigmas(torch.tensor([16.0, 8.0, 4.0, 0.0]))

    def extended(**inputs):
        node = ExtendIntermediateSigmas(sigmas=sigmas, **{"steps": 2, "start_at_sigma": -1.0, "end_at_sigma": 12.0,
                                                          "spacing": "linear", **inputs})
        return node.execute(None).SIGMAS.sigmas.tolist()

    assert extended() == [16.0, 12.0, 8.0, 4.0, 0.0]  # only [16, 8] starts at or above 12
    assert extended(end_at_sigma=4.0, steps=4) == [16, 14, 12, 10, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    cosine = extended(steps=3, spacing="cosine")[1:3]
    assert cosine == pytest.approx([16 - 8 * math.sin(math.pi / 6), 16 - 8 * math.sin(math.pi / 3)])
    assert extended(start_at_sigma=10.0, end_at_sigma=5.0) == [16.0, 8.0, 6.0, 4.0, 0.0]


def test_sampling_percent_to_sigma(tiny_models):
    from nodes.core.schedulers import SamplingPercentToSigma
    from tests.test_sd_models import _handle

    model = _handle(tiny_models / "checkpoints" / "tiny_sd15.safetensors")

    def sigma(percent, actual=False):
        return SamplingPercentToSigma(model=model, sampling_percent=percent, return_actual_sigma=actual).execute(None).FLOAT

    assert sigma(0.5) == pytest.approx(MS.percent_to_sigma(0.5))
    assert sigma(0.0) == 999999999.9 and sigma(1.0) == 0.0
    assert sigma(0.0, True) == pytest.approx(MS.sigma_max) and sigma(1.0, True) == pytest.approx(MS.sigma_min)


@pytest.mark.parametrize("order", [2, 3])
def test_dpm_adaptive_with_eta_matches_k_diffusion(order):
    reference = load_sampling()
    if reference is None:
        pytest.skip("k-diffusion is not installed (README test command installs it)")
    sigmas = schedule(MS, "karras", 8)
    x = torch.randn([2, 4, 6, 5], generator=torch.Generator().manual_seed(3)) * sigmas[0]
    expected = reference.sample_dpm_adaptive(toy_denoiser, x.clone(), sigmas[-2].clone(), sigmas[0].clone(),
                                             order=order, eta=0.7, s_noise=0.9, disable=True,
                                             noise_sampler=ReplayNoise(x.shape))
    ours = SAMPLERS["dpm_adaptive"](toy_denoiser, x.clone(), sigmas,
                                    SamplingContext(seed=0, noise_sampler=ReplayNoise(x.shape)),
                                    order=order, eta=0.7, s_noise=0.9)
    plain = SAMPLERS["dpm_adaptive"](toy_denoiser, x.clone(), sigmas, SamplingContext(seed=0), order=order)
    assert torch.allclose(ours, expected, atol=1e-5) and not torch.allclose(ours, plain, atol=1e-2)


def test_er_sde_variants():
    sigmas = schedule(MS, "karras", 12)
    x = torch.randn([1, 4, 8, 8], generator=torch.Generator().manual_seed(1)) * sigmas[0]
    context = SamplingContext(seed=3)
    # The ODE form's first stage is a DDIM (Euler) step: with one stage it is the Euler sampler.
    ode = SAMPLERS["er_sde"](toy_denoiser, x.clone(), sigmas, context, s_noise=0.0, max_stage=1, reverse_time_eta=0.0)
    assert torch.allclose(ode, SAMPLERS["euler"](toy_denoiser, x.clone(), sigmas, context), atol=1e-5)
    # The reverse-time SDE draws from the data distribution, as ER-SDE does.
    sigmas = schedule(MS, "karras", 30)
    start = torch.randn([1, 4, 64, 64], generator=torch.Generator().manual_seed(0)) * \
        (MS.sigma_max ** 2 + SPREAD ** 2) ** 0.5 + MU
    out = SAMPLERS["er_sde"](gaussian_denoiser, start, sigmas, context, reverse_time_eta=1.0)
    assert abs(float(out.mean()) - MU) < 0.02 and abs(float(out.std()) - SPREAD) < 0.03


def test_sa_solver_window_eta_and_simple_order_2():
    from nodes.sampling.sa_solver import adams_weights, simple_order_2_weights

    lambdas = torch.tensor([-1.0, -0.4], dtype=torch.float64)
    lam_t = torch.tensor(0.3, dtype=torch.float64)
    for tau in (0.0, 0.8):
        for corrector in (False, True):
            lam_s, lam_to = (lambdas[1], lam_t) if not corrector else (lambdas[0], lambdas[1])
            simple = simple_order_2_weights(lambdas, lam_s, lam_to, tau, corrector)
            exact = adams_weights(lambdas, lam_s, lam_to, tau)
            # both integrate a constant exactly: their sum is 1 − e^{−(1+τ²)h}
            assert float(simple.sum()) == pytest.approx(float(exact.sum()), abs=1e-12)
    sigmas = schedule(MS, "karras", 30)
    start = torch.randn([1, 4, 64, 64], generator=torch.Generator().manual_seed(0)) * \
        (MS.sigma_max ** 2 + SPREAD ** 2) ** 0.5 + MU
    context = SamplingContext(seed=3, percent_to_sigma=MS.percent_to_sigma)
    window = (MS.percent_to_sigma(0.1), MS.percent_to_sigma(0.9), 0.6)
    out = SAMPLERS["sa_solver"](gaussian_denoiser, start, sigmas, context, tau_window=window, simple_order_2=True)
    assert abs(float(out.mean()) - MU) < 0.02 and abs(float(out.std()) - SPREAD) < 0.03
    default = SAMPLERS["sa_solver"](gaussian_denoiser, start, sigmas, context)
    assert not torch.allclose(out, default, atol=1e-3)


def test_dual_cfg_formulas():
    from nodes.sampling.conditioning import CondEntry
    from nodes.sampling.guidance import cfg_denoiser

    def predict(x, sigma, entries, areas):
        return torch.tensor([float(e.cross_attn.mean()) for e in entries]).reshape(-1, 1, 1, 1).expand_as(x).clone()

    def side(value):
        return [CondEntry(torch.full((1, 4, 2), value))]

    x, sigma = torch.zeros([1, 4, 8, 8]), torch.tensor([1.0])
    pos, neg, mid = 2.0, -1.0, 0.5

    def dual(cfg1, cfg2, nested):
        guided = cfg_denoiser(predict, side(pos), side(neg), cfg1, MS, dual=(side(mid), cfg2, nested))
        return float(guided(x, sigma)[0, 0, 0, 0])

    assert dual(3.0, 4.0, False) == pytest.approx(neg + 4.0 * (mid - neg) + 3.0 * (pos - mid))
    assert dual(3.0, 4.0, True) == pytest.approx(neg + 4.0 * (mid + 3.0 * (pos - mid) - neg))
    assert dual(3.0, 1.0, False) == pytest.approx(mid + 3.0 * (pos - mid))  # the negative left out
    assert dual(1.0, 1.0, False) == pytest.approx(pos)


def test_dual_cfg_guider_with_cond2_the_negative_at_cfg2_one_is_cfg(session):  # noqa: F811
    def guided(guider):
        return decoded(session, base() | {
            "10": guider,
            "11": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
            "12": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "normal", "steps": 4,
                                                              "denoise": 1.0}},
            "13": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
            "14": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["13", 0], "guider": ["10", 0],
                                                                     "sampler": ["11", 0], "sigmas": ["12", 0],
                                                                     "latent_image": ["5", 0]}}}, "14")

    cfg = guided({"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                        "cfg": 5.0}})
    for style in ("regular", "nested"):
        dual = guided({"class_type": "DualCFGGuider", "inputs": {
            "model": ["4", 0], "cond1": ["6", 0], "cond2": ["7", 0], "negative": ["7", 0], "cfg_conds": 5.0,
            "cfg_cond2_negative": 1.0, "style": style}})
        assert np.abs(dual - cfg).max() <= 1
    stronger = guided({"class_type": "DualCFGGuider", "inputs": {
        "model": ["4", 0], "cond1": ["6", 0], "cond2": ["7", 0], "negative": ["6", 0], "cfg_conds": 5.0,
        "cfg_cond2_negative": 3.0, "style": "regular"}})
    assert np.abs(stronger - cfg).max() > 5
