import pytest

from engine import Session, Settings

from . import toy_nodes


@pytest.fixture
def toy_session(tmp_path):
    toy_nodes.CALLS.clear()
    toy_nodes.Record.RESULTS.clear()
    toy_nodes.Fingerprinted.SEEN.clear()
    return Session(toy_nodes.registry(), Settings(output_dir=tmp_path / "out", input_dir=tmp_path / "in",
                                                  models_dir=tmp_path / "models"))
