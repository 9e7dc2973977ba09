"""UI workflow → graph conversion (reference §1.4), on toy nodes and on real saved files."""
import copy
import json
from pathlib import Path

import pytest

from engine import LinkRef, load_workflow
from engine.validate import validate

from . import toy_nodes as t

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def ui_node(nid, type_, widgets=None, inputs=(), outputs=1, mode=0, title=None):
    node = {"id": nid, "type": type_, "mode": mode, "pos": [0, 0], "size": [10, 10], "flags": {},
            "inputs": [{"name": n, "type": "NUMBER", "link": link, **({"widget": {"name": n}} if w else {})}
                       for n, link, *w in inputs],
            "outputs": [{"name": "number", "type": "NUMBER", "links": []} for _ in range(outputs)],
            "properties": {"Node name for S&R": type_}}
    if widgets is not None:
        node["widgets_values"] = widgets
    if title:
        node["title"] = title
    return node


def workflow(nodes, links, **extra):
    return {"last_node_id": 99, "last_link_id": 99, "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}}, "version": 0.4, **extra}


def test_widgets_map_in_order_skipping_the_seed_control_slot_and_defaulting_the_rest():
    wf = workflow([ui_node(1, "Constant", [4]),
                   ui_node(2, "Scale", [3.0, 77, "randomize", "div"], inputs=[("x", 1)], title="S"),
                   ui_node(3, "Record", [], inputs=[("x", 2)], outputs=0)],
                  [[1, 1, 0, 2, 0, "NUMBER"], [2, 2, 0, 3, 0, "NUMBER"]])
    graph = load_workflow(wf, registry=t.registry())
    assert graph.nodes["2"].inputs == {"factor": 3.0, "seed": 77, "mode": "div", "bias": 0.5,
                                       "x": LinkRef("1", 0)}
    assert graph.nodes["2"].title == "S"


def test_reroute_primitive_note_and_muted_nodes():
    wf = workflow([ui_node(1, "Constant", [4]),
                   {"id": 5, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}],
                    "outputs": [{"name": "", "type": "NUMBER", "links": [2]}]},
                   {"id": 6, "type": "PrimitiveNode", "mode": 0, "inputs": [],
                    "outputs": [{"name": "INT", "type": "INT", "links": [3], "widget": {"name": "seed"}}],
                    "widgets_values": [1234, "fixed"]},
                   {"id": 7, "type": "Note", "mode": 0, "widgets_values": ["hello"]},
                   ui_node(8, "Constant", [9], mode=2),
                   ui_node(2, "Scale", [2.0, 0, "fixed", "mul"], inputs=[("x", 2), ("seed", 3, True), ("offset", 4)]),
                   ui_node(3, "Record", [], inputs=[("x", 5)], outputs=0)],
                  [[1, 1, 0, 5, 0, "NUMBER"], [2, 5, 0, 2, 0, "NUMBER"], [3, 6, 0, 2, 1, "INT"],
                   [4, 8, 0, 2, 2, "NUMBER"], [5, 2, 0, 3, 0, "NUMBER"]])
    graph = load_workflow(wf, registry=t.registry())
    assert sorted(graph.nodes) == ["1", "2", "3"]
    assert graph.nodes["2"].inputs["x"] == LinkRef("1", 0)
    assert graph.nodes["2"].inputs["seed"] == 1234
    assert "offset" not in graph.nodes["2"].inputs  # its source was muted


def test_bypassed_node_passes_its_matching_input_through():
    wf = workflow([ui_node(1, "Constant", [4]),
                   ui_node(2, "Scale", [2.0, 0, "fixed", "mul"], inputs=[("x", 1)], mode=4),
                   ui_node(3, "Record", [], inputs=[("x", 2)], outputs=0)],
                  [[1, 1, 0, 2, 0, "NUMBER"], [2, 2, 0, 3, 0, "NUMBER"]])
    graph = load_workflow(wf, registry=t.registry())
    assert sorted(graph.nodes) == ["1", "3"] and graph.nodes["3"].inputs["x"] == LinkRef("1", 0)


def test_subgraph_instance_is_flattened_into_colon_ids_with_promoted_widgets():
    definition = {
        "id": "aaaa-bbbb", "name": "double", "version": 1,
        "inputNode": {"id": -10, "bounding": [0, 0, 1, 1]}, "outputNode": {"id": -20, "bounding": [0, 0, 1, 1]},
        "inputs": [{"id": "i0", "name": "x", "type": "NUMBER", "linkIds": [11]},
                   {"id": "i1", "name": "factor", "type": "FLOAT", "linkIds": [12]}],
        "outputs": [{"id": "o0", "name": "number", "type": "NUMBER", "linkIds": [13]}],
        "widgets": [], "nodes": [ui_node(1, "Scale", [9.0, 0, "fixed", "mul"], inputs=[("x", 11), ("factor", 12, True)])],
        "links": [{"id": 11, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "NUMBER"},
                  {"id": 12, "origin_id": -10, "origin_slot": 1, "target_id": 1, "target_slot": 1, "type": "FLOAT"},
                  {"id": 13, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "NUMBER"}]}
    instance = {"id": 7, "type": "aaaa-bbbb", "mode": 0, "inputs": [{"name": "x", "type": "NUMBER", "link": 1}],
                "outputs": [{"name": "number", "type": "NUMBER", "links": [2]}], "widgets_values": [3.0]}
    wf = workflow([ui_node(1, "Constant", [4]), instance, ui_node(3, "Record", [], inputs=[("x", 2)], outputs=0)],
                  [[1, 1, 0, 7, 0, "NUMBER"], [2, 7, 0, 3, 0, "NUMBER"]],
                  definitions={"subgraphs": [definition]})
    graph = load_workflow(wf, registry=t.registry())
    assert sorted(graph.nodes) == ["1", "3", "7:1"]
    assert graph.nodes["7:1"].inputs["x"] == LinkRef("1", 0)
    assert graph.nodes["7:1"].inputs["factor"] == 3.0
    assert graph.nodes["3"].inputs["x"] == LinkRef("7:1", 0)


def test_schema_1_object_links_convert_like_schema_0_4_arrays():
    doc = json.loads((EXAMPLES / "kolors_txt2img.json").read_text())
    v1 = copy.deepcopy(doc)
    v1["version"] = 1
    v1["links"] = [dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), link))
                   for link in doc["links"]]
    a, b = load_workflow(doc, registry=t.registry()), load_workflow(v1, registry=t.registry())
    assert a.to_prompt() == b.to_prompt()


@pytest.mark.parametrize("name", ["kolors_txt2img.json", "kolors_lora.json"])
def test_shared_workflows_parse_and_report_only_their_unknown_types(name):
    graph = load_workflow(EXAMPLES / name, registry=t.registry())
    errors = validate(graph, t.registry()).errors
    expected = {n["type"] for n in json.loads((EXAMPLES / name).read_text())["nodes"] if n["type"] != "Note"}
    assert {e.node_type for e in errors} == expected
    assert {e.kind for e in errors} == {"missing_node_type"}


def test_every_public_template_parses_and_names_what_is_not_implemented():
    templates = pytest.importorskip("comfyui_workflow_templates_json")
    from engine import default_registry

    registry = default_registry()
    folder = Path(templates.__file__).parent / "templates"
    count = 0
    for path in sorted(folder.glob("*.json")):
        doc = json.loads(path.read_text())
        if not (isinstance(doc, dict) and "nodes" in doc):
            continue  # index files
        graph = load_workflow(path, registry=registry)
        errors = validate(graph, registry).errors
        unknown = {e.node_type for e in errors if e.kind == "missing_node_type"}
        assert unknown == {n.class_type for n in graph.nodes.values() if n.class_type not in registry}, path.name
        count += 1
    assert count > 600


def test_dynamic_prompt_widgets_are_resolved_as_the_frontend_resolves_them():
    """CLIPTextEncode's text is `dynamicPrompts`: queuing a UI workflow strips comments, picks
    {a|b} options (seeded from the text here) and unescapes \\{ \\} \\| but not \\( \\)."""
    from engine.dynamic_prompts import process_dynamic_prompt

    assert process_dynamic_prompt("a photo // of a cat") == "a photo "
    assert process_dynamic_prompt("a /* hidden */ b") == "a  b"
    assert process_dynamic_prompt(r"\{x\} \(y\)") == r"{x} \(y\)"
    picked = process_dynamic_prompt("a {red|blue|{green|teal}} cat")
    assert picked in ("a red cat", "a blue cat", "a green cat", "a teal cat")
    assert process_dynamic_prompt("a {red|blue|{green|teal}} cat") == picked  # the same every run
    from engine.convert import ui_to_graph
    from engine.registry import default_registry

    workflow = {"last_node_id": 1, "last_link_id": 0, "links": [], "version": 0.4, "nodes": [
        {"id": 1, "type": "CLIPTextEncode", "inputs": [{"name": "clip", "type": "CLIP", "link": None}],
         "outputs": [], "widgets_values": ["a {red|blue} cat // note"], "mode": 0}]}
    from schemas.ui_workflow import UIWorkflow

    graph = ui_to_graph(UIWorkflow.model_validate(workflow), default_registry())
    assert graph.nodes["1"].inputs["text"] in ("a red cat ", "a blue cat ")
