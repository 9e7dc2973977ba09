"""The one canonical graph every input format becomes: API-prompt shaped, with typed links."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .errors import NodeError


@dataclass(frozen=True)
class LinkRef:
    """Output `slot` of node `node_id`."""

    node_id: str
    slot: int


@dataclass
class GraphNode:
    id: str
    class_type: str
    inputs: dict[str, Any]  # constant values or LinkRef
    title: str | None = None

    def links(self):
        return ((name, v) for name, v in self.inputs.items() if isinstance(v, LinkRef))


@dataclass
class Graph:
    nodes: dict[str, GraphNode]
    source: str | None = None  # file the graph came from, for messages
    ui_workflow: dict | None = None  # the UI JSON, re-embedded in PNGs so ComfyUI can load them
    # Problems found while converting (e.g. widgets of an unknown node type); validation adds them.
    problems: list[NodeError] = field(default_factory=list)
    warnings: list[NodeError] = field(default_factory=list)  # e.g. widgets that took their defaults
    # From a UI workflow: each (node id, input)'s control_after_generate mode ("increment"...),
    # and where its value sits in the UI JSON: (UI node id, widgets_values index).
    controls: dict[tuple[str, str], str] = field(default_factory=dict)
    ui_widgets: dict[tuple[str, str], tuple[int | str, int]] = field(default_factory=dict)

    def set_input(self, node_id: str, name: str, value: Any) -> None:
        """Change an input, and the UI workflow's widget with it, so a PNG's `workflow` chunk
        shows what ran."""
        self.nodes[node_id].inputs[name] = value
        slot = self.ui_widgets.get((node_id, name))
        if slot is None or self.ui_workflow is None:
            return
        for ui_node in self.ui_workflow.get("nodes", ()):
            values = ui_node.get("widgets_values")
            if str(ui_node.get("id")) == str(slot[0]) and isinstance(values, list) and slot[1] < len(values):
                values[slot[1]] = value

    def to_prompt(self) -> dict:
        """The API prompt ComfyUI would execute for this graph."""
        out = {}
        for node_id, node in self.nodes.items():
            inputs = {}
            for name, value in node.inputs.items():
                if isinstance(value, LinkRef):
                    inputs[name] = [value.node_id, value.slot]
                elif isinstance(value, list):
                    inputs[name] = {"__value__": value}  # a list literal would read as a link
                else:
                    inputs[name] = value
            entry: dict[str, Any] = {"inputs": inputs, "class_type": node.class_type}
            if node.title is not None:
                entry["_meta"] = {"title": node.title}
            out[node_id] = entry
        return out

    def copy(self) -> "Graph":
        return Graph({k: GraphNode(n.id, n.class_type, dict(n.inputs), n.title)
                      for k, n in self.nodes.items()},
                     self.source, copy.deepcopy(self.ui_workflow), list(self.problems),
                     list(self.warnings), dict(self.controls), dict(self.ui_widgets))

    def digraph(self) -> nx.DiGraph:
        """Edges run from producer to consumer; links to absent nodes are left out."""
        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        g.add_edges_from((ref.node_id, node_id) for node_id, node in self.nodes.items()
                         for _, ref in node.links() if ref.node_id in self.nodes)
        return g

    def find(self, key: str) -> list[GraphNode]:
        """Nodes whose id, or else whose title, equals `key`."""
        if key in self.nodes:
            return [self.nodes[key]]
        return [n for n in self.nodes.values() if n.title == key]


def natural_key(node_id: str) -> str:
    """Sort key that orders '2' before '10' and '3:1' after '3', as a plain string."""
    parts = []
    for part in node_id.replace(".", ":").split(":"):
        parts.append(f"{int(part):012d}" if part.isdigit() else "~" + part)
    return ":".join(parts)
