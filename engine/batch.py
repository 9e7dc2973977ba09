"""Batches: many workflows × sweep combinations × repeats, in one session, resumable.

Jobs that pick the same model files run together (the order within each group is the order
given), so each model loads once. A JSON Lines manifest in the output folder gets one line per
finished job; running the same batch again skips the jobs it lists as ok whose files are all
still there. Only one batch at a time may write to an output folder (a lock file says so),
which lets a new batch delete the temporary files a killed one left behind.
"""
from __future__ import annotations

import hashlib
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from .atomic import TEMP_PREFIX
from .errors import EngineError, NodeError
from .file_hashes import sha256_file
from .graph import Graph, LinkRef
from .overrides import apply_overrides
from .sweep import Assignment, Sweep

WORKFLOW_SUFFIXES = (".json", ".png")
MANIFEST_NAME = "manifest.jsonl"
RANDOM_SEED_MAX = 1125899906842624  # the frontend's max for randomized seeds


def expand_sources(sources: Iterable[str | Path | dict | Graph]) -> list[Path | dict | Graph]:
    """Files as given; folders become their .json and .png files, sorted, recursively. Prompts
    (dicts) and loaded graphs pass through."""
    found: list[Path | dict | Graph] = []
    for source in sources:
        if isinstance(source, (dict, Graph)):
            found.append(source)
            continue
        path = Path(source)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in WORKFLOW_SUFFIXES)
        else:
            found.append(path)
    return found


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


@dataclass
class JobResult:
    job: Job
    result: Any | None  # RunResult; None when an earlier run of the batch finished the job
    manifest_line: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "done" if self.result is None else self.result.status


def repeat_overrides(graph: Graph, registry: Any, step: int, salt: str) -> list[Assignment]:
    """The seeds of the `step`-th repeat under each widget's control_after_generate mode, as
    ComfyUI applies it after every queued run: fixed, increment, decrement or randomize. Modes
    come from the saved UI workflow; an API prompt carries none, and its seeds increment."""
    changes = []
    for node, spec, value in registry.seed_widgets(graph.nodes.values()):
        if step == 0 or not isinstance(value, int) or isinstance(value, bool):
            continue
        mode = graph.controls.get((node.id, spec.name), "increment" if graph.ui_workflow is None else "fixed")
        low = int(spec.ge) if spec.ge is not None else 0
        high = int(spec.le) if spec.le is not None else RANDOM_SEED_MAX
        if mode == "increment":
            new = low + (value + step - low) % (high - low + 1)
        elif mode == "decrement":
            new = low + (value - step - low) % (high - low + 1)
        elif mode == "randomize":
            new = random.Random(f"{salt}:{node.id}:{step}").randint(low, min(high, RANDOM_SEED_MAX))
        else:
            continue
        changes.append((node.id, spec.name, new))
    return changes


def _digest(source: Any, graph: Graph | None) -> str:
    """The job's identity comes from the file's bytes (or, for a prompt given in Python, its content)."""
    if isinstance(source, Path):
        try:
            return hashlib.sha256(source.read_bytes()).hexdigest()
        except OSError:
            pass
    return hashlib.sha256(orjson.dumps(graph.to_prompt() if graph else str(source))).hexdigest()


def _model_group(graph: Graph | None, registry: Any) -> tuple:
    if graph is None:
        return ()
    loaders = []
    for node in graph.nodes.values():
        cls = registry.get(node.class_type)
        if cls is not None and cls.loads_models:
            constants = {k: v for k, v in node.inputs.items() if not isinstance(v, LinkRef)}
            loaders.append(orjson.dumps([node.class_type, constants], option=orjson.OPT_SORT_KEYS))
    return tuple(sorted(loaders))


def plan_jobs(session: Any, sources: Iterable[str | Path], sweep: Sweep | None = None, repeat: int = 1,
              overrides: list[Assignment] = ()) -> list[Job]:
    """Every (source, sweep combination, repeat) job, grouped by the models they load."""
    combos = sweep.combinations() if sweep else [[]]
    jobs: list[Job] = []
    for number, source in enumerate(expand_sources(sources)):
        try:
            graph, error = session.load(source), None
        except EngineError as exc:
            graph, error = None, exc
        digest = _digest(source, graph)
        label = str(source) if isinstance(source, Path) else (graph and graph.source) or f"<graph {number + 1}>"
        for combo in combos:
            base = list(overrides) + combo
            configured = graph.copy() if graph else None
            if configured is not None:
                apply_overrides(configured, base)  # problems are reported when the job runs
            for step in range(max(1, repeat)):
                seeds = repeat_overrides(configured, session.registry, step, f"{digest}:{base}") if configured else []
                job = Job(len(jobs), label, graph, base + seeds, load_error=error,
                          group=_model_group(configured, session.registry))
                job.id = hashlib.blake2b(orjson.dumps([digest, job.overrides], default=repr),
                                         digest_size=12).hexdigest()
                jobs.append(job)
    first_seen: dict[tuple, int] = {}
    for job in jobs:
        first_seen.setdefault(job.group or (job.index,), job.index)
    return sorted(jobs, key=lambda j: (first_seen[j.group or (j.index,)], j.index))


class Manifest:
    """`manifest.jsonl`: one JSON object per finished job, appended and synced line by line."""

    def __init__(self, path: Path):
        self.path = path

    def finished(self) -> dict[str, dict]:
        """Jobs that ended ok and whose files all still exist, by job id (the last line wins)."""
        done: dict[str, dict] = {}
        if not self.path.exists():
            return done
        for raw in self.path.read_bytes().splitlines():
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue  # the line a killed process was writing
            if line.get("status") == "ok" and all(Path(f["path"]).exists() for f in line.get("files", ())):
                done[line["job"]] = line
            else:
                done.pop(line.get("job"), None)
        return done

    def append(self, line: dict) -> None:
        import os

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as handle:  # appends go to the end whatever the position
            if handle.seek(0, 2):
                handle.seek(-1, 2)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")  # after a torn last line, start a fresh one
            handle.write(orjson.dumps(line) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())


@contextmanager
def output_folder_lock(folder: Path):
    """Hold `<folder>/.run-graph.lock`; then remove the temp files a killed batch left."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".run-graph.lock", "a+b") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; temp files are left alone
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise EngineError(f"another run-graph batch is writing to {folder}; wait for it or "
                              "use another --output-dir") from exc
        for stale in folder.rglob(f"{TEMP_PREFIX}*"):
            stale.unlink(missing_ok=True)
        yield


def manifest_line(job: Job, result: Any) -> dict:
    return {
        "job": job.id, "source": job.source, "overrides": {f"{n}.{i}": v for n, i, v in job.overrides},
        "seeds": result.provenance.get("seeds", {}), "status": result.status,
        "files": [{"path": f, "sha256": sha256_file(f), **({} if f in result.files else {"reused": True})}
                  for f in result.output_files],
        "seconds": round(result.seconds, 6),
        "nodes": {s: sum(r.status == s for r in result.nodes.values()) for s in ("executed", "cached", "disk")},
        "errors": [e.describe() for e in result.errors],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run_jobs(session: Any, jobs: list[Job], *, manifest: Manifest | None = None, resume: bool = True,
             fail_fast: bool = False, allow_partial: bool = False) -> Iterator[JobResult]:
    from .session import RunResult

    finished = manifest.finished() if manifest and resume else {}
    for position, job in enumerate(jobs):
        event = {"job": job.id, "index": position, "total": len(jobs), "label": job.label}
        if job.id in finished:
            session.on_event("job_end", {**event, "status": "done"})
            yield JobResult(job, None, finished[job.id])
            continue
        session.on_event("job_start", event)
        if job.load_error is not None:
            errors = getattr(job.load_error, "errors", None) or [NodeError(str(job.load_error), kind="invalid_prompt")]
            result = RunResult(job.source, "invalid", errors=[e.in_file(job.source) for e in errors])
        else:
            result = session.execute(job.graph, overrides=job.overrides, allow_partial=allow_partial,
                                     raise_on_error=False)
        line = manifest_line(job, result)
        if manifest is not None:
            manifest.append(line)
        session.on_event("job_end", {**event, "status": result.status, "files": result.files})
        yield JobResult(job, result, line)
        if fail_fast and result.status != "ok":
            return
