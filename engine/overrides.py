"""`--set 14.seed=42` / `--set "Kolors Sampler.steps=30"`: change inputs before validation."""
from __future__ import annotations

from typing import Any, Iterable

import orjson

from .errors import NodeError
from .graph import Graph


def parse_assignment(text: str) -> tuple[str, str, Any]:
    """'node.input=value' → (node id or title, input, value). Values are JSON when they parse
    as JSON (42, 1.5, true, "x", [1,2]), plain strings otherwise. Titles may contain dots:
    the input name is what follows the last dot before '='."""
    target, sep, raw = text.partition("=")
    node_key, dot, input_name = target.rpartition(".")
    if not sep or not dot or not node_key or not input_name:
        raise ValueError(f"cannot read override {text!r}: expected NODE.INPUT=VALUE, "
                         "where NODE is a node id or title")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = raw
    return node_key.strip(), input_name.strip(), value


def apply_overrides(graph: Graph, assignments: Iterable[tuple[str, str, Any]]) -> list[NodeError]:
    """Set the inputs in place; return a problem for each node key that matches no node or
    several. Value checks are left to validation, which reports them with the node."""
    problems = []
    for node_key, input_name, value in assignments:
        matches = graph.find(node_key)
        if len(matches) != 1:
            what = "no node has that id or title" if not matches else \
                f"{len(matches)} nodes have that title ({', '.join(n.id for n in matches)}); use an id"
            problems.append(NodeError(f"override {node_key}.{input_name}: {what}", input=input_name,
                                      kind="bad_override"))
            continue
        graph.set_input(matches[0].id, input_name, value)
    return problems
