"""The set of node types a run may use, built from explicit lists (no import-time globals)."""
from __future__ import annotations

import difflib
import functools
from importlib.metadata import entry_points
from typing import Any, Iterable, Iterator

from .node import InputSpec, Node, NodeSpec

ENTRY_POINT_GROUP = "run_graph.nodes"


class NodeRegistry:
    def __init__(self, classes: Iterable[type[Node]] = ()):
        self._classes: dict[str, type[Node]] = {}
        for cls in classes:
            self.add(cls)

    @classmethod
    def from_classes(cls, classes: Iterable[type[Node]]) -> "NodeRegistry":
        return cls(classes)

    @classmethod
    def from_entry_points(cls) -> "NodeRegistry":
        """Every node pack installed under the `run_graph.nodes` entry-point group."""
        registry = cls()
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            for node_cls in ep.load():
                registry.add(node_cls)
        return registry

    def add(self, cls: type[Node]) -> None:
        existing = self._classes.get(cls.class_type)
        if existing is not None and existing is not cls:
            raise ValueError(f"two node classes claim class_type {cls.class_type!r}: "
                             f"{existing.__module__}.{existing.__name__} and {cls.__module__}.{cls.__name__}")
        self._classes[cls.class_type] = cls

    def get(self, class_type: str) -> type[Node] | None:
        return self._classes.get(class_type)

    def spec(self, class_type: str) -> NodeSpec | None:
        cls = self._classes.get(class_type)
        return cls.spec if cls else None

    def __contains__(self, class_type: str) -> bool:
        return class_type in self._classes

    def __iter__(self):
        return iter(sorted(self._classes))

    def __len__(self) -> int:
        return len(self._classes)

    def seed_widgets(self, nodes: Iterable[Any]) -> Iterator[tuple[Any, InputSpec, Any]]:
        """(node, input spec, value) of each seed-like widget (control_after_generate) that is
        set on `nodes` (GraphNodes), in the nodes' order."""
        for node in nodes:
            spec = self.spec(node.class_type)
            for widget in spec.inputs if spec else ():
                if widget.control_after_generate and widget.name in node.inputs:
                    yield node, widget, node.inputs[widget.name]

    def suggest(self, class_type: str) -> list[str]:
        return difflib.get_close_matches(class_type, list(self._classes), n=3, cutoff=0.6)

    def object_info(self) -> dict:
        return {name: self._classes[name].spec.to_info() for name in self}


@functools.lru_cache(maxsize=1)
def default_registry() -> NodeRegistry:
    """Every installed node pack (entry points), built on first use."""
    return NodeRegistry.from_entry_points()
