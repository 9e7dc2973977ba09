"""`run-graph`: a thin argparse wrapper over `Session`.

Exit codes: 0 every workflow ran; 2 bad input (unreadable or invalid workflow, missing model, a
malformed command-line value); 1 a runtime failure; 75 (EX_TEMPFAIL) the output folder is held by
another batch, so the same command can simply be retried later. Results go to stdout (`--json`:
one `schemas.RunReport` object per job); logs, warnings and progress go to stderr, and progress
bars only appear on a terminal.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import orjson

from schemas import RunReport
from schemas.report import json_schema

from .batch import FolderBusy, JobResult
from .disk_cache import DiskCache
from .errors import EngineError
from .node import ShownText
from .overrides import parse_assignment
from .registry import default_registry
from .result import RunResult
from .session import Session
from .settings import CACHE_DIR_ENV, MODELS_DIR_ENV, Settings, parse_size
from .sweep import Sweep, load_sweep_file

log = logging.getLogger("run_graph")
EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_BUSY = 0, 1, 2, 75
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class UsageError(Exception):
    """A command-line value that cannot be used: reported as one line naming the flag, exit 2."""

    def __init__(self, flag: str, value: Any, reason: str):
        super().__init__(f"{flag} {str(value)!r}: {reason}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line a script can read, not the whole usage block.
        self.exit(EXIT_INVALID, f"run-graph: {message} (see run-graph --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="run-graph", description="Run ComfyUI workflows headless "
                                "(UI workflow JSON, API prompt JSON, or PNGs that carry them).")
    p.add_argument("files", nargs="*", type=Path,
                   help="workflow files (.json or .png) and folders of them; several make a batch")
    p.add_argument("--validate", action="store_true", help="check the files, run nothing")
    p.add_argument("--list-nodes", action="store_true",
                   help="list the node types and their inputs (object_info JSON with --json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="set an input by node id or title, e.g. 14.seed=42 or 'Kolors Sampler.steps=30'")
    p.add_argument("--sweep", action="append", default=[], metavar="NODE.INPUT=VALUES",
                   help="run every value: 1..100, 1..100:5, [4,5,6], @lines.txt; several --sweep multiply")
    p.add_argument("--sweep-zip", action="append", default=[], metavar="NODE.INPUT=VALUES",
                   help="axes that advance together (same length), multiplied with --sweep axes")
    p.add_argument("--sweep-file", type=Path, help="a JSON or YAML file with 'product' and/or 'zip' axes")
    p.add_argument("--repeat", default="1", metavar="N",
                   help="run each job N times, seeds following the workflow's control_after_generate")
    p.add_argument("--fail-fast", action="store_true", help="stop a batch at the first job that fails")
    p.add_argument("--no-resume", action="store_true",
                   help="redo a batch's jobs even when its manifest lists them as finished")
    p.add_argument("--events", choices=["ndjson"], help="stream progress events as JSON lines on stdout")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="run the batch on a Ray cluster: auto (the running one), local (start one here) or HOST:PORT")
    p.add_argument("--ray-workers", default=None, metavar="N",
                   help="workers on the cluster (default: one per GPU, or CPUs / --ray-cpus-per-worker)")
    p.add_argument("--ray-cpus-per-worker", default="1", metavar="N", help="CPU threads per worker on CPU-only nodes")
    p.add_argument("--ray-shared-output", action="store_true",
                   help="workers write into --output-dir themselves (a folder every node mounts); "
                        "by default they send the files to this process, which writes them")
    p.add_argument("--output-dir", type=Path, default=Path("output"))
    p.add_argument("--input-dir", type=Path, default=Path("input"))
    p.add_argument("--models-dir", type=Path, default=None,
                   help=f"models folder in ComfyUI's layout (default ${MODELS_DIR_ENV} or ./models)")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1...")
    p.add_argument("--noise-device", choices=["cpu", "device"], default=None,
                   help="where samplers draw initial noise: device (the run's, as ComfyUI and the Kolors "
                        "wrapper do; the default) or cpu (the same image on every device)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the diffusion model: the first run pays the compile, later runs are faster")
    p.add_argument("--json", action="store_true", help="print one JSON object per job on stdout")
    p.add_argument("--json-schema", action="store_true", help="print the JSON Schema of --json lines")
    p.add_argument("--partial", action="store_true",
                   help="run the outputs that are valid even when others are not (as ComfyUI does)")
    p.add_argument("--allow-unsafe-paths", action="store_true",
                   help="allow input files (images) outside the input folder; outputs always stay "
                        "inside the output folder")
    p.add_argument("--no-cache", action="store_true", help="do not reuse node outputs, in memory or on disk")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"where node outputs persist between runs (default ${CACHE_DIR_ENV} or the user cache dir)")
    p.add_argument("--cache-size", default=None, metavar="SIZE",
                   help="disk cache limit, e.g. 20GB (the default); least recently used entries go first")
    p.add_argument("--ram-budget", default=None, metavar="SIZE",
                   help="memory for loaded models (default 3/4 of RAM); least recently used leave first")
    p.add_argument("--vram-budget", default=None, metavar="SIZE",
                   help="GPU memory for models (default 85%%); the least recently used move to RAM")
    p.add_argument("--cache-info", action="store_true", help="show the disk cache's folder, entries and size")
    p.add_argument("--clear-cache", action="store_true", help="empty the disk cache")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    return p


def _quiet_libraries() -> None:
    # Model libraries log load reports and deprecation notes at INFO/WARNING; a CLI run should
    # show its own progress and errors only. Users can still raise the levels in the environment.
    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        os.environ.setdefault(name, "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        _quiet_libraries()
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        from .server.cli import serve  # aiohttp is the [server] extra

        return serve(argv[1:])
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    try:
        return _main(args)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except UsageError as exc:
        log.error("run-graph: %s", exc)
        return EXIT_INVALID
    except FolderBusy as exc:
        log.error("run-graph: %s", exc)
        return EXIT_BUSY
    except EngineError as exc:
        log.error("error: %s", exc)
        return EXIT_INVALID
    except Exception as exc:  # noqa: BLE001 - a CLI prints a message, never a traceback
        if os.environ.get("RUN_GRAPH_DEBUG"):
            raise
        log.error("internal error: %s: %s (set RUN_GRAPH_DEBUG=1 for a traceback)",
                  type(exc).__name__, exc)
        return EXIT_FAILED


def _main(args: argparse.Namespace) -> int:
    if args.list_nodes:
        return _list_nodes(args.json)
    if args.json_schema:
        sys.stdout.buffer.write(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2) + b"\n")
        return EXIT_OK
    settings = _settings(args)
    if args.cache_info or args.clear_cache:
        return _cache_command(settings, args.clear_cache, args.json)
    if not args.files:
        log.error("run-graph: no workflow file given (see run-graph --help)")
        return EXIT_INVALID
    overrides = [_parsed("--set", text, parse_assignment) for text in args.overrides]
    if args.validate:
        session = Session(default_registry(), settings)
        statuses = []
        for path in args.files:
            result = session.validate(path, overrides=overrides)
            statuses.append(result.status)
            _report(result, args.json)
        return _exit_code(statuses)
    return _run_batch(args, settings, overrides, _sweep(args), _positive("--repeat", args.repeat), _cluster(args))


def _cluster(args: argparse.Namespace) -> Any:
    if args.ray is None:
        return None
    from .batch.cluster import ClusterOptions

    workers = None if args.ray_workers is None else _positive("--ray-workers", args.ray_workers)
    return ClusterOptions(address=args.ray, workers=workers, shared_output=args.ray_shared_output,
                          cpus_per_worker=_positive("--ray-cpus-per-worker", args.ray_cpus_per_worker))


def _parsed(flag: str, value: Any, parse) -> Any:
    try:
        return parse(value)
    except (ValueError, EngineError) as exc:
        raise UsageError(flag, value, str(exc).removeprefix(f"{value}: ")) from None


def _positive(flag: str, text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise UsageError(flag, text, "expected a whole number of at least 1")
    return int(text)


def _settings(args: argparse.Namespace) -> Settings:
    sizes = {}
    for flag, name in (("--cache-size", "cache_size"), ("--ram-budget", "ram_budget"), ("--vram-budget", "vram_budget")):
        if (value := getattr(args, name)) is not None:
            sizes[name] = _parsed(flag, value, parse_size)
    if not _DEVICE.match(args.device):
        raise UsageError("--device", args.device, "expected auto, cpu, cuda, cuda:N or mps")
    optional = {"models_dir": args.models_dir, "cache_dir": args.cache_dir, **sizes}
    return Settings(output_dir=args.output_dir, input_dir=args.input_dir, device=args.device,
                    allow_unsafe_paths=args.allow_unsafe_paths, noise_device=args.noise_device, compile=args.compile,
                    **{k: v for k, v in optional.items() if v is not None})


def _sweep(args: argparse.Namespace) -> Sweep:
    sweep = Sweep() if args.sweep_file is None else _parsed("--sweep-file", args.sweep_file, load_sweep_file)
    for flag, texts in (("--sweep", args.sweep), ("--sweep-zip", args.sweep_zip)):
        for text in texts:
            _parsed(flag, text, lambda t, zipped=flag == "--sweep-zip": sweep.add_assignment(t, zipped=zipped))
    if sweep.zipped:
        _parsed("--sweep-zip", " ".join(args.sweep_zip), lambda _: sweep.combinations())  # same lengths
    return sweep


def _run_batch(args: argparse.Namespace, settings: Settings, overrides: list, sweep: Sweep, repeat: int,
               cluster: Any) -> int:
    is_batch = bool(sweep) or repeat > 1 or len(args.files) > 1 or any(p.is_dir() for p in args.files) \
        or cluster is not None
    events = _EventStream() if args.events else None
    progress = _Progress(enabled=sys.stderr.isatty() and not args.quiet)

    def on_event(kind: str, data: dict) -> None:
        progress(kind, data)
        if events:
            events(kind, data)

    session = Session(default_registry(), settings, cache=not args.no_cache, on_event=on_event)
    statuses = []
    for outcome in session.execute_many(args.files, sweep=sweep, repeat=repeat, overrides=overrides,
                                        manifest=is_batch, resume=not args.no_resume,
                                        fail_fast=args.fail_fast, allow_partial=args.partial, cluster=cluster):
        progress.close_steps()
        statuses.append(outcome.status)
        if outcome.result is None:
            log.info("%s: done in an earlier run, skipped", outcome.job.label)
            _emit(_done_report(outcome), args.json and not events)
            continue
        if is_batch:
            outcome.result.source = outcome.job.label
        report = outcome.result.to_report(job=outcome.job.id if is_batch else None)
        if events:
            events("job_report", report.model_dump(mode="json"))
        _report(outcome.result, args.json and not events, report)
    progress.close()
    return _exit_code(statuses)


def _done_report(outcome: JobResult) -> RunReport:
    line = outcome.manifest_line
    files = [{k: f[k] for k in ("path", "bytes", "sha256")} | {"reused": True} for f in line.get("files", ())]
    return RunReport(file=outcome.job.label, status="done", job=outcome.job.id, files=files)


def _exit_code(statuses: list[str]) -> int:
    if "invalid" in statuses:
        return EXIT_INVALID
    return EXIT_FAILED if "failed" in statuses else EXIT_OK


def _emit(report: RunReport, as_json: bool) -> None:
    if as_json:
        sys.stdout.buffer.write(report.model_dump_json().encode() + b"\n")
        sys.stdout.flush()


def _report(result: RunResult, as_json: bool, report: RunReport | None = None) -> None:
    _emit(report or result.to_report(), as_json)
    counts = {s: sum(r.status == s for r in result.nodes.values()) for s in ("executed", "cached", "disk")}
    for warning in result.warnings:
        log.warning("%s: warning: %s", result.source, warning.describe().removeprefix(f"{result.source}, "))
    if result.status == "ok":
        log.info("%s: ok in %.2fs (%d executed, %d cached in memory, %d from disk)", result.source,
                 result.seconds, counts["executed"], counts["cached"], counts["disk"])
    else:
        log.error("%s: %s", result.source, result.status)
        for error in result.errors:
            log.error("  - %s", error.describe().removeprefix(f"{result.source}, "))
    for f in result.files:
        log.info("  wrote %s", f)
    for node_id, output in result.outputs.items():
        if isinstance(output, ShownText):
            for text in output.text:
                log.info("  node %s shows: %s", node_id, text)


def _cache_command(settings: Settings, clear: bool, as_json: bool) -> int:
    disk = DiskCache(settings.cache_dir, settings.cache_size, settings.torch_device)
    removed = disk.clear() if clear else 0
    entries, size = disk.size()
    info = {"folder": str(settings.cache_dir), "entries": entries, "bytes": size,
            "limit_bytes": settings.cache_size, "removed": removed}
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(info) + b"\n")
    else:
        if clear:
            print(f"removed {removed} entries")
        print(f"{info['folder']}: {entries} entries, {size / 2**20:.1f} MiB of {settings.cache_size / 2**30:.1f} GiB")
    return EXIT_OK


def _list_nodes(as_json: bool) -> int:
    registry = default_registry()
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(registry.object_info(), option=orjson.OPT_INDENT_2) + b"\n")
        return EXIT_OK
    for name in registry:
        spec = registry.spec(name)
        ins = ", ".join(f"{i.name}: {i.type_name}" + ("" if i.is_required else "?") for i in spec.inputs)
        outs = ", ".join(f"{o.name}: {o.type_name}" for o in spec.outputs) or "-"
        print(f"{name}({ins}) -> {outs}")
    return EXIT_OK


class _Progress:
    """On a terminal: one bar for the batch, one for the current node's steps (tqdm)."""

    def __init__(self, enabled: bool):
        self.enabled, self.batch, self.steps, self.node = enabled, None, None, None

    def __call__(self, kind: str, data: dict) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if kind in ("job_start", "job_end") and data["total"] > 1 and self.batch is None:
            self.batch = tqdm(total=data["total"], desc="jobs", file=sys.stderr, position=0)
        if kind == "job_start" and self.batch is not None:
            self.batch.set_postfix_str(data["label"][-40:])
        elif kind == "job_end" and self.batch is not None:
            # Finished jobs, whichever worker ran them and in whatever order they end.
            self.batch.update(1)
        elif kind == "progress":
            if self.steps is None or self.node != data["node_id"]:
                self.close_steps()
                self.node = data["node_id"]
                self.steps = tqdm(total=data["max"], desc=f"node {self.node}", file=sys.stderr,
                                  position=1 if self.batch else 0, leave=False)
            self.steps.n = data["value"]
            self.steps.refresh()

    def close_steps(self) -> None:
        if self.steps is not None:
            self.steps.close()
            self.steps, self.node = None, None

    def close(self) -> None:
        self.close_steps()
        if self.batch is not None:
            self.batch.n = self.batch.total
            self.batch.close()
            self.batch = None


class _EventStream:
    """`--events ndjson`: every event as one JSON line on stdout, flushed as it happens."""

    def __call__(self, kind: str, data: dict) -> None:
        if kind == "preview_image":  # an image sent to a server's client: its size stands for it here
            data = {"node_id": data["node_id"], "bytes": len(data["png"])}
        sys.stdout.buffer.write(orjson.dumps({"event": kind, "time": round(time.time(), 3), **data},
                                             default=str) + b"\n")
        sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
