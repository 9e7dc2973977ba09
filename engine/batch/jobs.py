"""The job list of a batch: every (source, sweep combination, repeat), grouped by models."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import orjson

from ..errors import EngineError
from ..graph import Graph, LinkRef
from ..overrides import apply_overrides
from ..sweep import Assignment, Sweep
from .seeds import repeat_overrides
from .sources import expand_sources, source_digest


@dataclass
class Job:
    index: int  # position before grouping by models
    source: str
    graph: Graph | None  # None: the file could not be loaded (load_error says why)
    overrides: list[Assignment]
    id: str = ""
    load_error: EngineError | None = None
    group: tuple = ()

    @property
    def label(self) -> str:
        sets = ", ".join(f"{n}.{i}={v!r}" for n, i, v in self.overrides)
        return f"{self.source} [{sets}]" if sets else self.source


def model_group(graph: Graph | None, registry: Any) -> tuple:
    """What the job's loaders pick (types and constants): jobs with the same group share models."""
    if graph is None:
        return ()
    loaders = []
    for node in graph.nodes.values():
        cls = registry.get(node.class_type)
        if cls is not None and cls.loads_models:
            constants = {k: v for k, v in node.inputs.items() if not isinstance(v, LinkRef)}
            loaders.append(orjson.dumps([node.class_type, constants], option=orjson.OPT_SORT_KEYS, default=repr))
    return tuple(sorted(loaders))


def plan_jobs(session: Any, sources: Iterable[str | Path], sweep: Sweep | None = None, repeat: int = 1,
              overrides: list[Assignment] = ()) -> list[Job]:
    """Every (source, sweep combination, repeat) job. Jobs that load the same models run
    together, in the order of the first of them; within a group the given order holds."""
    combos = sweep.combinations() if sweep else [[]]
    jobs: list[Job] = []
    for number, source in enumerate(expand_sources(sources)):
        try:
            graph, error = session.load(source), None
        except EngineError as exc:
            graph, error = None, exc
        digest = source_digest(source, graph)
        label = str(source) if isinstance(source, Path) else (graph and graph.source) or f"<graph {number + 1}>"
        for combo in combos:
            base = list(overrides) + combo
            configured = graph.copy() if graph else None
            if configured is not None:
                apply_overrides(configured, base)  # problems are reported when the job runs
            seeds = repeat_overrides(configured, session.registry, repeat, f"{digest}:{base}") \
                if configured else [[]] * max(1, repeat)
            for changes in seeds:
                job = Job(len(jobs), label, graph, base + changes, load_error=error,
                          group=model_group(configured, session.registry))
                job.id = hashlib.blake2b(orjson.dumps([digest, job.overrides], default=repr),
                                         digest_size=12).hexdigest()
                jobs.append(job)
    first_seen: dict[tuple, int] = {}
    for job in jobs:
        first_seen.setdefault(job.group or (job.index,), job.index)
    return sorted(jobs, key=lambda j: (first_seen[j.group or (j.index,)], j.index))
