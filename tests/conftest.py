import os

import pytest

from engine import Session, Settings
from engine.batch.cluster import LOOPBACK_ENV

# Before anything imports Ray (it reads this at import): every Ray service the tests start or
# reach stays on 127.0.0.1. The test cluster lives for one module on loopback, so it runs without
# Ray's token authentication (on by default for `ray start` since 2.5x), which would need every
# driver to find the head's token file.
os.environ.update(LOOPBACK_ENV, RAY_AUTH_MODE="disabled")

from . import toy_nodes


@pytest.fixture
def toy_session(tmp_path):
    toy_nodes.CALLS.clear()
    toy_nodes.Record.RESULTS.clear()
    toy_nodes.Fingerprinted.SEEN.clear()
    return Session(toy_nodes.registry(), Settings(output_dir=tmp_path / "out", input_dir=tmp_path / "in",
                                                  models_dir=tmp_path / "models"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Random-weight Kolors models in the real layout, built once per test session."""
    import torch

    from nodes.tiny_models import make_tiny_models

    torch.set_num_threads(2)  # hashes and bit-exact comparisons assume one thread count
    return make_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    # No test may reach a model hub; the loaders' offline message is tested explicitly.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Each test gets its own disk cache: never the user's, never another test's.
    monkeypatch.setenv("RUN_GRAPH_CACHE_DIR", str(tmp_path / "cache"))
