"""Session for more than one caller: cancel, threads, failures outside nodes, memory bounds."""
import threading
import time

import pytest

from engine import Node, RunCancelled
from engine.cache import OutputCache
from engine.model_store import ModelStore

from . import toy_nodes
from .test_cache import CHAIN
from .test_model_memory import Weights
from .toy_nodes import api

SLOW = api(("1", "Constant", {"value": 1}), ("2", "Steps", {"x": ["1", 0], "steps": 400, "pause_s": 0.005}),
           ("3", "Record", {"x": ["2", 0], "name": "slow"}))


def test_cancel_stops_the_running_run_at_its_next_step_and_the_session_stays_usable(toy_session):
    steps_seen = []
    toy_session.on_event = lambda kind, data: steps_seen.append(data["value"]) if kind == "progress" else None
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(r=toy_session.execute(SLOW, raise_on_error=False)))
    runner.start()
    while len(steps_seen) < 5:
        time.sleep(0.001)
    toy_session.cancel()
    runner.join(timeout=30)
    result = outcome["r"]
    assert result.status == "failed" and result.errors[0].kind == "cancelled"
    assert len(steps_seen) < 400 and "3" not in result.outputs
    assert toy_session.execute(CHAIN).status == "ok"  # not cancelled for good
    with pytest.raises(RunCancelled):
        toy_session.on_event = lambda kind, data: toy_session.cancel() if kind == "progress" else None
        toy_session.execute(SLOW)
    toy_session.on_event = lambda kind, data: None
    assert toy_session.execute(SLOW).outputs["2"].number.value == 401


def test_threads_sharing_a_session_get_their_own_results(toy_session):
    results = {}

    def run(value: int) -> None:
        graph = api(("1", "Constant", {"value": value}), ("2", "Steps", {"x": ["1", 0], "steps": 3, "pause_s": 0.001}),
                    ("3", "Record", {"x": ["2", 0], "name": f"v{value}"}))
        results[value] = toy_session.execute(graph)

    threads = [threading.Thread(target=run, args=(v,)) for v in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {v: r.outputs["2"].number.value for v, r in results.items()} == {v: v + 3.0 for v in range(12)}
    assert {v: (toy_session.settings.output_dir / f"v{v}.txt").read_text() for v in range(12)} == \
        {v: str(v + 3.0) for v in range(12)}


def test_an_exception_outside_any_node_fails_that_job_only(toy_session, monkeypatch):
    graphs = [api(("1", "Constant", {"value": v}), ("2", "Record", {"x": ["1", 0], "name": f"j{v}"}))
              for v in range(3)]
    real_lookup, calls = toy_session.cache.lookup, []

    def flaky_lookup(signature):
        calls.append(signature)
        if len(calls) == 1:
            raise FileNotFoundError("entry vanished under us")
        return real_lookup(signature)

    monkeypatch.setattr(toy_session.cache, "lookup", flaky_lookup)
    outcomes = list(toy_session.execute_many(graphs, manifest=True))
    assert [o.status for o in outcomes] == ["failed", "ok", "ok"]
    assert outcomes[0].result.errors[0].kind == "internal_error"
    assert "FileNotFoundError" in outcomes[0].result.errors[0].message
    lines = (toy_session.settings.output_dir / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 3


def test_memory_cache_is_bounded_in_bytes_and_gives_way_to_models():
    import torch

    cache = OutputCache(max_bytes=4000)
    for k in range(10):
        cache.store(f"s{k}", toy_nodes.NumberOut(toy_nodes.Number(torch.zeros(250))))  # 1000 bytes each
    assert cache.bytes == 4000 and len(cache) == 4 and cache.lookup("s9") and not cache.lookup("s5")
    store = ModelStore(ram_budget=5000, shares_ram_with=cache)
    store.get(Weights("w", 500, "cpu"))  # 2000 bytes: the cache shrinks to make room, no model dropped
    assert cache.bytes == 3000 and store._used(False) == 5000 and [op for op, _ in store.log] == ["load"]
    store.release()
    store.get(Weights("big", 1000, "cpu"))  # 4000 bytes: the cache empties, then the small model goes
    assert len(cache) <= 1 and ("drop", ("weights", "w", "cpu")) in store.log


def test_a_change_to_a_node_class_source_changes_its_cache_key(tmp_path, monkeypatch):
    import sys

    from engine import NodeRegistry
    from engine.code_version import code_digest
    from engine.plan import compute_signatures
    from engine.settings import Settings
    from engine.load import load_workflow

    registry = NodeRegistry.from_classes(toy_nodes.TOY_NODES)
    graph = load_workflow(CHAIN, registry=registry)
    order = ["1", "2", "3", "4", "5"]
    before = compute_signatures(graph, registry, order, Settings(output_dir=tmp_path))
    source = sys.modules["tests.toy_nodes"].__file__
    edited = tmp_path / "toy_nodes.py"
    edited.write_text(open(source).read() + "\n# a changed line\n")
    monkeypatch.setattr(sys.modules["tests.toy_nodes"], "__file__", str(edited))
    code_digest.cache_clear()
    try:
        after = compute_signatures(graph, registry, order, Settings(output_dir=tmp_path))
    finally:
        monkeypatch.undo()
        code_digest.cache_clear()
    assert all(before[n] != after[n] for n in order)
    assert compute_signatures(graph, registry, order, Settings(output_dir=tmp_path)) == before


def test_nodes_can_be_built_directly_with_defaults_filled_in():
    from nodes.core.latent import EmptyLatentImage
    from nodes.kolors.sampler import KolorsSampler

    latent = EmptyLatentImage(width=64, height=32, batch_size=2).execute(None).LATENT.samples
    assert tuple(latent.shape) == (2, 4, 4, 8)
    assert EmptyLatentImage().width == 512
    sampler = KolorsSampler(kolors_model=None, kolors_embeds=None, seed=3)
    assert (sampler.steps, sampler.noise_device, sampler.latent) == (25, "device", None)
    with pytest.raises(TypeError, match="no input"):
        EmptyLatentImage(widht=64)
    with pytest.raises(TypeError, match="needs input 'kolors_model'"):
        KolorsSampler()
    assert isinstance(sampler, Node)
