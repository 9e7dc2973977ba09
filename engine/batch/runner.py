"""Run a job list: one result per job, as each finishes.

`run_jobs` is the one driver loop (resume from the manifest, manifest lines, job events,
fail-fast) whatever runs the jobs: an executor yields results in the order they finish.
`LocalExecutor` runs them one after another in this process's Session; `cluster.ClusterExecutor`
runs them on Ray actors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol

from ..errors import NodeError
from ..result import RunResult, failed_result
from .jobs import Job
from .manifest import Manifest, manifest_line

Started = Callable[[int, Job, str | None], None]  # (position, job, worker) when a job starts


@dataclass
class JobResult:
    job: Job
    result: RunResult | None  # None when an earlier run of the batch finished the job
    manifest_line: dict = field(default_factory=dict)
    worker: str | None = None  # the cluster worker that ran it; None when run here

    @property
    def status(self) -> str:
        return "done" if self.result is None else self.result.status


class Executor(Protocol):
    def run(self, todo: list[tuple[int, Job]], started: Started) -> Iterator[tuple[int, Job, RunResult, str | None]]:
        """Run every (position, job) of `todo`; yield (position, job, result, worker) as each ends."""

    def stop(self) -> None:
        """Give up on what has not finished (fail-fast); release the workers."""


def run_job(session: Any, job: Job, allow_partial: bool = False) -> RunResult:
    """One job's result. Nothing a job does stops the batch: a bug or a full disk fails that
    job (status failed), and only an interrupt (KeyboardInterrupt) goes further."""
    if job.load_error is not None:
        errors = getattr(job.load_error, "errors", None) or [NodeError(str(job.load_error), kind="invalid_prompt")]
        return RunResult(job.source, "invalid", errors=[e.in_file(job.source) for e in errors])
    try:
        return session.execute(job.graph, overrides=job.overrides, allow_partial=allow_partial,
                               raise_on_error=False)
    except Exception as exc:  # noqa: BLE001 - reported as this job's failure, the batch goes on
        return failed_result(job.source, exc)


class LocalExecutor:
    def __init__(self, session: Any, allow_partial: bool = False):
        self.session, self.allow_partial = session, allow_partial

    def run(self, todo: Iterable[tuple[int, Job]], started: Started) -> Iterator[tuple[int, Job, RunResult, None]]:
        for position, job in todo:
            started(position, job, None)
            yield position, job, run_job(self.session, job, self.allow_partial), None

    def stop(self) -> None:
        pass


def run_jobs(session: Any, jobs: list[Job], *, manifest: Manifest | None = None, resume: bool = True,
             fail_fast: bool = False, allow_partial: bool = False,
             executor: Executor | None = None) -> Iterator[JobResult]:
    finished = manifest.finished() if manifest and resume else {}
    executor = executor or LocalExecutor(session, allow_partial)

    def event(position: int, job: Job, worker: str | None = None) -> dict:
        return {"job": job.id, "index": position, "total": len(jobs), "label": job.label,
                **({"worker": worker} if worker else {})}

    todo = []
    for position, job in enumerate(jobs):
        if job.id in finished:
            session.on_event("job_end", {**event(position, job), "status": "done"})
            yield JobResult(job, None, finished[job.id])
        else:
            todo.append((position, job))
    started: Started = lambda position, job, worker: session.on_event("job_start", event(position, job, worker))
    try:
        for position, job, result, worker in executor.run(todo, started):
            line = manifest_line(job, result, **({"worker": worker} if worker else {}))
            if manifest is not None:
                manifest.append(line)
            session.on_event("job_end", {**event(position, job, worker), "status": result.status, "files": result.files})
            yield JobResult(job, result, line, worker)
            if fail_fast and result.status != "ok":
                return
    finally:
        executor.stop()
