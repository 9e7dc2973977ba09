"""SamplerCustom(Advanced) and its parts, against KSampler and the reference's σ."""
from __future__ import annotations

import pytest
import torch

from engine import Session, Settings


def base(checkpoint="tiny_sd15.safetensors"):
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }


def decoded(session, graph, node, slot=0):
    """Run `graph` with a VAEDecode and a preview after `node`'s output `slot`: the pixels."""
    import numpy as np
    from PIL import Image

    graph = dict(graph)
    graph["98"] = {"class_type": "VAEDecode", "inputs": {"samples": [node, slot], "vae": ["4", 2]}}
    graph["99"] = {"class_type": "PreviewImage", "inputs": {"images": ["98", 0]}}
    result = session.execute(graph)
    return np.asarray(Image.open(result.outputs["99"].files[0])).astype(int)


@pytest.fixture
def session(tiny_models, tmp_path):
    return Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path, device="cpu"), cache=False)


def ksampler(sampler="euler", scheduler="normal", steps=4, cfg=5.0, seed=7):
    return {"class_type": "KSampler", "inputs": {"model": ["4", 0], "seed": seed, "steps": steps, "cfg": cfg,
                                                 "sampler_name": sampler, "scheduler": scheduler, "denoise": 1.0,
                                                 "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}


def test_sampler_custom_with_basic_scheduler_equals_ksampler(session):
    import numpy as np

    graph = base() | {"3": ksampler("dpmpp_2m", "karras")}
    expected = decoded(session, graph, "3")
    custom = base() | {
        "10": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m"}},
        "11": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "karras", "steps": 4,
                                                          "denoise": 1.0}},
        "12": {"class_type": "SamplerCustom", "inputs": {"model": ["4", 0], "add_noise": True, "noise_seed": 7,
                                                         "cfg": 5.0, "positive": ["6", 0], "negative": ["7", 0],
                                                         "sampler": ["10", 0], "sigmas": ["11", 0],
                                                         "latent_image": ["5", 0]}},
    }
    assert np.array_equal(decoded(session, custom, "12"), expected)
    # the last step lands on σ = 0, where the x0 estimate is the result
    assert np.array_equal(decoded(session, custom, "12", slot=1), expected)


def test_split_sigmas_in_two_advanced_stages_equals_one_pass(session):
    import numpy as np

    parts = {
        "10": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "11": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "normal", "steps": 6,
                                                          "denoise": 1.0}},
        "13": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "14": {"class_type": "DisableNoise", "inputs": {}},
        "15": {"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                     "cfg": 4.0}},
    }
    whole = base() | parts | {
        "20": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["13", 0], "guider": ["15", 0],
                                                                 "sampler": ["10", 0], "sigmas": ["11", 0],
                                                                 "latent_image": ["5", 0]}}}
    staged = base() | parts | {
        "12": {"class_type": "SplitSigmas", "inputs": {"sigmas": ["11", 0], "step": 2}},
        "20": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["13", 0], "guider": ["15", 0],
                                                                 "sampler": ["10", 0], "sigmas": ["12", 0],
                                                                 "latent_image": ["5", 0]}},
        "21": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["14", 0], "guider": ["15", 0],
                                                                 "sampler": ["10", 0], "sigmas": ["12", 1],
                                                                 "latent_image": ["20", 0]}}}
    assert np.abs(decoded(session, staged, "21") - decoded(session, whole, "20")).max() <= 1


def test_basic_guider_is_cfg_one(session):
    import numpy as np

    parts = {"10": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
             "11": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "simple", "steps": 3,
                                                               "denoise": 1.0}},
             "13": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
             "15": {"class_type": "BasicGuider", "inputs": {"model": ["4", 0], "conditioning": ["6", 0]}},
             "20": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["13", 0], "guider": ["15", 0],
                                                                      "sampler": ["10", 0], "sigmas": ["11", 0],
                                                                      "latent_image": ["5", 0]}}}
    expected = decoded(session, base() | {"3": ksampler("euler", "simple", 3, cfg=1.0)}, "3")
    assert np.array_equal(decoded(session, base() | parts, "20"), expected)


def test_sd_turbo_scheduler_timesteps():
    from nodes.core.custom_sampling import SDTurboScheduler
    from nodes.sampling.model_sampling import DiscreteSampling
    from nodes.sd.models import DiffusionModel

    model = DiffusionModel("x", "sd1", "model.diffusion_model.", "{}", "eps", "cpu")
    ms = DiscreteSampling()
    one = SDTurboScheduler(model=model, steps=1, denoise=1.0).execute(None).SIGMAS.sigmas
    assert ms.timestep(one[:-1]).tolist() == [999] and one[-1] == 0
    two = SDTurboScheduler(model=model, steps=2, denoise=0.5).execute(None).SIGMAS.sigmas
    assert ms.timestep(two[:-1]).tolist() == [499, 399]


def test_karras_and_exponential_nodes_use_their_widgets():
    from nodes.core.custom_sampling import ExponentialScheduler, KarrasScheduler

    karras = KarrasScheduler(steps=10, sigma_max=14.614642, sigma_min=0.0291675, rho=7.0).execute(None).SIGMAS.sigmas
    assert karras.tolist()[:3] == pytest.approx([14.6146, 9.1029, 5.4784], abs=1e-3) and karras[-1] == 0
    expo = ExponentialScheduler(steps=5, sigma_max=10.0, sigma_min=0.1).execute(None).SIGMAS.sigmas
    assert torch.allclose(expo[:-1], torch.tensor([10.0, 10 ** 0.5, 1.0, 0.1 ** 0.5, 0.1]), rtol=1e-5)


def test_polyexponential_and_vp_schedules_are_k_diffusions():
    from nodes.sampling.schedules import polyexponential, variance_preserving

    from .kdiffusion_reference import load_sampling

    reference = load_sampling()
    if reference is None:
        pytest.skip("k-diffusion is not installed")
    assert torch.allclose(polyexponential(9, 0.03, 14.6, 1.5), reference.get_sigmas_polyexponential(9, 0.03, 14.6, 1.5))
    assert torch.allclose(variance_preserving(9, 19.9, 0.1, 1e-3), reference.get_sigmas_vp(9, 19.9, 0.1, 1e-3))


def test_align_your_steps():
    from nodes.sampling.schedules import AYS_NOISE_LEVELS, align_your_steps

    ten = align_your_steps("SDXL", 10)
    assert torch.allclose(ten[:-1], torch.tensor(AYS_NOISE_LEVELS["SDXL"][:-1])) and ten[-1] == 0
    twenty = align_your_steps("SD1", 20)
    assert len(twenty) == 21 and torch.allclose(twenty[::2][:-1], torch.tensor(AYS_NOISE_LEVELS["SD1"][:-1]), rtol=1e-5)
    # between two table entries: their geometric mean (linear in log σ)
    assert twenty[1] == pytest.approx((AYS_NOISE_LEVELS["SD1"][0] * AYS_NOISE_LEVELS["SD1"][1]) ** 0.5, rel=1e-5)
    assert torch.equal(align_your_steps("SD1", 20, denoise=0.5), twenty[-11:])
    assert len(align_your_steps("SD1", 20, denoise=0.0)) == 0


def test_sigma_utilities():
    from nodes.core.custom_sampling import Sigmas
    from nodes.core.schedulers import FlipSigmas, SetFirstSigma, SplitSigmasDenoise

    sigmas = Sigmas(torch.tensor([8.0, 4.0, 2.0, 1.0, 0.0]))
    split = SplitSigmasDenoise(sigmas=sigmas, denoise=0.5).execute(None)
    assert split.high_sigmas.sigmas.tolist() == [8.0, 4.0, 2.0] and split.low_sigmas.sigmas.tolist() == [2.0, 1.0, 0.0]
    assert FlipSigmas(sigmas=sigmas).execute(None).SIGMAS.sigmas.tolist() == pytest.approx([0.0001, 1, 2, 4, 8])
    first = SetFirstSigma(sigmas=sigmas, sigma=20.0).execute(None).SIGMAS.sigmas
    assert first.tolist() == [20.0, 4.0, 2.0, 1.0, 0.0] and sigmas.sigmas[0] == 8.0


@pytest.mark.parametrize("node, inputs, same_as", [
    ("SamplerEulerAncestral", {"eta": 1.0, "s_noise": 1.0}, "euler_ancestral"),
    ("SamplerEulerAncestral", {"eta": 0.0, "s_noise": 1.0}, "euler"),  # no noise: Euler
    ("SamplerLMS", {"order": 4}, "lms"),
    ("SamplerDPMPP_2M_SDE", {"solver_type": "heun", "eta": 1.0, "s_noise": 1.0, "noise_device": "cpu"},
     "dpmpp_2m_sde_heun"),
    ("SamplerDPMPP_SDE", {"eta": 1.0, "s_noise": 1.0, "r": 0.5, "noise_device": "gpu"}, "dpmpp_sde_gpu"),
])
def test_sampler_nodes_with_their_defaults_are_the_named_samplers(node, inputs, same_as, session):
    import numpy as np

    def custom(sampler_node):
        return base() | {
            "10": sampler_node,
            "11": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "karras", "steps": 4,
                                                              "denoise": 1.0}},
            "12": {"class_type": "SamplerCustom", "inputs": {"model": ["4", 0], "add_noise": True, "noise_seed": 7,
                                                             "cfg": 5.0, "positive": ["6", 0], "negative": ["7", 0],
                                                             "sampler": ["10", 0], "sigmas": ["11", 0],
                                                             "latent_image": ["5", 0]}}}

    ours = decoded(session, custom({"class_type": node, "inputs": inputs}), "12")
    named = decoded(session, custom({"class_type": "KSamplerSelect", "inputs": {"sampler_name": same_as}}), "12")
    assert np.abs(ours - named).max() <= (1 if same_as == "euler" else 0)
    if "s_noise" in inputs and inputs["eta"] > 0:  # and the settings reach the sampler
        louder = decoded(session, custom({"class_type": node, "inputs": {**inputs, "s_noise": 1.5}}), "12")
        assert np.abs(louder - ours).max() > 5


def test_perpendicular_cfg_keeps_only_the_negatives_perpendicular_part():
    from nodes.sampling.guidance import perpendicular_cfg

    empty = torch.zeros([1, 2, 1, 1])
    pos = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    along = torch.tensor([3.0, 0.0]).reshape(1, 2, 1, 1)  # parallel to pos: removed entirely
    assert torch.allclose(perpendicular_cfg(pos, along, empty, 5.0, 1.0), 5.0 * pos)
    across = torch.tensor([2.0, 4.0]).reshape(1, 2, 1, 1)  # only (0, 4) survives, scaled by neg_scale
    assert torch.allclose(perpendicular_cfg(pos, across, empty, 5.0, 0.5),
                          torch.tensor([5.0, -10.0]).reshape(1, 2, 1, 1))


def _guided_parts():
    """base() with an empty prompt (8), euler (10), 4 normal steps (11) and noise (13)."""
    return base() | {
        "8": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "10": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "11": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "normal", "steps": 4,
                                                          "denoise": 1.0}},
        "13": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
    }


def test_perp_neg_guider_with_neg_scale_zero_is_cfg_against_the_empty_prompt(session):
    import numpy as np

    parts = _guided_parts()

    def run(guider):
        graph = parts | {"15": guider, "20": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["13", 0], "guider": ["15", 0], "sampler": ["10", 0], "sigmas": ["11", 0],
            "latent_image": ["5", 0]}}}
        return decoded(session, graph, "20")

    perp = {"class_type": "PerpNegGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                      "empty_conditioning": ["8", 0], "cfg": 5.0, "neg_scale": 0.0}}
    against_empty = run({"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0],
                                                               "negative": ["8", 0], "cfg": 5.0}})
    assert np.abs(run(perp) - against_empty).max() <= 1
    perp["inputs"]["neg_scale"] = 2.0
    assert np.abs(run(perp) - against_empty).max() > 5


def test_the_deprecated_perp_neg_patch_is_perp_neg_guider_as_the_models_cfg_function(session):
    import numpy as np

    parts = _guided_parts() | {
        "30": {"class_type": "PerpNeg", "inputs": {"model": ["4", 0], "empty_conditioning": ["8", 0],
                                                   "neg_scale": 1.5}},
    }

    def run(guider, **patches):
        graph = parts | patches | {"15": guider, "20": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["13", 0], "guider": ["15", 0], "sampler": ["10", 0], "sigmas": ["11", 0],
            "latent_image": ["5", 0]}}}
        return decoded(session, graph, "20")

    def cfg_guider(model, cfg):
        return {"class_type": "CFGGuider", "inputs": {"model": model, "positive": ["6", 0], "negative": ["7", 0],
                                                      "cfg": cfg}}

    patched = run(cfg_guider(["30", 0], 5.0))
    guider = run({"class_type": "PerpNegGuider", "inputs": {
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "empty_conditioning": ["8", 0],
        "cfg": 5.0, "neg_scale": 1.5}})
    assert np.array_equal(patched, guider)
    assert np.abs(patched - run(cfg_guider(["4", 0], 5.0))).max() > 5
    # one CFG function per model: RescaleCFG before the patch is replaced by it
    rescale = {"31": {"class_type": "RescaleCFG", "inputs": {"model": ["4", 0], "multiplier": 0.7}}}
    parts["30"]["inputs"]["model"] = ["31", 0]
    assert np.array_equal(run(cfg_guider(["30", 0], 5.0), **rescale), patched)
    parts["30"]["inputs"]["model"] = ["4", 0]
    # at CFG 1 ComfyUI still calls it, the unevaluated negative counting as 0: only neg_scale 0 is plain CFG 1
    plain = run(cfg_guider(["4", 0], 1.0))
    assert np.abs(run(cfg_guider(["30", 0], 1.0)) - plain).max() > 5
    parts["30"]["inputs"]["neg_scale"] = 0.0
    assert np.abs(run(cfg_guider(["30", 0], 1.0)) - plain).max() <= 1


def test_euler_cfg_pp_alternative_is_euler_when_both_prompts_agree(session):
    """Its direction (x − D + D_uncond − D)/σ is Euler's (x − D)/σ where the negative predicts
    what the guided estimate does: the same prompt on both sides."""
    import numpy as np

    def run(version, negative):
        graph = base() | {
            "10": {"class_type": "SamplerEulerCFGpp", "inputs": {"version": version}},
            "11": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "normal", "steps": 4,
                                                              "denoise": 1.0}},
            "12": {"class_type": "SamplerCustom", "inputs": {"model": ["4", 0], "add_noise": True, "noise_seed": 7,
                                                             "cfg": 3.0, "positive": ["6", 0], "negative": negative,
                                                             "sampler": ["10", 0], "sigmas": ["11", 0],
                                                             "latent_image": ["5", 0]}},
        }
        return decoded(session, graph, "12")

    euler = decoded(session, base() | {"3": dict(ksampler("euler", cfg=3.0), inputs={
        **ksampler("euler", cfg=3.0)["inputs"], "negative": ["6", 0]})}, "3")
    assert np.abs(run("alternative", ["6", 0]) - euler).max() <= 1
    alternative, regular = run("alternative", ["7", 0]), run("regular", ["7", 0])
    assert np.abs(alternative - regular).max() > 2
    plain_cfg_pp = decoded(session, base() | {"3": ksampler("euler_cfg_pp", cfg=3.0)}, "3")
    assert np.array_equal(regular, plain_cfg_pp)


def test_sampler_lcm_upscale_samples_to_the_larger_size(session):
    import numpy as np

    graph = base() | {
        "10": {"class_type": "SamplerLCMUpscale", "inputs": {"scale_ratio": 1.5, "scale_steps": -1,
                                                             "upscale_method": "bislerp"}},
        "11": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "sgm_uniform", "steps": 4,
                                                          "denoise": 1.0}},
        "12": {"class_type": "SamplerCustom", "inputs": {"model": ["4", 0], "add_noise": True, "noise_seed": 7,
                                                         "cfg": 1.0, "positive": ["6", 0], "negative": ["7", 0],
                                                         "sampler": ["10", 0], "sigmas": ["11", 0],
                                                         "latent_image": ["5", 0]}},
    }
    first, second = decoded(session, graph, "12"), decoded(session, graph, "12")
    assert first.shape == (96, 96, 3) and np.array_equal(first, second) and first.std() > 0
