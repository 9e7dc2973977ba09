"""Validation: ComfyUI checklist items 15-19 and 21 (reference §5), and the error contract."""
import pytest

from engine import ValidationFailed

from . import toy_nodes as t
from .toy_nodes import api


def errors_of(session, graph, **kw):
    with pytest.raises(ValidationFailed) as info:
        session.execute(graph, **kw)
    return info.value.errors


def test_literal_float_accepted_on_union_input_but_int_and_str_rejected(toy_session):
    ok = api(("1", "FloatOrNumber", {"x": 1.5}), ("2", "Record", {"x": ["1", 0]}))
    assert toy_session.execute(ok).status == "ok"
    for bad in (1, "1.5"):
        errs = errors_of(toy_session, api(("1", "FloatOrNumber", {"x": bad}), ("2", "Record", {"x": ["1", 0]})))
        assert [(e.node_id, e.input) for e in errs] == [("1", "x")]


def test_link_type_is_checked_and_validator_sees_linked_types(toy_session):
    good = api(("1", "Constant", {}), ("2", "FloatOrNumber", {"x": ["1", 0]}), ("3", "Record", {"x": ["2", 0]}))
    assert toy_session.execute(good).status == "ok"
    bad = api(("1", "Constant", {}), ("2", "Record", {"x": ["1", 0]}), ("3", "Add", {"a": ["2", 0], "b": ["1", 0]}),
              ("4", "Record", {"x": ["3", 0]}))
    errs = errors_of(toy_session, bad)
    assert any(e.node_id == "3" and e.input == "a" and "output 0" in e.message for e in errs) or \
        any("slot 0" in e.message for e in errs)


def test_missing_required_input_is_reported(toy_session):
    errs = errors_of(toy_session, api(("1", "Constant", {}), ("2", "Add", {"a": ["1", 0]}), ("3", "Record", {"x": ["2", 0]})))
    assert [(e.node_id, e.input, e.kind) for e in errs] == [("2", "b", "required_input_missing")]


def test_static_cycle_names_the_nodes_in_it(toy_session):
    graph = api(("1", "Add", {"a": ["2", 0], "b": ["2", 0]}), ("2", "Scale", {"x": ["1", 0]}),
                ("3", "Record", {"x": ["2", 0]}))
    errs = errors_of(toy_session, graph)
    cycle = [e for e in errs if e.kind == "dependency_cycle"]
    assert len(cycle) == 1 and "1 (Add) -> 2 (Scale) -> 1 (Add)" in cycle[0].message


def test_deep_chain_of_2000_nodes_validates_without_recursion(toy_session):
    nodes = [("0", "Constant", {"value": 0})]
    nodes += [(str(i), "Scale", {"x": [str(i - 1), 0], "factor": 1, "bias": 0}) for i in range(1, 2000)]
    nodes.append(("out", "Record", {"x": ["1999", 0]}))
    assert toy_session.execute(api(*nodes)).status == "ok"


def test_crashing_custom_validator_is_reported_on_its_node(toy_session, monkeypatch):
    def explode(cls, constants, linked, vctx):
        raise KeyError("oops")
    monkeypatch.setattr(t.FloatOrNumber, "check_inputs", classmethod(explode))
    errs = errors_of(toy_session, api(("1", "FloatOrNumber", {"x": 1.0}), ("2", "Record", {"x": ["1", 0]})))
    assert [(e.node_id, e.kind) for e in errs] == [("1", "exception_during_validation")]


def test_missing_node_fails_one_output_and_partial_mode_runs_the_other(toy_session):
    graph = api(("1", "Constant", {"value": 7}), ("2", "Record", {"x": ["1", 0], "name": "good"}),
                ("3", "Record", {"x": ["9", 0], "name": "bad"}))
    errs = errors_of(toy_session, graph)
    assert [(e.node_id, e.input) for e in errs] == [("3", "x")]
    result = toy_session.execute(graph, allow_partial=True)
    assert result.status == "invalid" and result.executed == ["1", "2"] and t.Record.RESULTS == [7]
    graph["9"] = {"class_type": "Constant", "inputs": {"value": 1}}  # putting the node back works
    assert toy_session.execute(graph).status == "ok"


def test_unknown_node_type_suggests_the_closest_name(toy_session):
    errs = errors_of(toy_session, api(("1", "Constnt", {}), ("2", "Record", {"x": ["1", 0]})))
    assert errs[0].kind == "missing_node_type" and errs[0].node_type == "Constnt"
    assert "did you mean 'Constant'" in errs[0].message and len(errs) == 1


def test_omitted_optional_input_gets_its_default_and_given_value_wins(toy_session):
    base = {"x": ["1", 0], "factor": 1, "seed": 0, "mode": "mul"}
    toy_session.execute(api(("1", "Constant", {"value": 1}), ("2", "Scale", base), ("3", "Record", {"x": ["2", 0]})))
    toy_session.execute(api(("1", "Constant", {"value": 1}), ("2", "Scale", {**base, "bias": 2}),
                            ("3", "Record", {"x": ["2", 0]})))
    toy_session.execute(api(("1", "Constant", {"value": 1}), ("5", "Constant", {"value": 10}),
                            ("2", "Scale", {**base, "offset": ["5", 0]}), ("3", "Record", {"x": ["2", 0]})))
    assert t.Record.RESULTS == [1.5, 3.0, 11.5]


def test_all_errors_are_reported_at_once_with_node_title_and_input(toy_session):
    graph = api(("1", "Constant", {"value": 5000}), ("2", "Scale", {"x": ["1", 0], "mode": "pow", "seed": -1}),
                ("3", "Record", {"x": ["2", 0]}))
    errs = errors_of(toy_session, graph)
    got = {(e.node_id, e.title, e.input) for e in errs}
    assert got == {("1", "T1", "value"), ("2", "T2", "mode"), ("2", "T2", "seed")}
    assert any("5000" in e.message and "max 1000" in e.message for e in errs)
    assert any("'pow' is not among the choices ('mul', 'div')" in e.message for e in errs)


def test_no_output_node_is_an_error(toy_session):
    errs = errors_of(toy_session, api(("1", "Constant", {})))
    assert [e.kind for e in errs] == ["prompt_no_outputs"]


def test_strings_are_coerced_like_comfyui(toy_session):
    graph = api(("1", "Constant", {"value": "2.5"}), ("2", "Scale", {"x": ["1", 0], "seed": "7", "bias": 0}),
                ("3", "Record", {"x": ["2", 0]}))
    assert toy_session.execute(graph).status == "ok" and t.Record.RESULTS == [5.0]


def test_int_node_ids_in_api_links_are_accepted(toy_session):
    graph = {"1": {"class_type": "Constant", "inputs": {"value": 1}},
             "2": {"class_type": "Record", "inputs": {"x": [1, 0]}}}
    assert toy_session.execute(graph).status == "ok"


def test_link_to_missing_output_slot_is_reported(toy_session):
    errs = errors_of(toy_session, api(("1", "Constant", {}), ("2", "Record", {"x": ["1", 3]})))
    assert "output slot 3" in errs[0].message and errs[0].input == "x"


def test_output_path_cannot_leave_the_output_folder(toy_session):
    from engine import NodeExecutionError

    with pytest.raises(NodeExecutionError, match="leaves"):
        toy_session.execute(api(("1", "Constant", {}), ("2", "Record", {"x": ["1", 0], "name": "../escape"})))
    assert not (toy_session.settings.output_dir.parent / "escape.txt").exists()
