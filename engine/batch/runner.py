"""Run a job list through a Session: one result per job, as each finishes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from ..errors import NodeError
from ..result import RunResult, failed_result
from .jobs import Job
from .manifest import Manifest, manifest_line


@dataclass
class JobResult:
    job: Job
    result: RunResult | None  # None when an earlier run of the batch finished the job
    manifest_line: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "done" if self.result is None else self.result.status


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


def run_jobs(session: Any, jobs: list[Job], *, manifest: Manifest | None = None, resume: bool = True,
             fail_fast: bool = False, allow_partial: bool = False) -> Iterator[JobResult]:
    finished = manifest.finished() if manifest and resume else {}
    for position, job in enumerate(jobs):
        event = {"job": job.id, "index": position, "total": len(jobs), "label": job.label}
        if job.id in finished:
            session.on_event("job_end", {**event, "status": "done"})
            yield JobResult(job, None, finished[job.id])
            continue
        session.on_event("job_start", event)
        result = run_job(session, job, allow_partial)
        line = manifest_line(job, result)
        if manifest is not None:
            manifest.append(line)
        session.on_event("job_end", {**event, "status": result.status, "files": result.files})
        yield JobResult(job, result, line)
        if fail_fast and result.status != "ok":
            return
