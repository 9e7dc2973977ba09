"""Run a plan: resolve links, call each node's `execute`, cache and time the results."""
from __future__ import annotations

import dataclasses
import time
from typing import Any

from .context import NodeContext, RunInfo
from .errors import ModelLoadError, NodeExecutionError, node_errors
from .file_hashes import stamp_file
from .graph import Graph, LinkRef
from .lists import run_over_lists
from .model_store import ModelStore
from .node import NodeOutput, SavedFiles
from .plan import ExecutionPlan
from .registry import NodeRegistry
from .result import NodeRecord


def run_plan(plan: ExecutionPlan, graph: Graph, registry: NodeRegistry, cache: Any,
             models: ModelStore, run: RunInfo, outputs: dict[str, NodeOutput],
             records: dict[str, NodeRecord]) -> None:
    """Fill `outputs` and `records` node by node; on failure they keep what finished.

    What nodes record (seeds, wildcard choices, the noise device) travels with cache entries:
    each entry holds its node's records and its ancestors', by signature, so a hit that skips
    the ancestors still gives the run (and the files it writes) their records."""
    node_of = {signature: node_id for node_id, signature in plan.signatures.items()}
    upstream_records: dict[str, dict] = {}  # node id -> {signature: records} of it and its ancestors
    chosen_by: dict = {}  # model key -> the first node that output a handle to it (its loader)
    for node_id in plan.order:
        node = graph.nodes[node_id]
        signature = plan.signatures[node_id]
        if (hit := plan.cached.get(node_id)) is not None:
            outputs[node_id] = hit.output
            _note_handles(chosen_by, node_id, hit.output)
            upstream_records[node_id] = hit.records or {}
            for recorded_by, recorded in upstream_records[node_id].items():
                if recorded_by in node_of:
                    run.metadata[node_of[recorded_by]] = recorded
            records[node_id] = NodeRecord(node_id, node.class_type, node.title, hit.source, bytes=hit.bytes)
            run.events("cached", {"node_id": node_id, "source": hit.source})
            continue
        cls = registry.get(node.class_type)
        values = {}
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
                result = run_over_lists(cls, values, lambda given: _executed(cls, given, ctx, run),
                                        ctx.check_cancelled)
        except NodeExecutionError as exc:
            raise _blamed_on_loader(exc, chosen_by, graph) from exc.__cause__
        finally:
            models.release()  # the node is done with its models: they may make room for others
        _note_handles(chosen_by, node_id, result)
        seconds = time.perf_counter() - started
        collected: dict = {}
        for _, ref in node.links():
            collected.update(upstream_records[ref.node_id])
        if node_id in run.metadata:
            collected[signature] = run.metadata[node_id]
        upstream_records[node_id] = collected
        written = cache.store(signature, result, collected or None)
        outputs[node_id] = result
        records[node_id] = NodeRecord(node_id, node.class_type, node.title, "executed", seconds, written)
        run.events("node_end", {"node_id": node_id, "seconds": seconds})


def _executed(cls, values: dict, ctx: NodeContext, run: RunInfo) -> NodeOutput:
    result = cls(**values).execute(ctx)
    if not isinstance(result, NodeOutput):
        raise TypeError(f"execute() returned {type(result).__name__}, not a NodeOutput")
    if isinstance(result, SavedFiles):
        result = _with_stamps(result, run.stamps)
    return result


def _note_handles(chosen_by: dict, node_id: str, output: NodeOutput) -> None:
    for field in dataclasses.fields(output):
        key = getattr(getattr(output, field.name), "cache_key", None)
        if key is not None:
            chosen_by.setdefault(key, node_id)


def _blamed_on_loader(exc: NodeExecutionError, chosen_by: dict, graph: Graph) -> NodeExecutionError:
    """A model that fails to load is the fault of the node that chose its file (as in ComfyUI,
    whose loaders load at once), not of the node that first needed it: name that node, and the
    input whose value the message mentions."""
    cause = exc.__cause__
    origin = chosen_by.get(getattr(cause, "model_key", None)) if isinstance(cause, ModelLoadError) else None
    if origin is None or origin == exc.error.node_id:
        return exc
    loader = graph.nodes[origin]
    message = str(cause)
    chosen = next((name for name, value in loader.inputs.items()
                   if isinstance(value, str) and value and value in message), None)
    return NodeExecutionError(f"{message} (needed by node {exc.error.node_id}, {exc.error.node_type})",
                              node_id=origin, node_type=loader.class_type, title=loader.title, input=chosen,
                              kind="model_load_error")


def _with_stamps(result: SavedFiles, known: dict) -> SavedFiles:
    """The output with a stamp for each of its files: taken as it was written through the
    context, or from the file as it is now for one the node wrote by other means."""
    stamps = tuple(known.get(path) or stamp_file(path) for path in result.files)
    return dataclasses.replace(result, stamps=stamps)
