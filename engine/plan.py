"""From a validated graph to an ordered plan: prune to what the outputs need, sign every node,
and stop walking upstream at nodes whose output is already cached."""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import orjson

from .cache import CacheHit
from .code_version import code_digest
from .graph import Graph, LinkRef, natural_key
from .node import SavedFiles
from .registry import NodeRegistry
from .settings import Settings


@dataclass
class ExecutionPlan:
    order: list[str]  # topological; each node is either executed or taken from the cache
    cached: dict[str, CacheHit]
    signatures: dict[str, str]
    outputs: list[str]
    skipped: list[str]  # in the graph, but not needed for these outputs
    model_fingerprints: dict[str, Any]  # loaders' fingerprints (file hashes), for provenance


def compute_signatures(graph: Graph, registry: NodeRegistry, order: list[str], settings: Settings,
                       fingerprints: dict[str, Any] | None = None) -> dict[str, str]:
    """signature(node) = hash(type, version, code digest, fingerprint, constants, upstream
    signatures + slots).

    Node ids never enter the key, so a renumbered or copied sub-graph hits the same entries.
    Model loaders' fingerprints are also collected into `fingerprints` when given.
    """
    signatures: dict[str, str] = {}
    output_dir = str(Path(settings.output_dir).resolve())
    for node_id in order:
        node = graph.nodes[node_id]
        cls = registry.get(node.class_type)
        inputs = []
        constants = {}
        for name in sorted(node.inputs):
            value = node.inputs[name]
            if isinstance(value, LinkRef):
                inputs.append((name, "@", signatures[value.node_id], value.slot))
            else:
                inputs.append((name, value))
                constants[name] = value
        if not cls.is_idempotent:
            salt: Any = uuid.uuid4().hex  # like ComfyUI's NaN: never equal, always re-run
        else:
            try:
                salt = cls.fingerprint(constants, settings)
            except Exception:  # noqa: BLE001 - an unknowable fingerprint means "always re-run"
                salt = uuid.uuid4().hex
            else:
                if cls.loads_models and fingerprints is not None:
                    fingerprints[node_id] = salt
        payload = [node.class_type, cls.version, code_digest(cls), salt, inputs]
        if cls.spec.is_output_node:
            payload.append(output_dir)  # a new output folder must receive the files again
        digest = hashlib.blake2b(orjson.dumps(payload, default=repr), digest_size=20)
        signatures[node_id] = digest.hexdigest()
    return signatures


def make_plan(graph: Graph, registry: NodeRegistry, outputs: list[str], cache: Any,
              settings: Settings) -> ExecutionPlan:
    digraph = graph.digraph()
    needed: set[str] = set(outputs)
    for out in outputs:
        needed |= nx.ancestors(digraph, out)
    sub = digraph.subgraph(needed)
    order = list(nx.lexicographical_topological_sort(sub, key=natural_key))
    fingerprints: dict[str, Any] = {}
    signatures = compute_signatures(graph, registry, order, settings, fingerprints)

    # Walk upstream from the outputs; a cache hit cuts the walk, so its ancestors need not run.
    run: set[str] = set()
    cached: dict[str, CacheHit] = {}
    stack = list(outputs)
    while stack:
        node_id = stack.pop()
        if node_id in run or node_id in cached:
            continue
        hit = cache.lookup(signatures[node_id])
        if hit is not None and _files_intact(hit.output):
            cached[node_id] = hit
            continue
        run.add(node_id)
        stack.extend(sub.predecessors(node_id))
    keep = run | cached.keys()
    skipped = sorted((n for n in graph.nodes if n not in keep), key=natural_key)
    return ExecutionPlan([n for n in order if n in keep], cached, signatures, outputs, skipped, fingerprints)


def _files_intact(output: Any) -> bool:
    """Output nodes re-run when a file they wrote is gone or changed."""
    return output.intact() if isinstance(output, SavedFiles) else True
