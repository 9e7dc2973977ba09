"""ComfyUI execution checklist, caching items 1-5 (reference §5), plus cache-aware pruning."""
from pathlib import Path

from engine import Session

from . import toy_nodes as t
from .toy_nodes import api

CHAIN = api(("1", "Constant", {"value": 2}), ("2", "Constant", {"value": 3}),
            ("3", "Add", {"a": ["1", 0], "b": ["2", 0]}),
            ("4", "Scale", {"x": ["3", 0], "factor": 10, "seed": 0, "mode": "mul"}),
            ("5", "Record", {"x": ["4", 0], "name": "r"}))


def test_second_identical_run_executes_nothing(toy_session):
    first = toy_session.execute(CHAIN)
    assert first.executed == ["1", "2", "3", "4", "5"]
    second = toy_session.execute(CHAIN)
    assert second.executed == []
    assert set(second.cached) == {"5"}  # a cached output node does not pull its ancestors in
    assert second.nodes["1"].status == "skipped"


def test_disabled_cache_reruns_everything(toy_session):
    session = Session(toy_session.registry, toy_session.settings, cache=False)
    session.execute(CHAIN)
    assert session.execute(CHAIN).executed == ["1", "2", "3", "4", "5"]


def test_changing_one_constant_reruns_only_that_node_and_its_descendants(toy_session):
    toy_session.execute(CHAIN)
    changed = {**CHAIN, "2": {"class_type": "Constant", "inputs": {"value": 4}}}
    result = toy_session.execute(changed)
    assert result.executed == ["2", "3", "4", "5"]
    assert result.cached == ["1"]
    assert t.Record.RESULTS[-1] == (2 + 4) * 10 + 0.5


def test_cache_reuses_upstream_when_only_a_downstream_widget_changes(toy_session):
    toy_session.execute(CHAIN)
    changed = {**CHAIN, "4": {"class_type": "Scale",
                              "inputs": {"x": ["3", 0], "factor": 100, "seed": 0, "mode": "mul"}}}
    result = toy_session.execute(changed)
    assert result.executed == ["4", "5"] and result.cached == ["3"]
    assert result.nodes["1"].status == "skipped"


def test_fingerprint_constant_caches_and_non_idempotent_node_always_reruns(toy_session):
    graph = api(("1", "Volatile", {"value": 1.0}), ("2", "Constant", {"value": 5}),
                ("3", "Fingerprinted", {"x": ["2", 0], "tag": "b"}),
                ("4", "Record", {"x": ["3", 0], "name": "f"}),
                ("5", "Record", {"x": ["1", 0], "name": "v"}))
    toy_session.execute(graph)
    again = toy_session.execute(graph)
    assert again.nodes["3"].status in ("cached", "skipped") and "3" not in again.executed
    # The volatile node and everything downstream of it re-run every time.
    assert again.executed == ["1", "5"]
    assert toy_session.execute(graph).executed == ["1", "5"]


def test_fingerprint_hook_sees_only_constants(toy_session):
    graph = api(("2", "Constant", {"value": 5}), ("3", "Fingerprinted", {"x": ["2", 0], "tag": "z"}),
                ("4", "Record", {"x": ["3", 0]}))
    toy_session.execute(graph)
    assert t.Fingerprinted.SEEN[-1] == {"tag": "z"}


def test_cache_key_ignores_node_ids(toy_session):
    toy_session.execute(CHAIN)
    renumbered = api(("a", "Constant", {"value": 2}), ("b", "Constant", {"value": 3}),
                     ("90", "Add", {"a": ["a", 0], "b": ["b", 0]}),
                     ("x:1", "Scale", {"x": ["90", 0], "factor": 10, "seed": 0, "mode": "mul"}),
                     ("y", "Record", {"x": ["x:1", 0], "name": "r"}))
    assert toy_session.execute(renumbered).executed == []


def test_identical_subgraphs_in_one_workflow_share_one_execution(toy_session):
    graph = api(("1", "Constant", {"value": 2}), ("2", "Constant", {"value": 2}),
                ("3", "Record", {"x": ["1", 0], "name": "a"}), ("4", "Record", {"x": ["2", 0], "name": "b"}))
    result = toy_session.execute(graph)
    assert t.CALLS.count("Constant") == 2  # same signature, but both are needed in one plan
    assert toy_session.execute(graph).executed == []
    assert result.status == "ok"


def test_output_node_rewrites_its_files_when_they_are_gone(toy_session):
    first = toy_session.execute(CHAIN)
    Path(first.files[0]).unlink()
    second = toy_session.execute(CHAIN)
    assert second.executed == ["5"] and second.cached == ["4"]
    assert Path(second.files[0]).read_text() == "50.5"


def test_runtime_error_names_the_node_and_keeps_earlier_outputs(toy_session):
    import pytest

    from engine import NodeExecutionError

    graph = api(("1", "Constant", {"value": 2}), ("2", "Fail", {"x": ["1", 0]}),
                ("3", "Record", {"x": ["2", 0]}))
    with pytest.raises(NodeExecutionError, match=r"node 2 'T2' \(Fail\).*boom") as info:
        toy_session.execute(graph)
    assert info.value.result.nodes["1"].status == "executed"
    assert "1" in info.value.result.outputs
    fixed = {**graph, "2": {"class_type": "Scale", "inputs": {"x": ["1", 0]}}}
    assert toy_session.execute(fixed, raise_on_error=False).cached == ["1"]
