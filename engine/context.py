"""`NodeContext`: the narrow door through which a node touches the world."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .atomic import atomic_write, create_new
from .errors import RunCancelled
from .file_hashes import FileStamp, stamp_file
from .model_store import ModelStore
from .settings import Settings

EventSink = Callable[[str, dict], None]


@dataclass
class RunInfo:
    """Shared by every node of one run: what is being executed and what it recorded."""

    prompt: dict
    workflow: dict | None
    settings: Settings
    device: str
    events: EventSink
    cancel: threading.Event
    metadata: dict = field(default_factory=dict)  # {node id: what it recorded}, e.g. wildcard choices
    files: list[str] = field(default_factory=list)
    stamps: dict[str, FileStamp] = field(default_factory=dict)  # of each file written, by path
    provenance: dict = field(default_factory=dict)  # engine version, seeds, model hashes

    def provenance_record(self) -> dict:
        """What output files carry about how they were made (the PNG `run-graph` chunk)."""
        return {**self.provenance, "nodes": self.metadata}


class NodeContext:
    def __init__(self, run: RunInfo, models: ModelStore, node_id: str, node_type: str,
                 title: str | None):
        self.run, self.models = run, models
        self.node_id, self.node_type, self.title = node_id, node_type, title

    @property
    def settings(self) -> Settings:
        return self.run.settings

    @property
    def device(self) -> str:
        return self.run.device

    def check_cancelled(self) -> None:
        if self.run.cancel.is_set():
            raise RunCancelled(f"run cancelled during node {self.node_id} ({self.node_type})")

    def progress(self, done: int, total: int) -> None:
        """Report step progress (sampler steps...); also the point where a cancel is noticed."""
        self.run.events("progress", {"node_id": self.node_id, "value": done, "max": total})
        self.check_cancelled()

    def record(self, key: str, value: Any) -> None:
        """Keep a fact about this run (a seed, a wildcard choice) for its metadata."""
        self.run.metadata.setdefault(self.node_id, {})[key] = value

    def output_path(self, relative: str) -> Path:
        """A path inside the output folder; names that would leave it are refused."""
        return self.settings.output_path(relative)

    def write_file(self, path: Path, write: Callable[[Any], None]) -> Path:
        """Write `path` (inside the output folder) through a temporary file and a rename, so no
        half-written file is ever visible; an existing file of that name is replaced."""
        return self._written(atomic_write(self.settings.inside_output(path), write))

    def write_new_file(self, folder: Path, names: Iterable[str], write: Callable[[Any], None]) -> Path:
        """Write under the first of `names` that no file in `folder` has, claimed atomically:
        two runs saving the same series at once never get the same name."""
        return self._written(create_new(self.settings.inside_output(folder), names, write))

    def _written(self, path: Path) -> Path:
        self.run.files.append(str(path))
        self.run.stamps[str(path)] = stamp_file(path)
        self.run.events("file", {"node_id": self.node_id, "path": str(path)})
        return path
