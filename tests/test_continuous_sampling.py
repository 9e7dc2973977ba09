"""ModelSamplingContinuousEDM / V and EDM v-prediction checkpoints (CosXL)."""
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
        session.execute(_graph(checkpoint, _continuous("edm_playground_v2.5")))
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
