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
    status: str  # executed | cached (memory) | disk | skipped
    seconds: float = 0.0
    bytes: int = 0  # the output's size in the disk cache


def run_plan(plan: ExecutionPlan, graph: Graph, registry: NodeRegistry, cache: Any,
             models: ModelStore, run: RunInfo, outputs: dict[str, NodeOutput],
             records: dict[str, NodeRecord]) -> None:
    """Fill `outputs` and `records` node by node; on failure they keep what finished."""
    for node_id in plan.order:
        node = graph.nodes[node_id]
        signature = plan.signatures[node_id]
        if (hit := plan.cached.get(node_id)) is not None:
            outputs[node_id] = hit.output
            if hit.records:  # what the node recorded when it ran (seeds, choices) holds again
                run.metadata[node_id] = hit.records
            records[node_id] = NodeRecord(node_id, node.class_type, node.title, hit.source, bytes=hit.bytes)
            run.events("cached", {"node_id": node_id, "source": hit.source})
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
        try:
            with node_errors(node_id, node.class_type, node.title):
                result = instance.execute(ctx)
                if not isinstance(result, NodeOutput):
                    raise TypeError(f"execute() returned {type(result).__name__}, not a NodeOutput")
        finally:
            models.release()  # the node is done with its models: they may make room for others
        seconds = time.perf_counter() - started
        written = cache.store(signature, result, run.metadata.get(node_id))
        outputs[node_id] = result
        records[node_id] = NodeRecord(node_id, node.class_type, node.title, "executed", seconds, written)
        run.events("node_end", {"node_id": node_id, "seconds": seconds})


__all__ = ["NodeRecord", "run_plan", "NodeExecutionError"]
