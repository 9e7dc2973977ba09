"""Every sampler and schedule against an independent implementation: k-diffusion's own
`sampling.py` (with torchsde's Brownian tree), the closed-form ODE solution of a Gaussian toy
problem, and the reference's σ tables."""
from __future__ import annotations

import functools
import math

import pytest
import torch

from .kdiffusion_reference import load_sampling
from nodes.sampling.model_sampling import DiscreteSampling
from nodes.sampling.names import NEEDS_UNCOND, NODE_ONLY_SAMPLERS, SAMPLER_NAMES
from nodes.sampling import adams, sa_solver, seeds
from nodes.sampling.samplers import SAMPLERS, SamplingContext
from nodes.sampling.schedules import SCHEDULERS, ksampler_sigmas, schedule, truncate

MS = DiscreteSampling()
MU, SPREAD = 0.3, 0.8  # the toy data: N(MU, SPREAD²) per element


def toy_denoiser(x, sigma):
    """The exact x0-estimate for Gaussian data, plus a small nonlinear term so that samplers
    that weigh their evaluations wrongly cannot agree by accident."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    linear = MU + SPREAD ** 2 / (SPREAD ** 2 + s ** 2) * (x - MU)
    return linear + 0.05 * torch.tanh(x) * s / (1 + s ** 2)


def gaussian_denoiser(x, sigma):
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return MU + SPREAD ** 2 / (SPREAD ** 2 + s ** 2) * (x - MU)


def recording_denoiser():
    """The toy denoiser, keeping its last estimate: what a CFG++ sampler reads as unconditional."""
    last = {}

    def recording(x, sigma):
        last["x0"] = toy_denoiser(x, sigma)
        return last["x0"]

    return recording, last


class ReplayNoise:
    """The same sequence of unit draws for both implementations."""

    def __init__(self, shape, seed=7):
        self.generator, self.shape = torch.Generator().manual_seed(seed), shape

    def __call__(self, sigma, sigma_next):
        return torch.randn(self.shape, generator=self.generator)


K_DIFFUSION_NAMES = {  # our name -> (k-diffusion function, extra kwargs, noise kind)
    "euler": ("sample_euler", {}, None),
    "ddim": ("sample_euler", {}, None),
    "euler_ancestral": ("sample_euler_ancestral", {}, "replay"),
    "heun": ("sample_heun", {}, None),
    "dpm_2": ("sample_dpm_2", {}, None),
    "dpm_2_ancestral": ("sample_dpm_2_ancestral", {}, "replay"),
    "lms": ("sample_lms", {}, None),
    "dpmpp_2s_ancestral": ("sample_dpmpp_2s_ancestral", {}, "replay"),
    "dpmpp_sde": ("sample_dpmpp_sde", {}, "brownian"),
    "dpmpp_sde_gpu": ("sample_dpmpp_sde", {}, "brownian"),
    "dpmpp_2m": ("sample_dpmpp_2m", {}, None),
    "dpmpp_2m_sde": ("sample_dpmpp_2m_sde", {}, "brownian"),
    "dpmpp_2m_sde_gpu": ("sample_dpmpp_2m_sde", {}, "brownian"),
    "dpmpp_2m_sde_heun": ("sample_dpmpp_2m_sde", {"solver_type": "heun"}, "brownian"),
    "dpmpp_2m_sde_heun_gpu": ("sample_dpmpp_2m_sde", {"solver_type": "heun"}, "brownian"),
    "dpmpp_3m_sde": ("sample_dpmpp_3m_sde", {}, "brownian"),
    "dpmpp_3m_sde_gpu": ("sample_dpmpp_3m_sde", {}, "brownian"),
}


@pytest.mark.parametrize("name", sorted(K_DIFFUSION_NAMES))
@pytest.mark.parametrize("scheduler", ["karras", "normal"])
def test_sampler_matches_k_diffusion(name, scheduler):
    reference = load_sampling()
    if reference is None:
        pytest.skip("k-diffusion is not installed (README test command installs it)")
    function, kwargs, noise = K_DIFFUSION_NAMES[name]
    seed = 1234
    sigmas = ksampler_sigmas(MS, name, scheduler, 12)
    x = initial = torch.randn([2, 4, 6, 5], generator=torch.Generator().manual_seed(3)) * sigmas[0]
    extra = dict(kwargs)
    ours_ctx = SamplingContext(seed=seed)
    if noise == "replay":
        extra["noise_sampler"] = ReplayNoise(x.shape)
        ours_ctx.noise_sampler = ReplayNoise(x.shape)
    elif noise == "brownian":
        extra["noise_sampler"] = reference.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed)
    expected = getattr(reference, function)(toy_denoiser, initial.clone(), sigmas, disable=True, **extra)
    ours = SAMPLERS[name](toy_denoiser, x.clone(), sigmas, ours_ctx)
    assert torch.allclose(ours, expected, atol=1e-5, rtol=1e-5), (ours - expected).abs().max()


CONVERGENCE_ORDER = {"euler": 1, "ddim": 1, "heun": 2, "dpm_2": 2, "lms": 2, "dpmpp_2m": 2, "ipndm": 2,
                     "uni_pc": 3, "uni_pc_bh2": 3, "res_multistep": 2,
                     "heunpp2": 1,  # its slope weights depend on σ_0, which leaves it first order
                     "gradient_estimation": 1}


@pytest.mark.parametrize("name", sorted(CONVERGENCE_ORDER))
def test_deterministic_samplers_converge_to_the_exact_ode_solution_at_their_order(name):
    """For Gaussian data the probability-flow ODE is solved in closed form:
    x(0) = μ + (x_T − μ)·s/√(s² + σ_T²). Doubling the steps must divide the error by about 2 for
    first-order solvers and by 4 or more for the others (the final Euler step caps the rest); a
    wrong coefficient drops a solver to first order or stops it converging."""
    x_start = torch.randn([1, 4, 8, 8], generator=torch.Generator().manual_seed(0)) * MS.sigma_max
    exact = MU + (x_start - MU) * SPREAD / (SPREAD ** 2 + MS.sigma_max ** 2) ** 0.5
    errors = []
    order = CONVERGENCE_ORDER[name]
    # third order reaches float32's floor by 40 steps: measure it earlier
    for steps in ((10, 20) if order == 3 else (20, 40)):
        sigmas = schedule(MS, "karras", steps)
        out = SAMPLERS[name](gaussian_denoiser, x_start.clone(), sigmas, SamplingContext(seed=0))
        errors.append(float((out - exact).abs().max()))
    assert errors[0] / errors[1] > {1: 1.7, 2: 4.0, 3: 8.0}[order], errors


def test_lcm_is_denoise_then_renoise_with_the_step_noise():
    sigmas = schedule(MS, "simple", 4)
    x = torch.randn([1, 4, 4, 4], generator=torch.Generator().manual_seed(5)) * sigmas[0]
    draws = ReplayNoise(x.shape, seed=9)
    ctx = SamplingContext(seed=0, noise_sampler=ReplayNoise(x.shape, seed=9),
                          noise_scaling=lambda s, n, lat: MS.noise_scaling(float(s), n, lat))
    expected = x.clone()
    for i in range(len(sigmas) - 1):
        expected = toy_denoiser(expected, sigmas[i] * torch.ones(1))
        if sigmas[i + 1] > 0:
            expected = expected + draws(None, None) * sigmas[i + 1]
    assert torch.allclose(SAMPLERS["lcm"](toy_denoiser, x, sigmas, ctx), expected, atol=1e-6)


def test_ddpm_matches_diffusers_ddpm_posterior_steps():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, variance_type="fixed_small_log")
    timesteps = [999, 749, 499, 249, 0]
    sigmas = torch.cat([MS.sigmas[timesteps], torch.zeros(1)])
    scheduler.set_timesteps(timesteps=timesteps[:-1] + [0])
    x = torch.randn([1, 4, 4, 4], generator=torch.Generator().manual_seed(2))
    draws = ReplayNoise(x.shape, seed=4)
    ours = SAMPLERS["ddpm"](toy_denoiser, x * (1 + sigmas[0] ** 2) ** 0.5, sigmas,
                            SamplingContext(seed=0, noise_sampler=ReplayNoise(x.shape, seed=4)))
    sample = x.clone()
    for i, t in enumerate(timesteps):
        sigma = sigmas[i]
        x_ve = sample * (1 + sigma ** 2) ** 0.5
        eps = (x_ve - toy_denoiser(x_ve, sigma * torch.ones(1))) / sigma
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        alpha_bar = scheduler.alphas_cumprod[t]
        alpha_bar_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else torch.tensor(1.0)
        beta = 1 - alpha_bar / alpha_bar_prev
        mean = (sample - beta * eps / (1 - alpha_bar).sqrt()) / (1 - beta).sqrt()
        variance = beta * (1 - alpha_bar_prev) / (1 - alpha_bar)
        sample = mean + (variance.sqrt() * draws(None, None) if prev_t >= 0 else 0)
    assert torch.allclose(ours, sample, atol=1e-4), (ours - sample).abs().max()


def test_every_sampler_name_of_comfyui_runs():
    assert len(SAMPLER_NAMES) == 42 and set(SAMPLERS) == set(SAMPLER_NAMES + NODE_ONLY_SAMPLERS)
    sigmas = schedule(MS, "karras", 4)
    x = torch.randn([1, 4, 4, 4], generator=torch.Generator().manual_seed(1)) * sigmas[0]
    recording, last = recording_denoiser()
    ctx = SamplingContext(seed=0, noise_scaling=lambda s, n, lat: MS.noise_scaling(float(s), n, lat),
                          uncond=lambda: last["x0"], percent_to_sigma=MS.percent_to_sigma)
    for name, fn in SAMPLERS.items():
        out = fn(recording, x.clone(), sigmas, ctx)
        # lcm_upscale ends at twice the size by default
        assert out.shape[-1] == x.shape[-1] * (2 if name == "lcm_upscale" else 1), name
        assert torch.isfinite(out).all(), name


def test_euler_cfg_pp_is_euler_when_the_unconditional_prediction_is_the_guided_one():
    sigmas = schedule(MS, "normal", 8)
    x = torch.randn([1, 4, 4, 4], generator=torch.Generator().manual_seed(2)) * sigmas[0]
    recording, last = recording_denoiser()

    ours = SAMPLERS["euler_cfg_pp"](recording, x.clone(), sigmas, SamplingContext(seed=0, uncond=lambda: last["x0"]))
    assert torch.allclose(ours, SAMPLERS["euler"](toy_denoiser, x.clone(), sigmas, SamplingContext(seed=0)), atol=1e-5)


SIGMAS_10 = {  # the reference's values for SD1.5/SDXL, 10 steps
    "normal": [14.6146, 7.8399, 4.6092, 2.9183, 1.9502, 1.3449, 0.9324, 0.6250, 0.3687, 0.0292, 0],
    "karras": [14.6146, 9.1029, 5.4784, 3.1686, 1.7494, 0.9141, 0.4469, 0.2014, 0.0819, 0.0292, 0],
}
TIMESTEPS_10 = {
    "normal": [999, 888, 777, 666, 555, 444, 333, 222, 111, 0],
    "karras": [999, 916, 815, 687, 523, 327, 146, 41, 7, 0],
    "simple": [999, 899, 799, 699, 599, 499, 399, 299, 199, 99],
    "sgm_uniform": [999, 899, 799, 699, 599, 500, 400, 300, 200, 100],
    "ddim_uniform": [901, 801, 701, 601, 501, 401, 301, 201, 101, 1],
    "beta": [999, 959, 876, 765, 637, 500, 362, 234, 123, 40],
}


def test_sigma_table_endpoints():
    assert MS.sigma_min == pytest.approx(0.0291672, abs=1e-6)
    assert MS.sigma_max == pytest.approx(14.614641, abs=1e-5)
    assert float(MS.sigma(torch.tensor(998.5))) == pytest.approx(
        float(((MS.log_sigmas[998] + MS.log_sigmas[999]) / 2).exp()))


@pytest.mark.parametrize("name", SCHEDULERS)
def test_schedules(name):
    sigmas = schedule(MS, name, 10)
    assert sigmas[-1] == 0 and (sigmas[:-1] > 0).all() and (sigmas[:-1] >= sigmas[1:]).all()
    if name in SIGMAS_10:
        assert sigmas.tolist() == pytest.approx(SIGMAS_10[name], abs=1e-4)
    if name in TIMESTEPS_10:
        assert MS.timestep(sigmas[:-1]).int().tolist() == TIMESTEPS_10[name]
    if name == "exponential":
        assert torch.allclose(sigmas[:-1].log().diff(), sigmas[:-1].log().diff()[0].expand(9), atol=1e-5)
    if name == "kl_optimal":
        assert torch.allclose(sigmas[:-1].atan().diff(), sigmas[:-1].atan().diff()[0].expand(9), atol=1e-5)
    if name == "linear_quadratic":
        assert sigmas[0] == pytest.approx(MS.sigma_max) and len(sigmas) == 11


def test_ddim_uniform_yields_extra_steps_when_1000_is_not_divisible():
    assert len(schedule(MS, "ddim_uniform", 30)) == 32  # 31 steps + the final 0
    assert MS.timestep(schedule(MS, "ddim_uniform", 30)[0]) == 991


def test_denoise_keeps_the_tail_of_a_longer_schedule_and_discarding_samplers_drop_the_penultimate():
    full = schedule(MS, "normal", 40)
    assert torch.equal(ksampler_sigmas(MS, "euler", "normal", 20, denoise=0.5), full[-21:])
    assert len(ksampler_sigmas(MS, "euler", "normal", 20, denoise=0.0)) == 0
    longer = schedule(MS, "karras", 21)
    assert torch.equal(ksampler_sigmas(MS, "dpm_2", "karras", 20), torch.cat([longer[:-2], longer[-1:]]))


def test_advanced_truncation():
    sigmas = schedule(MS, "normal", 20)
    first = truncate(sigmas, 0, 12, force_full_denoise=False)
    assert len(first) == 13 and first[-1] == sigmas[12]
    assert truncate(sigmas, 0, 12, force_full_denoise=True)[-1] == 0
    assert torch.equal(truncate(sigmas, 12, 10000, force_full_denoise=True), sigmas[12:])
    assert truncate(sigmas, 20, 10000, force_full_denoise=True) is None


def test_max_denoise_start_noise_is_sqrt_one_plus_sigma_squared():
    noise = torch.ones(1)
    assert float(MS.noise_scaling(MS.sigma_max, noise, torch.zeros(1), max_denoise=True)) == \
        pytest.approx((1 + MS.sigma_max ** 2) ** 0.5)
    assert MS.is_max_denoise(float(schedule(MS, "karras", 5)[0]))
    assert not MS.is_max_denoise(float(ksampler_sigmas(MS, "euler", "normal", 10, 0.5)[0]))


@pytest.mark.parametrize("name", ["er_sde", "dpmpp_sde", "dpmpp_2m_sde", "res_multistep_ancestral", "seeds_2", "seeds_3",
                                  "sa_solver", "sa_solver_pece"])
def test_sde_samplers_draw_from_the_data_distribution(name):
    """Started from the noised marginal of Gaussian data N(μ, s²), a consistent reverse-SDE solver
    ends with samples of that mean and spread; a wrong noise scale or drift shows at once."""
    sigmas = schedule(MS, "karras", 30)
    x = torch.randn([1, 4, 64, 64], generator=torch.Generator().manual_seed(0)) * (MS.sigma_max ** 2 + SPREAD ** 2) ** 0.5 + MU
    out = SAMPLERS[name](gaussian_denoiser, x, sigmas, SamplingContext(seed=3, percent_to_sigma=MS.percent_to_sigma))
    assert abs(float(out.mean()) - MU) < 0.02 and abs(float(out.std()) - SPREAD) < 0.03, (out.mean(), out.std())


@pytest.mark.parametrize("name", ["dpm_fast", "dpm_adaptive"])
@pytest.mark.parametrize("steps", [5, 9, 12])
def test_dpm_solver_fast_and_adaptive_match_k_diffusion(name, steps):
    """ComfyUI runs them from σ_max to the smallest σ > 0, dpm_fast with one model call per step."""
    reference = load_sampling()
    if reference is None:
        pytest.skip("k-diffusion is not installed (README test command installs it)")
    sigmas = ksampler_sigmas(MS, name, "karras", steps)
    x = torch.randn([2, 4, 6, 5], generator=torch.Generator().manual_seed(3)) * sigmas[0]
    low, high = sigmas[-2].clone(), sigmas[0].clone()
    if name == "dpm_fast":
        expected = reference.sample_dpm_fast(toy_denoiser, x.clone(), low, high, steps, disable=True)
    else:
        expected = reference.sample_dpm_adaptive(toy_denoiser, x.clone(), low, high, disable=True)
    ours = SAMPLERS[name](toy_denoiser, x.clone(), sigmas, SamplingContext(seed=0))
    assert torch.allclose(ours, expected, atol=1e-6)


def _exact_then_denoised(x_start, sigmas):
    """The ODE solved exactly down to the last σ > 0, then the final step every multistep
    solver here takes, x = D(x, σ_min): what a solver of any order converges to."""
    sigma_min = sigmas[-2]
    x_min = MU + (x_start - MU) * ((SPREAD ** 2 + sigma_min ** 2) / (SPREAD ** 2 + MS.sigma_max ** 2)) ** 0.5
    return gaussian_denoiser(x_min, sigma_min * torch.ones(1))


DETERMINISTIC_FORMS = {  # label -> (sampler, schedule, order it must show)
    "deis": (lambda: SAMPLERS["deis"], "karras", 3),
    "ipndm_v (order 3)": (lambda: functools.partial(adams.ipndm_v, max_order=3), "normal", 2),
    "seeds_2 (eta 0)": (lambda: functools.partial(seeds.seeds_2, eta=0.0), "karras", 2),
    "seeds_3 (eta 0)": (lambda: functools.partial(seeds.seeds_3, eta=0.0), "karras", 3),
    "sa_solver (tau 0)": (lambda: SAMPLERS["sa_solver"], "karras", 3),
    "sa_solver_pece (tau 0)": (lambda: SAMPLERS["sa_solver_pece"], "karras", 3),
}


@pytest.mark.parametrize("label", sorted(DETERMINISTIC_FORMS))
def test_multistep_and_exponential_solvers_converge_at_their_order(label):
    """Doubling the steps from 20 to 40 divides the error by about 2^order; the target is the exact
    ODE solution down to σ_min followed by the solvers' own final x = D step."""
    make, scheduler, order = DETERMINISTIC_FORMS[label]
    x_start = torch.randn([1, 4, 8, 8], generator=torch.Generator().manual_seed(0)) * MS.sigma_max
    errors = []
    for steps in (20, 40):
        sigmas = schedule(MS, scheduler, steps)
        # an empty stochastic window: SA-Solver's τ is 0 outside [σ(80 %), σ(20 %)]
        ctx = SamplingContext(seed=0, percent_to_sigma=lambda percent: 0.0)
        out = make()(gaussian_denoiser, x_start.clone(), sigmas, ctx)
        errors.append(float((out - _exact_then_denoised(x_start, sigmas)).abs().max()))
    assert errors[0] / errors[1] > {2: 3.5, 3: 6.0}[order], errors


def test_ipndm_v_weights_are_adams_bashforth_on_even_steps():
    """On evenly spaced σ the variable-step weights reduce to ipndm's fixed ones up to third order.
    At fourth order ComfyUI's formula (from the iPNDM-v reference code) gives (57, −65, 43, −11)/24
    rather than AB4's (55, −59, 37, −9)/24, and on uneven steps its fourth-order weights no longer
    sum to 1: ComfyUI runs it so, and so do we. Orders 2 and 3 stay consistent on any grid."""
    even = torch.linspace(10.0, 1.0, 10, dtype=torch.float64)
    for order, expected in {1: [1], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12],
                            4: [57 / 24, -65 / 24, 43 / 24, -11 / 24]}.items():
        weights = [float(w) for w in adams._variable_step_weights(even, 5, order)]
        assert weights == pytest.approx(expected, abs=1e-12), order
    uneven = schedule(MS, "karras", 12).double()
    for order in (2, 3):
        assert float(sum(adams._variable_step_weights(uneven, 6, order))) == pytest.approx(1.0, abs=1e-9)


def test_deis_weights_integrate_the_slope_polynomial_over_sigma():
    """C_j = ∫ ℓ_j(t) dσ over the step: they sum to σ' − σ, and Σ C_j·t_j equals ∫ t dσ."""
    sigmas = schedule(MS, "karras", 8)
    coefficients = adams._deis_coefficients(sigmas, 3)
    assert coefficients[0] == [] and len(coefficients[1]) == 2 and len(coefficients[3]) == 3
    times = _deis_times(sigmas.double())
    for i in (2, 4, 6):
        step = float(sigmas[i + 1] - sigmas[i])
        assert float(sum(coefficients[i])) == pytest.approx(step, rel=2e-3)
        grid = torch.linspace(0, 1, 200001, dtype=torch.float64)
        t = times[i] + grid * (times[i + 1] - times[i])
        sigma_t = _sigma_of_vp_time(t)
        integral = float(torch.trapezoid(t, sigma_t))
        moment = float(sum(c * times[i - j] for j, c in enumerate(coefficients[i])))
        assert moment == pytest.approx(integral, rel=2e-3)


def _deis_times(sigmas):
    log_max, log_min = torch.log(torch.tensor(80.0, dtype=torch.float64) ** 2 + 1), torch.log(torch.tensor(0.002, dtype=torch.float64) ** 2 + 1)
    beta_d = 2 * (log_min / 1e-3 - log_max) / (1e-3 - 1)
    beta_min = log_max - 0.5 * beta_d
    return ((beta_min ** 2 + 2 * beta_d * (sigmas ** 2 + 1).log()).sqrt() - beta_min) / beta_d


def _sigma_of_vp_time(t):
    log_max, log_min = torch.log(torch.tensor(80.0, dtype=torch.float64) ** 2 + 1), torch.log(torch.tensor(0.002, dtype=torch.float64) ** 2 + 1)
    beta_d = 2 * (log_min / 1e-3 - log_max) / (1e-3 - 1)
    beta_min = log_max - 0.5 * beta_d
    return torch.sqrt(torch.exp(0.5 * beta_d * t ** 2 + beta_min * t) - 1)


@pytest.mark.parametrize("tau", [0.0, 1.0])
def test_sa_solver_weights_integrate_polynomials_exactly(tau):
    """b_k are ∫ e^{(1+τ²)(λ−λ_t)}(1+τ²)·ℓ_k(λ) dλ: checked against scipy's quadrature for the
    polynomial 1, λ, λ² through three nodes."""
    from scipy import integrate

    nodes = torch.tensor([-1.2, -0.7, -0.1], dtype=torch.float64)
    lam_s, lam_t = torch.tensor(-0.1, dtype=torch.float64), torch.tensor(0.35, dtype=torch.float64)
    weights = sa_solver.adams_weights(nodes, lam_s, lam_t, tau)
    stretch = 1 + tau ** 2
    for power in range(3):
        expected = integrate.quad(lambda lam: stretch * math.exp(stretch * (lam - 0.35)) * lam ** power, -0.1, 0.35)[0]
        assert float((weights * nodes ** power).sum()) == pytest.approx(expected, rel=1e-9)


def test_sa_solver_first_order_step_is_euler():
    """One node, no noise: x' = (σ'/σ)·x + (1 − e^{−h})·D, which is Euler's step in σ."""
    lam = torch.tensor([0.5], dtype=torch.float64)
    weights = sa_solver.adams_weights(lam, lam[0], torch.tensor(0.9, dtype=torch.float64), 0.0)
    assert float(weights[0]) == pytest.approx(1 - math.exp(-0.4), rel=1e-12)


CFG_PP_BASES = {"euler_ancestral_cfg_pp": "euler_ancestral", "dpmpp_2s_ancestral_cfg_pp": "dpmpp_2s_ancestral",
                "dpmpp_2m_cfg_pp": "dpmpp_2m", "res_multistep_cfg_pp": "res_multistep",
                "res_multistep_ancestral_cfg_pp": "res_multistep_ancestral",
                "gradient_estimation_cfg_pp": "gradient_estimation", "euler_cfg_pp": "euler",
                "euler_cfg_pp_alternative": "euler"}


@pytest.mark.parametrize("name", sorted(CFG_PP_BASES))
def test_cfg_pp_samplers_are_their_base_when_unconditional_equals_guided(name):
    """With no guidance (D_uncond = D) each CFG++ form reduces to its plain sampler, noise
    included; with a different D_uncond it must not."""
    assert name in NEEDS_UNCOND and set(CFG_PP_BASES) == set(NEEDS_UNCOND)
    sigmas = schedule(MS, "karras", 8)
    x = torch.randn([1, 4, 4, 4], generator=torch.Generator().manual_seed(2)) * sigmas[0]
    recording, last = recording_denoiser()
    base = SAMPLERS[CFG_PP_BASES[name]](toy_denoiser, x.clone(), sigmas,
                                         SamplingContext(seed=0, noise_sampler=ReplayNoise(x.shape)))
    same = SAMPLERS[name](recording, x.clone(), sigmas,
                          SamplingContext(seed=0, noise_sampler=ReplayNoise(x.shape), uncond=lambda: last["x0"]))
    assert torch.allclose(same, base, atol=2e-5), (same - base).abs().max()
    shifted = SAMPLERS[name](recording, x.clone(), sigmas,
                             SamplingContext(seed=0, noise_sampler=ReplayNoise(x.shape), uncond=lambda: last["x0"] * 0.9))
    assert (shifted - base).abs().max() > 1e-3


def test_cfg_pp_euler_ancestral_step_lands_from_the_guided_estimate():
    """One step by the CFG++ paper's DDIM form: x' = D_c + σ↓·(x − D_u)/σ + σ↑·n."""
    sigmas = torch.tensor([2.0, 0.5, 0.0])
    x = torch.randn([1, 4, 4, 4], generator=torch.Generator().manual_seed(3)) * 2.0
    guided, uncond = toy_denoiser(x, torch.tensor([2.0])), toy_denoiser(x, torch.tensor([2.0])) * 0.8
    draws = ReplayNoise(x.shape, seed=5)
    sigma_up = min(0.5, (0.5 ** 2 * (2.0 ** 2 - 0.5 ** 2) / 2.0 ** 2) ** 0.5)
    sigma_down = (0.5 ** 2 - sigma_up ** 2) ** 0.5
    expected = guided + sigma_down * (x - uncond) / 2.0 + sigma_up * draws(None, None)
    calls = []

    def denoiser(x_now, sigma):
        calls.append(float(sigma[0]))
        return guided if len(calls) == 1 else torch.zeros_like(x_now)

    out = SAMPLERS["euler_ancestral_cfg_pp"](denoiser, x, sigmas[:2].clone(), SamplingContext(
        seed=0, noise_sampler=ReplayNoise(x.shape, seed=5), uncond=lambda: uncond))
    assert torch.allclose(out, expected, atol=1e-5)


def test_uni_pc_with_a_single_step_leaves_the_sample_as_comfyui_does():
    """ComfyUI's UniPC takes order min(3, len(σ) − 2): 0 for one step, and then never updates the
    sample; KSampler's uni_pc at steps=1 returns its scaled start noise."""
    sigmas = ksampler_sigmas(MS, "uni_pc", "karras", 1, 1.0)
    assert len(sigmas) == 2
    x = torch.randn([1, 4, 4, 4], generator=torch.Generator().manual_seed(3)) * sigmas[0]
    out = SAMPLERS["uni_pc"](toy_denoiser, x.clone(), sigmas, SamplingContext(seed=0))
    expected = x / (1 + sigmas[0] ** 2) ** 0.5 * (1 + 0.001 ** 2) ** 0.5
    assert torch.allclose(out, expected, rtol=1e-6)


def test_lcm_upscale_grows_the_estimate_step_by_step_and_renoises_from_the_global_generator():
    from nodes.sampling.noise import GlobalGenerators

    sigmas = schedule(MS, "normal", 8)
    seen = []

    def sizes(x, sigma):
        seen.append(x.shape[-1])
        return toy_denoiser(x, sigma)

    x = torch.randn([1, 4, 8, 8], generator=torch.Generator().manual_seed(3)) * sigmas[0]
    out = SAMPLERS["lcm_upscale"](sizes, x, sigmas, SamplingContext(seed=0), upscale_method="nearest-exact")
    # 9 σ: the default spreads ×2 over the first 4 steps (1.25, 1.5, 1.75, 2)
    assert seen == [8, 10, 12, 14, 16, 16, 16, 16] and out.shape[-1] == 16
    recorded = []

    def zeros(x, sigma):
        recorded.append(x.clone())
        return torch.zeros_like(x)

    cpu = torch.Generator().manual_seed(11)
    torch.randn(5, generator=cpu)  # whatever the initial noise left
    expected = torch.Generator().manual_seed(11)
    torch.randn(5, generator=expected)
    ctx = SamplingContext(seed=0, generators=GlobalGenerators(cpu, 0))
    SAMPLERS["lcm_upscale"](zeros, torch.ones(1, 4, 4, 4), torch.tensor([2.0, 1.0, 0.0]), ctx, total_upscale=1.0)
    assert torch.equal(recorded[1], 1.0 * torch.randn([1, 4, 4, 4], generator=expected))
