"""Batches on a Ray cluster: the same jobs, manifest, resume and exit codes as a local batch,
run by Ray actors that each hold one Session.

- Each worker is an actor pinned to one GPU (`num_gpus=1`), or to `cpus_per_worker` CPU threads
  on a cluster without GPUs. Its Session keeps models and caches across the jobs it runs; the
  disk cache is that machine's.
- Model affinity: jobs arrive grouped by the model files they load (jobs.plan_jobs). A group goes
  whole to the least loaded worker, in order, and is split only when it is larger than a fair
  share (jobs / workers). Jobs never move between workers otherwise, so no worker loads a model
  another group needs unless the split asked for it.
- Backpressure: at most `in_flight_per_worker` jobs are submitted to a worker at once; the rest
  wait in the driver's queues, and results are handed on as they arrive. A sweep of 100,000 jobs
  never has more than workers × in_flight tasks or results alive.
- Results: by default a worker writes into a scratch folder of its own and returns the files'
  bytes; the driver claims the names in the output folder (the counter continues there, as a
  local run's would) and writes them atomically, so no shared filesystem is needed. With
  `shared_output` (a folder every node mounts) workers write there directly.
- Faults: when a worker dies (process killed, node lost), the jobs it held go back to the front of
  the queue and a replacement worker takes them; a job whose workers die `max_attempts` times is
  reported failed. A job that fails on its own (a bad workflow, an error in a node) is reported
  once, never retried. Killing the driver and running the same command again resumes from the
  manifest, as locally.
"""
from __future__ import annotations

import logging
import math
import os
import re
import sys
import tempfile
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from ..atomic import NUMBERED, atomic_write, create_new, next_number, numbered
from ..errors import EngineError, NodeError
from ..file_hashes import stamp_file
from ..result import NodeRecord, RunResult
from .jobs import Job
from .runner import Started, run_job

log = logging.getLogger("run_graph.cluster")
# With this in the environment when Ray is imported (it reads it then), Ray puts every service
# of a node on 127.0.0.1 instead of the machine's address (checked with ray 2.60). Right for a
# cluster on one machine (`local`, tests, CI), wrong for a real multi-node cluster.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@dataclass
class ClusterOptions:
    address: str = "auto"  # "auto" (the running cluster), "local" (start one here), or host:port
    workers: int | None = None  # default: one per GPU, or the cluster's CPUs / cpus_per_worker
    cpus_per_worker: int = 1
    in_flight_per_worker: int = 2
    shared_output: bool = False  # workers write into the output folder themselves
    max_attempts: int = 3  # tries of a job whose worker keeps dying


def assign(jobs: list[tuple[int, Job]], workers: int) -> list[deque]:
    """Queues per worker: each model group whole and in order, split past the fair share."""
    queues: list[deque] = [deque() for _ in range(workers)]
    fair = max(1, math.ceil(len(jobs) / workers))
    groups: list[list] = []
    for item in jobs:
        if groups and groups[-1][0][1].group == item[1].group and item[1].group:
            groups[-1].append(item)
        else:
            groups.append([item])
    for group in groups:
        for start in range(0, len(group), fair):
            min(queues, key=len).extend(group[start:start + fair])
    return queues


class _Worker:
    """The actor: one Session, its jobs run one at a time."""

    def __init__(self, settings: dict, threads: int, shared_output: bool):
        import socket

        import torch

        from ..registry import default_registry
        from ..session import Session
        from ..settings import Settings

        torch.set_num_threads(threads)
        self.shared_output = shared_output
        if not shared_output:
            settings = {**settings, "output_dir": tempfile.mkdtemp(prefix="run-graph-worker-")}
        self.session = Session(default_registry(), Settings(**settings))
        self.output_dir = self.session.settings.output_dir
        self.where = f"pid {os.getpid()} on {socket.gethostname()}"

    def info(self) -> dict:
        return {"pid": os.getpid(), "where": self.where}

    def run(self, job: Job, allow_partial: bool) -> dict:
        result = run_job(self.session, job, allow_partial)
        files = []
        for path in result.files:
            if self.shared_output:
                files.append((path, None))
            else:  # hand the bytes to the driver, and keep the scratch folder empty
                data = Path(path).read_bytes()
                files.append((str(Path(path).relative_to(self.output_dir)), data))
                Path(path).unlink()
        return {"where": self.where, "status": result.status, "errors": [e.to_dict() for e in result.errors],
                "warnings": [w.to_dict() for w in result.warnings], "provenance": result.provenance,
                "metadata": result.metadata, "seconds": result.seconds,
                "nodes": {n: asdict(r) for n, r in result.nodes.items()}, "files": files}


class ClusterExecutor:
    def __init__(self, settings: Any, options: ClusterOptions, allow_partial: bool = False):
        self.settings, self.options, self.allow_partial = settings, options, allow_partial
        self._ray = None
        self._actor_class = None
        self._actors: dict[str, Any] = {}
        self._started_ray = False
        self._next_counter: dict[tuple[Path, str, str], int] = {}  # per numbered series in the output

    # -- the cluster --------------------------------------------------------------------------

    def _connect(self):
        is_local = self.options.address == "local"
        if is_local and "ray" not in sys.modules:
            os.environ.update(LOOPBACK_ENV)  # a cluster on this machine only: keep it on loopback
        try:
            import ray
        except ImportError as exc:
            raise EngineError("batches on Ray need the ray package: pip install 'run-graph[ray]'") from exc
        if not ray.is_initialized():
            try:
                ray.init(logging_level="ERROR", log_to_driver=False,
                         **({"include_dashboard": False} if is_local else {"address": self.options.address}))
            except ConnectionError as exc:
                raise EngineError(f"cannot reach a Ray cluster at {self.options.address!r}: {exc}") from exc
            self._started_ray = True
        self._ray, self._actor_class = ray, ray.remote(_Worker)
        return ray

    def _worker_count(self, jobs: int) -> tuple[int, bool]:
        resources = self._ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        count = self.options.workers or gpus or max(1, int(resources.get("CPU", 1)) // self.options.cpus_per_worker)
        return max(1, min(count, jobs)), gpus > 0

    def _spawn(self, name: str, on_gpu: bool):
        # Absolute: a worker's working folder is not the driver's. On other machines these paths
        # (models, cache) must exist there too.
        fields = {k: (str(Path(v).absolute()) if isinstance(v, Path) else v) for k, v in vars(self.settings).items()
                  if not k.startswith("_")}
        actor = self._actor_class.options(max_restarts=0, num_gpus=1 if on_gpu else 0,
                                    num_cpus=0 if on_gpu else self.options.cpus_per_worker).remote(
            fields, self.options.cpus_per_worker, self.options.shared_output)
        self._actors[name] = actor
        return actor

    # -- running ------------------------------------------------------------------------------

    def run(self, todo: list[tuple[int, Job]], started: Started) -> Iterator[tuple[int, Job, RunResult, str]]:
        if not todo:
            return
        ray = self._connect()
        count, on_gpu = self._worker_count(len(todo))
        queues = dict(zip((f"w{i}" for i in range(count)), assign(todo, count)))
        for name in queues:
            self._spawn(name, on_gpu)
        attempts: dict[str, int] = {}
        in_flight: dict[Any, tuple[str, int, Job]] = {}
        spawned = count
        while in_flight or any(queues.values()):
            for name, queue in list(queues.items()):
                busy = sum(1 for worker, _, _ in in_flight.values() if worker == name)
                while busy < self.options.in_flight_per_worker and queue:
                    position, job = queue.popleft()
                    started(position, job, name)
                    in_flight[self._actors[name].run.remote(job, self.allow_partial)] = (name, position, job)
                    busy += 1
            [done], _ = ray.wait(list(in_flight), num_returns=1)
            name, position, job = in_flight.pop(done)
            try:
                payload = ray.get(done)
            except ray.exceptions.RayActorError as exc:
                spawned += 1
                yield from self._worker_died(name, f"w{spawned - 1}", on_gpu, queues, in_flight, attempts,
                                             (position, job), exc)
                continue
            yield position, job, self._materialize(job, payload), f"{name} ({payload['where']})"

    def _worker_died(self, name: str, replacement: str, on_gpu: bool, queues: dict, in_flight: dict,
                     attempts: dict, lost: tuple, exc: Exception) -> Iterator[tuple[int, Job, RunResult, str]]:
        """Put the dead worker's jobs back, first in a replacement's queue; give up on a job
        after max_attempts deaths."""
        log.warning("worker %s died (%s); its jobs run again on %s", name, type(exc).__name__, replacement)
        held = [lost] + [(p, j) for f, (w, p, j) in list(in_flight.items()) if w == name]
        for future in [f for f, (w, _, _) in in_flight.items() if w == name]:
            in_flight.pop(future)
        retry = deque()
        for position, job in sorted(held, key=lambda item: item[0]):
            attempts[job.id] = attempts.get(job.id, 0) + 1
            if attempts[job.id] >= self.options.max_attempts:
                message = f"its worker died {attempts[job.id]} times while running it; last: {exc}"
                yield position, job, RunResult(job.source, "failed", errors=[
                    NodeError(message, kind="worker_died", file=job.source)]), name
            else:
                retry.append((position, job))
        retry.extend(queues.pop(name))
        self._actors.pop(name, None)
        self._spawn(replacement, on_gpu)
        queues[replacement] = retry

    def _materialize(self, job: Job, payload: dict) -> RunResult:
        """The worker's result, with its files written into the output folder here."""
        files = [name if data is None else str(self._write(name, data)) for name, data in payload["files"]]
        # Stamped once, here: the manifest line and the report both read these.
        result = RunResult(job.source, payload["status"], files=files, stamps={f: stamp_file(f) for f in files},
                           metadata=payload["metadata"],
                           provenance=payload["provenance"], seconds=payload["seconds"],
                           errors=[NodeError(**e) for e in payload["errors"]],
                           warnings=[NodeError(**w) for w in payload["warnings"]],
                           nodes={n: NodeRecord(**r) for n, r in payload["nodes"].items()})
        return result

    def _write(self, relative: str, data: bytes) -> Path:
        target = self.settings.output_path(relative)
        counted = NUMBERED.match(target.name)
        if counted is None:
            return atomic_write(target, lambda handle: handle.write(data))
        series = (target.parent, counted["stem"], counted["suffix"])
        if series not in self._next_counter:  # continue after the highest already there, once
            self._next_counter[series] = next_number(target.parent, re.escape(series[1]), series[2])
        path = create_new(target.parent, numbered(series[1], series[2], self._next_counter[series]),
                          lambda handle: handle.write(data))
        self._next_counter[series] = int(NUMBERED.match(path.name)["number"]) + 1
        return path

    def stop(self) -> None:
        if self._ray is None:
            return
        for actor in self._actors.values():
            self._ray.kill(actor)
        self._actors.clear()
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False
