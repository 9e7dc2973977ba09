"""`manifest.jsonl`: one JSON object per finished job, appended and synced line by line.

A rerun of the same batch skips a job only when its last line says ok and every file it lists
is still what was written (size, and modification time or else SHA-256)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson

from ..file_hashes import is_intact

MANIFEST_NAME = "manifest.jsonl"


class Manifest:
    def __init__(self, path: Path):
        self.path = path

    def finished(self) -> dict[str, dict]:
        """Jobs that ended ok and whose files are all intact, by job id (the last line wins)."""
        done: dict[str, dict] = {}
        if not self.path.exists():
            return done
        for raw in self.path.read_bytes().splitlines():
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue  # the line a killed process was writing
            if line.get("status") == "ok" and all(_file_intact(f) for f in line.get("files", ())):
                done[line["job"]] = line
            else:
                done.pop(line.get("job"), None)
        return done

    def append(self, line: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as handle:  # appends go to the end whatever the position
            if handle.seek(0, 2):
                handle.seek(-1, 2)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")  # after a torn last line, start a fresh one
            handle.write(orjson.dumps(line) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())


def _file_intact(entry: Any) -> bool:
    try:
        return is_intact(entry["path"], (entry["bytes"], entry["mtime_ns"], entry["sha256"]))
    except (KeyError, TypeError):
        return False  # a line from an older version, without stamps: run the job again


def manifest_line(job: Any, result: Any, **extra: Any) -> dict:
    return {
        "job": job.id, "source": job.source, "overrides": {f"{n}.{i}": v for n, i, v in job.overrides},
        "seeds": result.provenance.get("seeds", {}), "status": result.status,
        "files": result.file_reports(with_mtime=True),
        "seconds": round(result.seconds, 6),
        "nodes": {s: sum(r.status == s for r in result.nodes.values()) for s in ("executed", "cached", "disk")},
        "errors": [e.describe() for e in result.errors],
        "warnings": [e.describe() for e in result.warnings],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
