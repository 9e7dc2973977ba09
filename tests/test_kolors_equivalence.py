"""The engine against diffusers' KolorsPipeline on the same tiny models and the same noise."""
import numpy as np
import pytest
from diffusers import KolorsPipeline
from PIL import Image

from engine import Session, Settings
from nodes.kolors.sampler import make_scheduler

from .kolors_graphs import txt2img
from .kolors_reference import reference_parts as load_reference_parts
from .kolors_reference import reference_run

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference_parts(tiny_models, tmp_path_factory):
    return load_reference_parts(tiny_models, tmp_path_factory.mktemp("vae_config"))


@pytest.fixture
def session(tiny_models, tmp_path):
    (tmp_path / "input").mkdir()
    return Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path / "out",
                                     input_dir=tmp_path / "input", device="cpu"))


CASES = [("EulerDiscreteScheduler", 5.0), ("EulerDiscreteScheduler", 1.0),
         ("DPMSolverMultistepScheduler", 5.0), ("DPMSolverMultistepScheduler", 1.0),
         ("EulerAncestralDiscreteScheduler", 4.0), ("DPMSolverMultistepScheduler_SDE_karras", 3.0),
         ("UniPCMultistepScheduler", 5.0), ("DEISMultistepScheduler", 5.0)]


@pytest.mark.parametrize("scheduler,cfg", CASES)
def test_txt2img_latents_and_images_match_kolors_pipeline(session, reference_parts, scheduler, cfg):
    prompts = ["a cat", "a red dog"]
    result = session.execute(txt2img("|".join(prompts), cfg=cfg, scheduler=scheduler, steps=4, seed=7))
    ours = result.outputs["14"].LATENT.samples * 0.13025
    theirs = reference_run(reference_parts, scheduler, prompts, cfg=cfg, steps=4, seed=7, size=64, output_type="latent")
    assert ours.shape == theirs.shape == (2, 4, 8, 8)
    assert (ours - theirs).abs().max().item() <= TOLERANCE
    image = result.outputs["10"].IMAGE.pixels
    ref_image = reference_run(reference_parts, scheduler, prompts, cfg=cfg, steps=4, seed=7, size=64, output_type="pt")
    assert (image - ref_image.permute(0, 2, 3, 1)).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("scheduler,cfg", [("EulerDiscreteScheduler", 5.0), ("DPMSolverMultistepScheduler", 1.0)])
def test_img2img_matches_kolors_img2img_pipeline(session, reference_parts, scheduler, cfg):
    pixels = (np.indices((64, 64)).sum(0) * 3 % 256).astype(np.uint8)
    Image.fromarray(np.stack([pixels, pixels[::-1], pixels.T], -1)).save(session.settings.input_dir / "init.png")
    result = session.execute(txt2img("a house", cfg=cfg, scheduler=scheduler, steps=5, seed=3,
                                     image="init.png", strength=0.6))
    init = result.outputs["21"].LATENT.samples * 0.13025
    ours = result.outputs["14"].LATENT.samples * 0.13025
    theirs = reference_run(reference_parts, scheduler, ["a house"], cfg=cfg, steps=5, seed=3, size=64,
                        output_type="latent", init=init, strength=0.6)
    assert (ours - theirs).abs().max().item() <= TOLERANCE
    assert (ours - init).abs().max().item() > 1e-3  # it did denoise something


def test_text_embeddings_match_pipeline_encode_prompt(session, reference_parts):
    result = session.execute(txt2img("astronaut on a horse |\ncat in a hat", steps=1))
    embeds = result.outputs["12"].kolors_embeds
    pipe = KolorsPipeline(**reference_parts, scheduler=make_scheduler("EulerDiscreteScheduler"))
    pe, ne, pp, npool = pipe.encode_prompt(["astronaut on a horse ", "\ncat in a hat"], device="cpu",
                                           do_classifier_free_guidance=True, negative_prompt=["", ""])
    for a, b in ((embeds.prompt_embeds, pe), (embeds.negative_prompt_embeds, ne),
                 (embeds.pooled_prompt_embeds, pp), (embeds.negative_pooled_prompt_embeds, npool)):
        assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-5
