"""Run a plan: resolve links, call each node's `execute`, cache and time the results."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .context import NodeContext, RunInfo
from .errors import NodeExecutionError, node_errors
from .graph import Graph, LinkRef
from .model_store import ModelStore
from .node import NodeOutput
from .plan import ExecutionPlan
from .registry import NodeRegistry


@dataclass
class NodeRecord:
    node_id: str
    type: str
    title: str | None
    status: str  # executed | cached | skipped
    seconds: float = 0.0


def run_plan(plan: ExecutionPlan, graph: Graph, registry: NodeRegistry, cache: Any,
             models: ModelStore, run: RunInfo, outputs: dict[str, NodeOutput],
             records: dict[str, NodeRecord]) -> None:
    """Fill `outputs` and `records` node by node; on failure they keep what finished."""
    for node_id in plan.order:
        node = graph.nodes[node_id]
        signature = plan.signatures[node_id]
        if node_id in plan.cached:
            outputs[node_id] = cache.get(signature)
            records[node_id] = NodeRecord(node_id, node.class_type, node.title, "cached")
            run.events("cached", {"node_id": node_id})
            continue
        cls = registry.get(node.class_type)
        instance = cls.__new__(cls)
        values = instance.__dict__
        for spec in cls.spec.inputs:
            value = node.inputs.get(spec.name, spec.default)
            if isinstance(value, LinkRef):
                upstream = outputs[value.node_id]
                source_cls = registry.get(graph.nodes[value.node_id].class_type)
                value = getattr(upstream, source_cls.spec.output_fields[value.slot])
            values[spec.name] = value
        ctx = NodeContext(run, models, node_id, node.class_type, node.title)
        ctx.check_cancelled()
        run.events("node_start", {"node_id": node_id, "type": node.class_type})
        started = time.perf_counter()
        with node_errors(node_id, node.class_type, node.title):
            result = instance.execute(ctx)
            if not isinstance(result, NodeOutput):
                raise TypeError(f"execute() returned {type(result).__name__}, not a NodeOutput")
        seconds = time.perf_counter() - started
        cache.put(signature, result)
        outputs[node_id] = result
        records[node_id] = NodeRecord(node_id, node.class_type, node.title, "executed", seconds)
        run.events("node_end", {"node_id": node_id, "seconds": seconds})


__all__ = ["NodeRecord", "run_plan", "NodeExecutionError"]
