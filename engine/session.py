"""The Python API: a `Session` keeps the registry, caches and loaded models between runs;
`execute()` and `load_workflow()` use a default session created on first use."""
from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import networkx as nx

from .batch import MANIFEST_NAME, JobResult, Manifest, output_folder_lock, plan_jobs, run_jobs
from .cache import NullCache, OutputCache
from .context import RunInfo
from .disk_cache import DiskCache
from .errors import EngineError, NodeError, NodeExecutionError, RunCancelled, ValidationFailed
from .execute import run_plan
from .graph import Graph, LinkRef, natural_key
from .heap import trim_heap
from .load import load_workflow
from .model_store import ModelStore, default_ram_budget
from .overrides import apply_overrides, parse_assignment
from .plan import make_plan
from .registry import NodeRegistry, default_registry
from .result import NodeRecord, RunResult, failed_result
from .settings import Settings, package_version
from .sweep import Sweep
from .validate import validate

__all__ = ["RunResult", "Session", "default_registry", "execute", "execute_many"]
MEMORY_CACHE_CAP = 256 * 2**20


class Session:
    """Keeps the registry, the output caches and the loaded models between runs.

    Runs are serialized: calls from several threads queue up and run one at a time, so no run
    sees another's LoRA merged into a shared model or loses a model another run holds.
    `cancel()` stops the run in progress at its next node or sampler step.
    """

    def __init__(self, registry: NodeRegistry | None = None, settings: Settings | None = None, *,
                 cache: bool = True, memory_cache_bytes: int | None = None,
                 on_event: Callable[[str, dict], None] | None = None):
        self.registry = registry or default_registry()
        self.settings = settings or Settings()
        disk = None
        if cache and self.settings.cache_dir is not None:
            disk = DiskCache(self.settings.cache_dir, self.settings.cache_size, self.settings.torch_device)
        ram_budget = self.settings.ram_budget or default_ram_budget()
        if memory_cache_bytes is None:
            # Small on purpose: the disk cache holds every persisted output too, and reading one
            # back costs milliseconds; a long sweep must not grow by its decoded images.
            memory_cache_bytes = min(MEMORY_CACHE_CAP, ram_budget // 16)
        self.cache = OutputCache(memory_cache_bytes, disk) if cache else NullCache()
        self.models = ModelStore(ram_budget, self.settings.vram_budget, shares_ram_with=self.cache)
        self.on_event = on_event or (lambda kind, data: None)
        self._run_lock = threading.RLock()
        self._cancel = threading.Event()  # the running run's; each run gets a fresh one

    def cancel(self) -> None:
        """Stop the run in progress (if any) at its next node or sampler step. It ends with
        RunCancelled (status failed); the session stays usable."""
        self._cancel.set()

    def load(self, source: str | Path | dict | Graph) -> Graph:
        return load_workflow(source, registry=self.registry)

    def execute(self, source: str | Path | dict | Graph, *,
                overrides: Mapping[str, Any] | Iterable[str] | None = None,
                outputs: list[str] | None = None, allow_partial: bool = False,
                raise_on_error: bool = True) -> RunResult:
        """Validate and run a workflow. Raises `ValidationFailed` (bad input) or
        `NodeExecutionError` (runtime failure, with `.result` holding what finished) unless
        `raise_on_error=False`, in which case the result's status and errors say what happened.

        `allow_partial`: like ComfyUI, run the outputs whose upstream is valid and report the rest.
        `outputs`: run only these output nodes (and what they need).
        """
        with self._run_lock:
            cancel = self._cancel = threading.Event()
            try:
                return self._execute(source, overrides, outputs, allow_partial, raise_on_error, cancel)
            except EngineError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug outside any node: still a typed answer
                if raise_on_error:
                    raise
                return failed_result(_label(source), exc)

    def _execute(self, source, overrides, outputs, allow_partial, raise_on_error,
                 cancel: threading.Event) -> RunResult:
        started = time.perf_counter()
        label = _label(source)
        try:
            checked, errors = self._check(source, overrides)
            targets = [o for o in checked.outputs if outputs is None or o in outputs]
            if outputs is not None:
                errors += [NodeError(f"requested output {o} is not a valid output node", node_id=o,
                                     kind="bad_output") for o in outputs if o not in checked.outputs]
            if errors and not (allow_partial and targets):
                raise ValidationFailed(errors, file=label)
        except EngineError as exc:
            if raise_on_error:
                raise
            return RunResult(label, "invalid", errors=_errors_of(exc, label),
                             seconds=time.perf_counter() - started)

        result = RunResult(label, "invalid" if errors else "ok", errors=[e.in_file(label) for e in errors],
                           warnings=[w.in_file(label) for w in checked.warnings])
        plan = make_plan(checked.graph, self.registry, targets, self.cache, self.settings)
        for node_id in plan.skipped:
            node = checked.graph.nodes[node_id]
            result.nodes[node_id] = NodeRecord(node_id, node.class_type, node.title, "skipped")
        run = RunInfo(checked.graph.to_prompt(), checked.graph.ui_workflow, self.settings,
                      self.settings.torch_device() if _needs_device(plan) else "cpu",
                      self.on_event, cancel, files=result.files, stamps=result.stamps, metadata=result.metadata,
                      provenance=provenance(checked.graph, self.registry, plan))
        result.provenance = run.provenance
        # "cached" as ComfyUI's execution_cached means it: every node of the prompt whose output
        # is at hand, also those upstream of a cached node that the plan never needs to visit
        at_hand = [n for n in sorted(plan.signatures, key=natural_key)
                   if n in plan.cached or self.cache.holds(plan.signatures[n])]
        self.on_event("run_start", {"source": label, "nodes": len(plan.order), "cached": at_hand})
        try:
            run_plan(plan, checked.graph, self.registry, self.cache, self.models, run,
                     result.outputs, result.nodes)
        except (NodeExecutionError, RunCancelled) as exc:
            result.status = "invalid" if getattr(exc, "error", None) and \
                exc.error.kind == "model_load_error" else "failed"
            result.errors.append((exc.error if isinstance(exc, NodeExecutionError)
                                  else NodeError(str(exc), kind="cancelled")).in_file(label))
            if raise_on_error:
                exc.result = result
                raise
        finally:
            if result.executed:
                trim_heap()
            result.nodes = dict(sorted(result.nodes.items(), key=lambda kv: natural_key(kv[0])))
            result.seconds = time.perf_counter() - started
            self.on_event("run_end", {"source": label, "status": result.status})
        return result

    def execute_many(self, sources: Iterable[str | Path | dict | Graph] | str | Path | dict | Graph, *,
                     sweep: Sweep | Mapping[str, Any] | None = None, repeat: int = 1,
                     overrides: Mapping[str, Any] | Iterable[str] | None = None,
                     manifest: bool | str | Path = False, resume: bool = True, fail_fast: bool = False,
                     allow_partial: bool = False, cluster: Any = None) -> Iterator[JobResult]:
        """Run every (workflow, sweep combination, repeat) job, lazily, one result per job.

        `sources`: files, folders (their .json/.png files), prompts or graphs. `sweep`: a Sweep,
        or {"NODE.INPUT": values} for a product of axes (values as for --sweep: a list, "1..10",
        "@file"). `repeat`: runs per combination, seeds following control_after_generate.
        `manifest`: True for `<output>/manifest.jsonl`, or a path; finished jobs listed there
        are skipped unless `resume=False`. `fail_fast`: stop after the first job that is not ok.
        `cluster`: run the jobs on Ray actors instead of here: an address ("auto", "local",
        "host:port") or a `batch.cluster.ClusterOptions`; results, manifest and files as locally.
        """
        if isinstance(sources, (str, Path, dict, Graph)):
            sources = [sources]
        if isinstance(sweep, Mapping):
            axes, sweep = sweep, Sweep()
            for target, values in axes.items():
                sweep.add(target, values)
        jobs = plan_jobs(self, sources, sweep, repeat, _assignments(overrides))
        options = dict(resume=resume, fail_fast=fail_fast, allow_partial=allow_partial,
                       executor=_cluster_executor(cluster, self.settings, allow_partial))
        if not manifest:
            yield from run_jobs(self, jobs, **options)
            return
        path = self.settings.output_dir / MANIFEST_NAME if manifest is True else Path(manifest)
        with output_folder_lock(self.settings.output_dir):
            yield from run_jobs(self, jobs, manifest=Manifest(path), **options)

    def validate(self, source: str | Path | dict | Graph, *,
                 overrides: Mapping[str, Any] | Iterable[str] | None = None) -> RunResult:
        """Load, apply overrides and validate without running anything."""
        label = _label(source)
        try:
            checked, errors = self._check(source, overrides)
        except (EngineError, ValueError) as exc:
            return RunResult(label, "invalid", errors=_errors_of(exc, label))
        return RunResult(label, "invalid" if errors else "ok", errors=[e.in_file(label) for e in errors],
                         warnings=[w.in_file(label) for w in checked.warnings])

    def check_outputs(self, source: str | Path | dict | Graph,
                      targets: Iterable[str] | None = None) -> tuple[list[str], list[NodeError]]:
        """ComfyUI's validation of a queued prompt: the output nodes (among `targets`, when given)
        whose whole upstream is valid, and the errors that stand in the way of the requested
        outputs. Problems in nodes no requested output needs are not reported, as in ComfyUI."""
        checked, errors = self._check(source, None)
        digraph = checked.graph.digraph()
        outputs = [n for n in checked.graph.nodes if (spec := self.registry.spec(checked.graph.nodes[n].class_type))
                   and spec.is_output_node]
        requested = outputs if targets is None else [t for t in outputs if t in set(targets)]
        needed = set(requested).union(*(nx.ancestors(digraph, o) for o in requested if o in digraph))
        relevant = [e for e in errors if e.node_id is None and e.kind != "prompt_no_outputs" or e.node_id in needed]
        if not requested:
            relevant.append(NodeError("the prompt has no output node to run among those requested",
                                      kind="prompt_no_outputs"))
        return [o for o in checked.outputs if o in requested], relevant

    def _check(self, source, overrides) -> tuple[Any, list[NodeError]]:
        graph = self.load(source).copy()
        problems = apply_overrides(graph, _assignments(overrides))
        checked = validate(graph, self.registry, self.settings)
        return checked, problems + checked.errors


def seed_inputs(graph: Graph, registry: NodeRegistry, node_ids: Iterable[str]) -> dict[str, Any]:
    """{"node.input": value} of every seed-like input (control_after_generate widgets)."""
    nodes = (graph.nodes[node_id] for node_id in sorted(node_ids, key=natural_key))
    return {f"{node.id}.{widget.name}": value for node, widget, value in registry.seed_widgets(nodes)}


def provenance(graph: Graph, registry: NodeRegistry, plan: Any) -> dict:
    needed = plan.signatures.keys()
    models = {node_id: {"type": graph.nodes[node_id].class_type,
                        "inputs": {k: v for k, v in graph.nodes[node_id].inputs.items() if not isinstance(v, LinkRef)},
                        "sha256": fingerprint}
              for node_id, fingerprint in sorted(plan.model_fingerprints.items(), key=lambda kv: natural_key(kv[0]))}
    return {"engine": f"run-graph {package_version('run-graph')}", "seeds": seed_inputs(graph, registry, needed),
            "models": models}


def _cluster_executor(cluster: Any, settings: Settings, allow_partial: bool) -> Any:
    if cluster is None:
        return None
    from .batch.cluster import ClusterExecutor, ClusterOptions  # Ray is an optional extra

    options = cluster if isinstance(cluster, ClusterOptions) else ClusterOptions(address=str(cluster))
    return ClusterExecutor(settings, options, allow_partial)


def _label(source: Any) -> str | None:
    if isinstance(source, Graph):
        return source.source
    return None if isinstance(source, dict) else str(source)


def _needs_device(plan: Any) -> bool:
    # Probing torch for CUDA costs an import; runs that are all cached never pay it.
    return bool(set(plan.order) - plan.cached.keys())


def _assignments(overrides: Mapping[str, Any] | Iterable[str | tuple] | None) -> list[tuple[str, str, Any]]:
    """Overrides as (node id or title, input, value): from {"14.seed": 3}, ["14.seed=3"] or
    [("14", "seed", 3)]."""
    if not overrides:
        return []
    if isinstance(overrides, Mapping):
        out = []
        for key, value in overrides.items():
            node_key, _, input_name = key.rpartition(".")
            if not node_key:
                raise ValueError(f"override key {key!r} must be NODE.INPUT")
            out.append((node_key, input_name, value))
        return out
    return [item if isinstance(item, tuple) else parse_assignment(item) for item in overrides]


def _errors_of(exc: Exception, label: str | None) -> list[NodeError]:
    if isinstance(exc, ValidationFailed):
        return exc.errors
    return [NodeError(str(exc), kind="invalid_prompt", file=label)]


@functools.lru_cache(maxsize=1)
def default_session() -> Session:
    """The session behind module-level `execute()` and `execute_many()`."""
    return Session()


def execute(source: str | Path | dict | Graph, **kwargs: Any) -> RunResult:
    """Run a workflow (path, dict or loaded Graph) in the default session; see Session.execute."""
    return default_session().execute(source, **kwargs)


def execute_many(sources: Any, **kwargs: Any) -> Iterator[JobResult]:
    """Run many jobs in the default session; see Session.execute_many."""
    return default_session().execute_many(sources, **kwargs)
