"""One batch per output folder: `<folder>/.run-graph.lock` names the batch that holds it."""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from ..atomic import TEMP_PREFIX
from ..errors import EngineError

LOCK_NAME = ".run-graph.lock"


class FolderBusy(EngineError):
    """Another batch writes to this output folder. Not bad input: the same command succeeds once
    the other batch ends (the CLI exits 75, EX_TEMPFAIL)."""

    def __init__(self, folder: Path, holder: str):
        self.folder, self.holder = folder, holder
        super().__init__(f"output folder {folder} is in use by another run-graph batch ({holder}); "
                         "wait for it to finish or use another --output-dir")


@contextmanager
def output_folder_lock(folder: Path):
    """Hold the folder's lock; then remove the temp files a killed batch left."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    with open(path, "a+b") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; temp files are left alone
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise FolderBusy(folder, _holder(path)) from exc
        handle.truncate(0)
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                 "command": " ".join(sys.argv)}).encode())
        handle.flush()
        for stale in folder.rglob(f"{TEMP_PREFIX}*"):
            stale.unlink(missing_ok=True)
        yield


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on {info['host']} since {info['since']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"
