"""ModelSamplingContinuousEDM / V, EDM v-prediction checkpoints (CosXL) and Playground v2.5."""
from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from engine import Session, Settings
from engine.errors import ValidationFailed
from nodes.sampling.model_sampling import DiscreteSampling, model_sampling

from .test_model_patches import _graph, _pixels


def test_continuous_sampling_formulas():
    v = model_sampling("v", continuous=(0.002, 120.0, 1.0, False))
    assert v.sigma_min == pytest.approx(0.002) and v.sigma_max == pytest.approx(120.0) and len(v.sigmas) == 1000
    sigma = torch.tensor([2.5])
    assert float(v.timestep(sigma)) == pytest.approx(0.25 * math.log(2.5))
    assert float(v.sigma(v.timestep(sigma))) == pytest.approx(2.5, rel=1e-5)
    assert v.percent_to_sigma(0.5) == pytest.approx(math.sqrt(0.002 * 120.0))
    x, out = torch.randn([1, 4, 2, 2]), torch.randn([1, 4, 2, 2])
    discrete_v = DiscreteSampling(prediction="v")
    # with σ_data 1, the continuous v and eps forms are the discrete ones at any σ
    assert torch.allclose(v.denoised(sigma, out, x), discrete_v.denoised(sigma, out, x))
    assert torch.allclose(v.model_input(x, sigma), discrete_v.model_input(x, sigma))
    edm = model_sampling("edm", continuous=(0.002, 120.0, 0.5, False))
    c_skip, c_out = 0.25 / (2.5 ** 2 + 0.25), 2.5 * 0.5 / (2.5 ** 2 + 0.25) ** 0.5
    assert torch.allclose(edm.denoised(sigma, out, x), c_skip * x + c_out * out)
    assert torch.allclose(edm.model_input(x, sigma), x / (2.5 ** 2 + 0.25) ** 0.5)
    arctan = model_sampling("v", continuous=(0.03, 500.0, 1.0, True))
    assert float(arctan.timestep(sigma)) == pytest.approx(math.atan(2.5) * 2 / math.pi)
    assert float(arctan.sigma(arctan.timestep(sigma))) == pytest.approx(2.5, rel=1e-5)


def _continuous(sampling, sigma_max=120.0, sigma_min=0.002):
    return {"class_type": "ModelSamplingContinuousEDM",
            "inputs": {"sampling": sampling, "sigma_max": sigma_max, "sigma_min": sigma_min}}


def test_continuous_edm_nodes_sample_and_refuse_what_they_cannot(tiny_models, tmp_path):
    checkpoint = "tiny_sd2_v.safetensors"
    discrete = _pixels(tiny_models, tmp_path, _graph(checkpoint, None, sampler="dpmpp_2m"))
    images = [_pixels(tiny_models, tmp_path, _graph(checkpoint, patch, sampler="dpmpp_2m")) for patch in (
        _continuous("v_prediction"), _continuous("edm"), _continuous("eps"),
        {"class_type": "ModelSamplingContinuousV", "inputs": {"sampling": "v_prediction", "sigma_max": 500.0,
                                                              "sigma_min": 0.03}})]
    for image in images:
        assert image.std() > 0 and np.abs(image - discrete).max() > 5
    session = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path, device="cpu"))
    with pytest.raises(ValidationFailed) as failed:
        session.execute(_graph(checkpoint, _continuous("cosmos_rflow")))
    assert [(e.node_id, e.input) for e in failed.value.errors] == [("8", "sampling")]


def test_an_edm_vpred_checkpoint_samples_continuously_and_saves_its_marker(tiny_models, tmp_path):
    from nodes.sd.checkpoint import CheckpointFile, detect

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models, copy_function=os.link)
    state = load_file(models / "checkpoints" / "tiny_sdxl.safetensors")
    state |= {"edm_vpred.sigma_max": torch.tensor(120.0), "edm_vpred.sigma_min": torch.tensor(0.002)}
    save_file(state, str(models / "checkpoints" / "tiny_cosxl.safetensors"))
    info = detect(CheckpointFile(models / "checkpoints" / "tiny_cosxl.safetensors"))
    assert info.prediction == "v" and info.continuous == pytest.approx((0.002, 120.0, 1.0, False))
    detected = _pixels(models, tmp_path, _graph("tiny_cosxl.safetensors", None))
    patched = _pixels(models, tmp_path, _graph("tiny_sdxl.safetensors", _continuous("v_prediction")))
    assert np.array_equal(detected, patched)
    session = Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu"))
    saved = session.execute({
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_cosxl.safetensors"}},
        "2": {"class_type": "ModelSave", "inputs": {"model": ["1", 0], "filename_prefix": "m"}}}).files[0]
    again = load_file(saved)
    assert float(again["edm_vpred.sigma_max"]) == pytest.approx(120.0) and "v_pred" not in again


def test_an_edm_instruct_pix2pix_model_takes_its_image_latent_scaled(tiny_models):
    from nodes.sd.models import sampling_model
    from tests.test_sd_models import _handle

    handle = _handle(tiny_models / "checkpoints" / "tiny_sdxl.safetensors")
    unet = handle.load()
    assert sampling_model(handle, unet).ip2p_scale == 1.0  # diffusers-style IP2P: unscaled
    import dataclasses

    cosxl = dataclasses.replace(handle, prediction="v", continuous=(0.002, 120.0, 1.0, False), stored_edm=True)
    assert sampling_model(cosxl, unet).ip2p_scale == pytest.approx(0.13025)


def test_the_playground_latent_format_is_comfyuis():
    from nodes.sampling.latent_format import PLAYGROUND_V2_5, LatentFormat

    latent = torch.randn(2, 4, 3, 3)
    mean = torch.tensor([-1.6574, 1.886, -1.383, 2.5155]).view(1, 4, 1, 1)
    std = torch.tensor([8.4927, 5.9022, 6.5498, 5.2299]).view(1, 4, 1, 1)
    assert torch.allclose(PLAYGROUND_V2_5.process_in(latent), (latent - mean) * 0.5 / std)
    assert torch.allclose(PLAYGROUND_V2_5.process_out(PLAYGROUND_V2_5.process_in(latent)), latent, atol=1e-6)
    assert torch.equal(LatentFormat(0.13025).process_in(latent), latent * 0.13025)


def test_a_playground_checkpoint_samples_as_edm_in_its_latent_format_and_saves_its_marker(tiny_models, tmp_path):
    """A file with `edm_mean`/`edm_std` is Playground v2.5 (EDM, σ 0.002…80, σ_data 0.5, its
    latent format), the same as the EDM node's Playground choice on the plain SDXL weights."""
    from nodes.sd.checkpoint import CheckpointFile, detect

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models, copy_function=os.link)
    state = load_file(models / "checkpoints" / "tiny_sdxl.safetensors")
    state |= {"edm_mean": torch.tensor([-1.6574, 1.886, -1.383, 2.5155]).view(1, 4, 1, 1),
              "edm_std": torch.tensor([8.4927, 5.9022, 6.5498, 5.2299]).view(1, 4, 1, 1)}
    save_file(state, str(models / "checkpoints" / "tiny_playground.safetensors"))
    info = detect(CheckpointFile(models / "checkpoints" / "tiny_playground.safetensors"))
    assert (info.prediction, info.playground) == ("edm", True)
    assert info.continuous == pytest.approx((0.002, 80.0, 0.5, False))

    def img2img(checkpoint, patch):  # a non-empty latent: the format's shift matters on the way in
        graph = _graph(checkpoint, patch)
        graph["4"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["11", 0], "vae": ["1", 2]}}
        graph["11"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                              "color": 0x3366CC}}
        graph["5"]["inputs"]["denoise"] = 0.6
        return graph

    detected = _pixels(models, tmp_path, img2img("tiny_playground.safetensors", None))
    patched = _pixels(models, tmp_path, img2img("tiny_sdxl.safetensors", _continuous("edm_playground_v2.5", 80.0)))
    assert np.array_equal(detected, patched)
    plain_edm = _pixels(models, tmp_path, img2img("tiny_sdxl.safetensors", _continuous("edm", 80.0)))
    assert np.abs(plain_edm - detected).max() > 5  # the latent format is what differs
    session = Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu"))
    saved = session.execute({
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_playground.safetensors"}},
        "2": {"class_type": "ModelSave", "inputs": {"model": ["1", 0], "filename_prefix": "m"}}}).files[0]
    assert torch.equal(load_file(saved)["edm_std"], state["edm_std"])
