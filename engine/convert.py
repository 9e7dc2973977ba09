"""UI workflow → canonical graph, offline, from the engine's own node definitions.

Mirrors the frontend's `graphToPrompt` (Comfy-Org/ComfyUI_frontend:src/utils/executionUtil.ts):
- `widgets_values` map onto widget inputs in declaration order; an INT named seed/noise_seed (or
  flagged `control_after_generate`) is followed by a UI-only slot that is skipped;
- missing trailing widgets take their defaults, with a warning naming each (the frontend does the
  same silently);
- node ids must be unique within each graph level: a file where two nodes share one is refused;
- Note/MarkdownNote are dropped, Reroute is followed, PrimitiveNode values are pushed into their
  targets, muted nodes (mode 2) vanish, bypassed nodes (mode 4) pass an input of the right type
  through, and subgraph instances are flattened into colon ids ("12:5").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.api_prompt import ApiPrompt
from schemas.ui_workflow import SubgraphDefinition, UINode, UINodeInput, UIWorkflow

from .dynamic_prompts import process_dynamic_prompt
from .errors import NodeError
from .graph import Graph, GraphNode, LinkRef
from .node import MISSING, WIDGET_TYPES, NodeSpec
from .registry import NodeRegistry

VIRTUAL_TYPES = frozenset({"Note", "MarkdownNote"})
REROUTE, PRIMITIVE = "Reroute", "PrimitiveNode"
MODE_MUTED, MODE_BYPASS = 2, 4
SUBGRAPH_INPUT_NODE, SUBGRAPH_OUTPUT_NODE = -10, -20
MAX_SUBGRAPH_DEPTH = 32


@dataclass(frozen=True)
class _Const:
    value: Any
    control: str | None = None  # a PrimitiveNode's control_after_generate
    ui_slot: tuple | None = None  # (UI node id, widgets_values index) of a root-level primitive


_KEEP_WIDGET = object()  # an unconnected subgraph input: the inner node keeps its own widget value


class _Scope:
    """One graph level: the root workflow, or one subgraph instance's copy of its definition."""

    def __init__(self, nodes: list[UINode], links: list, prefix: str, parent: "_Scope | None" = None,
                 instance: UINode | None = None, definition: SubgraphDefinition | None = None):
        self.nodes: dict[str, UINode] = {}
        self.duplicates: list[tuple[UINode, UINode]] = []
        for node in nodes:
            if str(node.id) in self.nodes:
                self.duplicates.append((self.nodes[str(node.id)], node))
            else:
                self.nodes[str(node.id)] = node
        self.links = {link.id: link for link in links}
        self.prefix, self.parent, self.instance, self.definition = prefix, parent, instance, definition
        self.depth = 0 if parent is None else parent.depth + 1


def ui_to_graph(workflow: UIWorkflow, registry: NodeRegistry) -> Graph:
    return _Converter(workflow, registry).run()


def api_to_graph(prompt: ApiPrompt) -> Graph:
    nodes: dict[str, GraphNode] = {}
    for raw_id, api_node in prompt.root.items():
        node_id = str(raw_id)
        inputs = {name: _api_value(value) for name, value in api_node.inputs.items()}
        title = api_node.meta.title if api_node.meta else None
        nodes[node_id] = GraphNode(node_id, api_node.class_type, inputs, title)
    return Graph(nodes)


def _api_value(value: Any) -> Any:
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) \
            and not isinstance(value[0], bool) and _is_slot(value[1]):
        return LinkRef(str(value[0]), int(value[1]))  # int ids accepted, unlike ComfyUI
    if isinstance(value, dict) and "__value__" in value:
        return value["__value__"]
    return value


def _is_slot(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and float(value).is_integer()


class _Converter:
    def __init__(self, workflow: UIWorkflow, registry: NodeRegistry):
        self.workflow = workflow
        self.registry = registry
        self.subgraphs = workflow.all_subgraphs()
        self.nodes: dict[str, GraphNode] = {}
        self.problems: list[NodeError] = []
        self.warnings: list[NodeError] = []
        self._scopes: dict[str, _Scope] = {}
        self.controls: dict[tuple[str, str], str] = {}
        self.ui_widgets: dict[tuple[str, str], tuple] = {}

    def run(self) -> Graph:
        self._emit_scope(_Scope(self.workflow.nodes, self.workflow.links, ""))
        return Graph(self.nodes, problems=self.problems, warnings=self.warnings, controls=self.controls,
                     ui_widgets=self.ui_widgets)

    # -- emission ---------------------------------------------------------------------------

    def _emit_scope(self, scope: _Scope) -> None:
        for first, second in scope.duplicates:
            # Links name nodes by id: with two nodes on one id, which one a link means is a guess.
            self.problems.append(NodeError(
                f"node id {first.id} is used by two nodes: {_describe(first)} and {_describe(second)}; "
                "links cannot tell them apart", node_id=scope.prefix + str(first.id), node_type=first.type,
                title=first.title, kind="duplicate_node_id"))
        for node in scope.nodes.values():
            if node.mode in (MODE_MUTED, MODE_BYPASS) or node.type in VIRTUAL_TYPES \
                    or node.type in (REROUTE, PRIMITIVE):
                continue
            if node.type in self.subgraphs:
                inner = self._inner_scope(scope, node)
                if inner is not None:
                    self._emit_scope(inner)
                continue
            self._emit_node(scope, node)

    def _emit_node(self, scope: _Scope, node: UINode) -> None:
        node_id = scope.prefix + str(node.id)
        spec = self.registry.spec(node.type)
        inputs: dict[str, Any] = self._widget_inputs(node, spec, node_id, scope) if spec else {}
        for entry in node.inputs:
            if entry.link is None:
                continue
            name = entry.widget.name if entry.widget else entry.name
            resolved = self._resolve_link(scope, entry.link, set())
            if resolved is _KEEP_WIDGET:
                continue
            if resolved is None:
                # The frontend deletes inputs whose source was dropped (muted, virtual, dangling).
                inputs.pop(name, None)
            elif isinstance(resolved, _Const):
                inputs[name] = resolved.value
                self.ui_widgets.pop((node_id, name), None)
                if resolved.control:
                    self.controls[(node_id, name)] = resolved.control
                if resolved.ui_slot and not scope.prefix:
                    self.ui_widgets[(node_id, name)] = resolved.ui_slot
            else:
                inputs[name] = resolved
        self.nodes[node_id] = GraphNode(node_id, node.type, inputs, node.title)

    def _widget_inputs(self, node: UINode, spec: NodeSpec, node_id: str, scope: _Scope) -> dict[str, Any]:
        widgets = [i for i in spec.inputs if i.is_widget]
        values = node.widgets_values
        out: dict[str, Any] = {}
        if isinstance(values, dict):
            for w in widgets:
                if w.name in values:
                    out[w.name] = _unwrap(values[w.name])
                elif w.has_default:
                    out[w.name] = w.default
            self._resolve_dynamic_prompts(node_id, widgets, out)
            return out
        values = values or []
        k = 0
        defaulted = []
        linked = {e.widget.name if e.widget else e.name for e in node.inputs if e.link is not None}
        for w in widgets:
            if k < len(values):
                out[w.name] = _unwrap(values[k])
                if not scope.prefix:
                    self.ui_widgets[(node_id, w.name)] = (node.id, k)
            elif w.has_default:
                out[w.name] = w.default
                if not w.is_extension and w.name not in linked:
                    defaulted.append(f"{w.name}={w.default!r}")
            k += 1
            if w.control_after_generate:
                if k < len(values) and isinstance(values[k], str):
                    self.controls[(node_id, w.name)] = values[k]
                k += 2 if w.type_name == "COMBO" else 1  # combos also get a filter-list slot
        self._resolve_dynamic_prompts(node_id, widgets, out)
        if defaulted:
            self.warnings.append(NodeError(
                f"widgets_values has {len(values)} value(s) for {len(widgets)} widget(s); "
                f"running on defaults for {', '.join(defaulted)}", node_id=node_id, node_type=node.type,
                title=node.title, kind="widgets_defaulted"))
        return out

    def _resolve_dynamic_prompts(self, node_id: str, widgets, values: dict[str, Any]) -> None:
        """What the frontend does to `dynamicPrompts` widgets when it queues a UI workflow. A text
        that changes keeps its template in the workflow a PNG carries, as ComfyUI's does."""
        for w in widgets:
            text = values.get(w.name)
            if w.dynamic_prompts and isinstance(text, str) and (resolved := process_dynamic_prompt(text)) != text:
                values[w.name] = resolved
                self.ui_widgets.pop((node_id, w.name), None)

    # -- link resolution --------------------------------------------------------------------

    def _resolve_link(self, scope: _Scope, link_id: int, seen: set) -> Any:
        link = scope.links.get(link_id)
        if link is None:
            return None
        return self._resolve_output(scope, link.origin_id, link.origin_slot, link.type, seen)

    def _resolve_output(self, scope: _Scope, origin_id: Any, slot: int, link_type: Any,
                        seen: set) -> Any:
        key = (scope.prefix, str(origin_id), slot)
        if key in seen:
            self.problems.append(NodeError(f"link cycle through node {origin_id} while resolving "
                                           "reroutes/bypasses", node_id=scope.prefix + str(origin_id),
                                           kind="dependency_cycle"))
            return None
        seen.add(key)
        if str(origin_id) == str(SUBGRAPH_INPUT_NODE) and scope.instance is not None:
            return self._resolve_subgraph_input(scope, slot, seen)
        origin = scope.nodes.get(str(origin_id))
        if origin is None or origin.mode == MODE_MUTED or origin.type in VIRTUAL_TYPES:
            return None
        if origin.type == PRIMITIVE:
            values = origin.widgets_values
            if not isinstance(values, list) or not values:
                return None
            control = values[1] if len(values) > 1 and isinstance(values[1], str) else None
            return _Const(_unwrap(values[0]), control, (origin.id, 0))
        if origin.type == REROUTE or origin.mode == MODE_BYPASS:
            entry = self._pass_through_input(origin, slot, link_type)
            if entry is None or entry.link is None:
                return None
            return self._resolve_link(scope, entry.link, seen)
        if origin.type in self.subgraphs:
            inner = self._inner_scope(scope, origin)
            if inner is None:
                return None
            for link in inner.links.values():
                if str(link.target_id) == str(SUBGRAPH_OUTPUT_NODE) and link.target_slot == slot:
                    return self._resolve_output(inner, link.origin_id, link.origin_slot, link_type, seen)
            return None
        return LinkRef(scope.prefix + str(origin.id), slot)

    def _resolve_subgraph_input(self, scope: _Scope, slot: int, seen: set) -> Any:
        definition, instance = scope.definition, scope.instance
        if slot >= len(definition.inputs):
            return None
        io = definition.inputs[slot]
        entry = next((e for e in instance.inputs if e.name == io.name), None)
        if entry is not None and entry.link is not None:
            return self._resolve_link(scope.parent, entry.link, seen)
        value = self._promoted_value(definition, instance, slot)
        return _KEEP_WIDGET if value is MISSING else _Const(value)

    @staticmethod
    def _promoted_value(definition: SubgraphDefinition, instance: UINode, slot: int) -> Any:
        """The value an unconnected widget-typed subgraph input holds on the instance node."""
        values = instance.widgets_values
        name = definition.inputs[slot].name
        if isinstance(values, dict):
            return values.get(name, MISSING)
        widget_slots = [i for i, io in enumerate(definition.inputs) if str(io.type) in WIDGET_TYPES]
        if slot in widget_slots and values and widget_slots.index(slot) < len(values):
            return _unwrap(values[widget_slots.index(slot)])
        return MISSING

    @staticmethod
    def _pass_through_input(node: UINode, slot: int, link_type: Any) -> UINodeInput | None:
        """The input a Reroute or bypassed node forwards to its output `slot`."""
        if not node.inputs:
            return None
        if node.type == REROUTE:
            return node.inputs[0]
        out_type = node.outputs[slot].type if slot < len(node.outputs) else link_type
        if _is_any(out_type) or _is_any(link_type):
            return node.inputs[slot] if slot < len(node.inputs) else node.inputs[0]
        if slot < len(node.inputs) and _same_type(node.inputs[slot].type, out_type):
            return node.inputs[slot]
        return next((e for e in node.inputs if _same_type(e.type, link_type)), None)

    def _inner_scope(self, scope: _Scope, instance: UINode) -> _Scope | None:
        prefix = f"{scope.prefix}{instance.id}:"
        if prefix in self._scopes:
            return self._scopes[prefix]
        if scope.depth >= MAX_SUBGRAPH_DEPTH:
            self.problems.append(NodeError(f"subgraphs nested deeper than {MAX_SUBGRAPH_DEPTH} levels",
                                           node_id=prefix[:-1], node_type=instance.type,
                                           kind="invalid_prompt"))
            return None
        definition = self.subgraphs[instance.type]
        inner = _Scope(definition.nodes, definition.links, prefix, scope, instance, definition)
        self._scopes[prefix] = inner
        return inner


def _describe(node: UINode) -> str:
    return f"'{node.title}' ({node.type})" if node.title and node.title != node.type else f"({node.type})"


def _unwrap(value: Any) -> Any:
    return value["__value__"] if isinstance(value, dict) and "__value__" in value else value


def _is_any(type_name: Any) -> bool:
    return type_name in (None, "", "*")


def _same_type(a: Any, b: Any) -> bool:
    return str(a) == str(b) or _is_any(a) or _is_any(b)
