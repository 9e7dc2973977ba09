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


class Weights:
    """A handle for a plain torch module of a given size, placed on `device`."""

    def __init__(self, name: str, floats: int, device: str):
        self.name, self.floats, self.device = name, floats, device

    @property
    def cache_key(self):
        return ("weights", self.name, self.device)

    def estimated_bytes(self) -> int:
        return self.floats * 4

    def load(self):
        import torch

        return torch.nn.Linear(self.floats, 1, bias=False)


def test_gpu_tier_offloads_least_recently_used_to_ram_then_drops_from_ram(monkeypatch):
    """The tier policy on a GPU budget. This machine has no GPU, so moves are recorded, not made."""
    from engine import model_store

    moves = []
    monkeypatch.setattr(model_store, "_move", lambda model, device: moves.append(device))
    store = model_store.ModelStore(ram_budget=5_000 * 4, vram_budget=2_500 * 4)
    te, unet, vae = (Weights(n, f, "cuda:0") for n, f in (("te", 2_000), ("unet", 2_000), ("vae", 400)))
    store.get(te)
    store.release()
    store.get(unet)  # the encoder leaves the GPU for RAM before the UNet arrives
    assert store.resident() == {te.cache_key: "cpu", unet.cache_key: "cuda:0"} and moves == ["cpu"]
    store.release()
    store.get(vae)  # fits next to the UNet: nothing moves
    assert moves == ["cpu"]
    store.release()
    store.get(te)  # back to the GPU; the least recently used on it (the UNet) goes to RAM
    assert store.resident()[unet.cache_key] == "cpu" and store.resident()[te.cache_key] == "cuda:0"
    assert moves == ["cpu", "cpu", "cuda:0"] and store.load_counts[te.cache_key] == 1
    store.release()
    big = Weights("big", 4_000, "cpu")  # a CPU model that needs the RAM the offloaded ones hold
    store.get(big)
    assert unet.cache_key not in store and ("drop", unet.cache_key) in store.log


def test_a_model_in_use_is_never_evicted(monkeypatch):
    from engine import model_store

    monkeypatch.setattr(model_store, "_move", lambda model, device: None)
    store = model_store.ModelStore(ram_budget=3_000 * 4)
    first, second = Weights("a", 2_000, "cpu"), Weights("b", 2_000, "cpu")
    store.get(first)
    store.get(second)  # same node holds both: over budget, but the first stays
    assert first.cache_key in store and second.cache_key in store
    store.release()
    store.get(Weights("c", 100, "cpu"))
    assert first.cache_key not in store  # released: now it may go
