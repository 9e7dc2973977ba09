"""Models within a memory budget: a workflow whose models do not fit together still runs, the
least recently used model leaving before the next one loads, with the same result."""
import pytest

from engine import Session, Settings

from .kolors_graphs import txt2img


@pytest.fixture(scope="module")
def unlimited(tiny_models, tmp_path_factory):
    session = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path_factory.mktemp("out"),
                                        device="cpu", cache_dir=None))
    result = session.execute(txt2img(steps=2))
    return session.models.sizes(), result.outputs["10"].IMAGE.pixels


def test_text_encoder_leaves_before_the_unet_arrives_and_the_image_is_unchanged(tiny_models, tmp_path, unlimited):
    sizes, pixels = unlimited
    kind = {key[0]: key for key in sizes}
    budget = max(sizes.values()) + 1024  # room for any one model, never for the encoder and the UNet
    assert sizes[kind["chatglm3"]] + sizes[kind["kolors-unet"]] > budget
    session = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path, device="cpu",
                                        cache_dir=None, ram_budget=budget))
    result = session.execute(txt2img(steps=2))
    assert (result.outputs["10"].IMAGE.pixels == pixels).all()
    log = session.models.log
    assert log.index(("drop", kind["chatglm3"])) < log.index(("load", kind["kolors-unet"]))
    assert sum(session.models.sizes().values()) <= budget


def test_models_that_fit_stay_loaded_across_runs(tiny_models, tmp_path, unlimited):
    sizes, _ = unlimited
    session = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path, device="cpu",
                                        cache_dir=None, ram_budget=sum(sizes.values()) * 2))
    session.execute(txt2img(steps=1))
    session.execute(txt2img(steps=1, seed=5))
    assert [op for op, _ in session.models.log] == ["load"] * 3
