"""Check a graph before anything runs, collecting every problem at once.

Value rules follow ComfyUI's `validate_inputs` (execution.py): INT/FLOAT/STRING are converted with
int()/float()/str(), min/max are enforced, combos must be among their choices. Unlike ComfyUI,
every node is checked (not only those feeding valid outputs), static cycles are reported by name,
links whose source or slot does not exist are errors rather than crashes, widgets missing from an
API prompt take their declared defaults, and inputs the node does not declare are errors (ComfyUI
drops them silently, which would let a misspelt input run with its default).

Hooks on node classes (`check_inputs`, a widget's `check` and `choices`) receive a
`ValidationContext`: the settings, and `warn()` for what is worth saying but does not stop a run.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .errors import NodeError
from .graph import Graph, GraphNode, LinkRef, natural_key
from .node import InputSpec, NodeSpec
from .registry import NodeRegistry
from .settings import Settings, base_name

CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})


@dataclass
class ValidationContext:
    """What validation hooks see of the run to come, for the node being checked."""

    settings: Settings
    node: GraphNode
    warnings: list[NodeError] = field(default_factory=list)

    def warn(self, message: str, input_name: str | None = None, kind: str = "warning") -> None:
        self.warnings.append(NodeError(message, node_id=self.node.id, node_type=self.node.class_type,
                                       title=self.node.title, input=input_name, kind=kind))


@dataclass
class ValidationResult:
    graph: Graph  # with constants coerced to their declared types
    errors: list[NodeError]
    outputs: list[str]  # output nodes whose whole upstream is valid
    invalid_nodes: set[str] = field(default_factory=set)
    warnings: list[NodeError] = field(default_factory=list)

    @property
    def is_ok(self) -> bool:
        return not self.errors


def validate(graph: Graph, registry: NodeRegistry, settings: Settings | None = None) -> ValidationResult:
    settings = settings or Settings()
    checked = graph.copy()
    errors: list[NodeError] = list(graph.problems)
    warnings: list[NodeError] = list(graph.warnings)
    for node_id in sorted(checked.nodes, key=natural_key):
        vctx = ValidationContext(settings, checked.nodes[node_id], warnings)
        errors.extend(_check_node(checked, checked.nodes[node_id], registry, vctx))
    digraph = checked.digraph()
    errors.extend(_cycle_errors(checked, digraph))
    outputs = [n for n in sorted(checked.nodes, key=natural_key)
               if (spec := registry.spec(checked.nodes[n].class_type)) and spec.is_output_node]
    if not outputs and not any(e.kind == "missing_node_type" for e in errors):
        errors.append(NodeError("the workflow has no output node (such as SaveImage or "
                                "PreviewImage), so nothing would run", kind="prompt_no_outputs"))
    invalid = {e.node_id for e in errors if e.node_id is not None}
    valid_outputs = [o for o in outputs
                     if o in digraph and not (nx.ancestors(digraph, o) | {o}) & invalid]
    return ValidationResult(checked, errors, valid_outputs, invalid, warnings)


def _check_node(graph: Graph, node: GraphNode, registry: NodeRegistry,
                vctx: ValidationContext) -> list[NodeError]:
    cls = registry.get(node.class_type)

    def err(message: str, input_name: str | None = None, kind: str = "invalid_input") -> NodeError:
        return NodeError(message, node_id=node.id, node_type=node.class_type, title=node.title,
                         input=input_name, kind=kind)

    if cls is None:
        hint = registry.suggest(node.class_type)
        more = f"; did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""
        return [err(f"unknown node type {node.class_type!r}{more}", kind="missing_node_type")]
    spec = cls.spec
    errors: list[NodeError] = []
    linked_types: dict[str, str] = {}
    for name, value in list(node.inputs.items()):
        input_spec = spec.input(name)
        if input_spec is None:
            # ComfyUI drops undeclared constants silently; with defaults filled in below, a typo
            # ("stpes") would then run with the default, so it is an error here.
            close = difflib.get_close_matches(name, [i.name for i in spec.inputs], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            errors.append(err(f"{spec.class_type} has no input named {name!r}{hint}", name,
                              "unknown_input"))
            continue
        if isinstance(value, LinkRef):
            problem, source_type = _check_link(graph, registry, value, input_spec)
            if problem:
                errors.append(err(problem, name, "bad_linked_input"))
            elif source_type is not None:
                linked_types[name] = source_type
            continue
        try:
            node.inputs[name] = _coerce(value, input_spec, vctx)
        except ValueError as exc:
            errors.append(err(str(exc), name))
    for input_spec in spec.inputs:
        if input_spec.name in node.inputs:
            continue
        if input_spec.is_widget and input_spec.has_default:
            node.inputs[input_spec.name] = input_spec.default
        elif input_spec.is_required:
            what = "a link from a " + input_spec.type_name if not input_spec.is_widget \
                else f"a {input_spec.type_name} value"
            errors.append(err(f"required input is missing (expected {what})", input_spec.name,
                              "required_input_missing"))
    if not errors:
        constants = {k: v for k, v in node.inputs.items() if not isinstance(v, LinkRef)}
        try:
            for input_name, message in cls.check_inputs(constants, linked_types, vctx):
                errors.append(err(message, input_name, "custom_validation_failed"))
        except Exception as exc:  # noqa: BLE001 - a crashing validator is reported, not raised
            errors.append(err(f"validation raised {type(exc).__name__}: {exc}",
                              kind="exception_during_validation"))
    return errors


def _check_link(graph: Graph, registry: NodeRegistry, ref: LinkRef,
                input_spec: InputSpec) -> tuple[str | None, str | None]:
    source = graph.nodes.get(ref.node_id)
    if source is None:
        return f"linked to node {ref.node_id}, which is not in the workflow", None
    source_spec: NodeSpec | None = registry.spec(source.class_type)
    if source_spec is None:
        return None, None  # the unknown source is reported on its own node
    if not 0 <= ref.slot < len(source_spec.outputs):
        return (f"linked to output slot {ref.slot} of node {ref.node_id} ({source.class_type}), "
                f"which has {len(source_spec.outputs)} output(s)"), None
    source_type = source_spec.outputs[ref.slot].type_name
    if not types_match(source_type, input_spec.type_name):
        return (f"expected {input_spec.type_name}, but node {ref.node_id} ({source.class_type}) "
                f"output {ref.slot} gives {source_type}"), None
    return None, source_type


def types_match(received: str, expected: str) -> bool:
    """ComfyUI's non-strict rule: equal, a '*' on either side, or a common member of ','-unions.
    A STRING output may also feed a COMBO (primitive nodes do this)."""
    if received == expected or "*" in (received, expected):
        return True
    got, want = set(received.split(",")), set(expected.split(","))
    if "COMBO" in want and got & {"STRING", "COMBO"}:
        return True
    return bool(got & want)


def _coerce(value: Any, spec: InputSpec, vctx: ValidationContext) -> Any:
    if not spec.is_widget:
        if spec.literal_types and isinstance(value, spec.literal_types) and not isinstance(value, bool):
            return value
        raise ValueError(f"expected a link from a {spec.type_name} output, got the constant {value!r}")
    kind = spec.type_name
    if kind == "INT":
        value = _to_int(value)
    elif kind == "FLOAT":
        value = _to_float(value)
    elif kind == "STRING":
        if isinstance(value, (dict, list)) or value is None:
            raise ValueError(f"expected a string, got {_show(value)}")
        value = str(value)
    elif kind == "BOOLEAN":
        value = _to_bool(value)
    elif kind == "COMBO":
        choices = spec.choices(vctx) if callable(spec.choices) else spec.choices
        if value not in (choices or ()) and (same := _same_file_name(value, choices or ())):
            vctx.warn(f"{value!r} is not in the list; using {same!r}, the file of the same name", spec.name)
            value = same
        if value not in (choices or ()):
            listed = ", ".join(repr(c) for c in list(choices)[:20]) if choices else "none found"
            raise ValueError(f"{value!r} is not among the choices ({listed})")
    if kind in ("INT", "FLOAT"):
        if spec.ge is not None and value < spec.ge:
            raise ValueError(f"{value} < min {spec.ge}")
        if spec.le is not None and value > spec.le:
            raise ValueError(f"{value} > max {spec.le}")
        if spec.multiple_of and value % spec.multiple_of:
            raise ValueError(f"{value} is not a multiple of {spec.multiple_of}")
    if spec.check is not None and (problem := spec.check(value, vctx)):
        raise ValueError(problem)
    return value


def _same_file_name(value: Any, choices: Any) -> str | None:
    """The one choice with the same base name as a path saved on another machine
    (`D:\\models\\vae\\sdxl.vae.safetensors` → `sdxl.vae.safetensors`)."""
    if not isinstance(value, str) or ("/" not in value and "\\" not in value):
        return None
    name = base_name(value)
    found = [c for c in choices if isinstance(c, str) and base_name(c) == name]
    return found[0] if len(found) == 1 else None


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {_show(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    hint = " (a control_after_generate value in a widget slot: the widget list looks shifted)" \
        if value in CONTROL_VALUES else ""
    raise ValueError(f"expected an integer, got {_show(value)}{hint}")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {_show(value)}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {_show(value)}") from None


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"expected true or false, got {_show(value)}")


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:120]


def _cycle_errors(graph: Graph, digraph: nx.DiGraph) -> list[NodeError]:
    errors = []
    for component in nx.strongly_connected_components(digraph):
        if len(component) == 1 and not digraph.has_edge(*(2 * tuple(component))):
            continue
        start = min(component, key=natural_key)
        edges = nx.find_cycle(digraph.subgraph(component), source=start)
        path = [edges[0][0]] + [v for _, v in edges]
        names = " -> ".join(f"{n} ({graph.nodes[n].class_type})" for n in path)
        node = graph.nodes[start]
        errors.append(NodeError(f"dependency cycle: {names}", node_id=start,
                                node_type=node.class_type, title=node.title, kind="dependency_cycle"))
    return errors
