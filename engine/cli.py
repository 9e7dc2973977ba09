"""`run-graph`: a thin argparse wrapper over `Session`.

Exit codes: 0 every workflow ran; 2 bad input (unreadable or invalid workflow, missing model);
1 a runtime failure. Results go to stdout (`--json`: one object per file); logs and progress go
to stderr, and progress bars only appear on a terminal.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

import orjson

from .errors import EngineError
from .session import RunResult, Session, default_registry
from .disk_cache import DiskCache
from .settings import CACHE_DIR_ENV, MODELS_DIR_ENV, Settings

log = logging.getLogger("run_graph")
EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run-graph", description="Run ComfyUI workflows headless "
                                "(UI workflow JSON, API prompt JSON, or PNGs that carry them).")
    p.add_argument("files", nargs="*", type=Path, help="workflow files (.json or .png)")
    p.add_argument("--validate", action="store_true", help="check the files, run nothing")
    p.add_argument("--list-nodes", action="store_true",
                   help="list the node types and their inputs (object_info JSON with --json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="set an input by node id or title, e.g. 14.seed=42 or 'Kolors Sampler.steps=30'")
    p.add_argument("--output-dir", type=Path, default=Path("output"))
    p.add_argument("--input-dir", type=Path, default=Path("input"))
    p.add_argument("--models-dir", type=Path, default=None,
                   help=f"models folder in ComfyUI's layout (default ${MODELS_DIR_ENV} or ./models)")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1...")
    p.add_argument("--json", action="store_true", help="print one JSON object per file on stdout")
    p.add_argument("--partial", action="store_true",
                   help="run the outputs that are valid even when others are not (as ComfyUI does)")
    p.add_argument("--allow-unsafe-paths", action="store_true",
                   help="allow absolute paths and '..' in path inputs")
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
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    try:
        return _main(args)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
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
    optional = {"models_dir": args.models_dir, "cache_dir": args.cache_dir, "cache_size": args.cache_size,
                "ram_budget": args.ram_budget, "vram_budget": args.vram_budget}
    try:
        settings = Settings(output_dir=args.output_dir, input_dir=args.input_dir, device=args.device,
                            allow_unsafe_paths=args.allow_unsafe_paths,
                            **{k: v for k, v in optional.items() if v is not None})
    except ValueError as exc:
        log.error("run-graph: %s", exc)
        return EXIT_INVALID
    if args.cache_info or args.clear_cache:
        return _cache_command(settings, args.clear_cache, args.json)
    if not args.files:
        log.error("run-graph: no workflow file given (see run-graph --help)")
        return EXIT_INVALID
    progress = _Progress(enabled=sys.stderr.isatty() and not args.quiet)
    session = Session(default_registry(), settings, cache=not args.no_cache, on_event=progress)
    statuses = []
    for path in args.files:
        if args.validate:
            result = session.validate(path, overrides=args.overrides)
        else:
            result = session.execute(path, overrides=args.overrides, allow_partial=args.partial,
                                     raise_on_error=False)
        progress.close()
        statuses.append(result.status)
        _report(result, args.json)
    if "invalid" in statuses:
        return EXIT_INVALID
    return EXIT_FAILED if "failed" in statuses else EXIT_OK


def _report(result: RunResult, as_json: bool) -> None:
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(result.to_report()) + b"\n")
        sys.stdout.flush()
    counts = {s: sum(r.status == s for r in result.nodes.values()) for s in ("executed", "cached", "disk")}
    if result.status == "ok":
        log.info("%s: ok in %.2fs (%d executed, %d cached in memory, %d from disk)", result.source,
                 result.seconds, counts["executed"], counts["cached"], counts["disk"])
    else:
        log.error("%s: %s", result.source, result.status)
        for error in result.errors:
            log.error("  - %s", error.describe().removeprefix(f"{result.source}, "))
    for f in result.files:
        log.info("  wrote %s", f)


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
    """Step bars on a terminal (tqdm), silence elsewhere."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar, self.node = enabled, None, None

    def __call__(self, kind: str, data: dict) -> None:
        if not self.enabled or kind != "progress":
            return
        from tqdm import tqdm

        if self.bar is None or self.node != data["node_id"]:
            self.close()
            self.node = data["node_id"]
            self.bar = tqdm(total=data["max"], desc=f"node {self.node}", file=sys.stderr, leave=False)
        self.bar.n = data["value"]
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.node = None, None
if __name__ == "__main__":
    raise SystemExit(main())
