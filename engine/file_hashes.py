"""SHA-256 of files. Model files: computed once per (path, size, mtime) and remembered in the
cache folder, so that cache keys and provenance can name a model by its content at the cost of a
stat. Output files: a stamp (size, mtime, hash) taken when written, checked before they are
trusted again."""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from .atomic import atomic_write

INDEX_NAME = "file-hashes.json"
FileStamp = tuple[int, int, str]  # (bytes, mtime_ns, sha256)


def sha256_file(path: Path | str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def stamp_file(path: Path | str) -> FileStamp:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns, sha256_file(path)


def is_intact(path: Path | str, stamp: FileStamp | list) -> bool:
    """The file is still what was written: same size, and the same modification time or, when
    that moved (a copy, a touch), the same content."""
    size, mtime_ns, digest = stamp
    try:
        stat = os.stat(path)
        return stat.st_size == size and (stat.st_mtime_ns == mtime_ns or sha256_file(path) == digest)
    except OSError:
        return False


class FileHashes:
    def __init__(self, folder: Path | None):
        self.index_path = folder / INDEX_NAME if folder else None
        self._known: dict[str, list] | None = None
        self._lock = threading.Lock()

    def _load(self) -> dict[str, list]:
        if self._known is None:
            try:
                self._known = json.loads(self.index_path.read_text()) if self.index_path else {}
            except (OSError, ValueError):
                self._known = {}  # missing or damaged: hashes are recomputed, never trusted blindly
        return self._known

    def sha256(self, path: Path | str) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns]
        with self._lock:
            known = self._load()
            entry = known.get(str(path))
            if entry and entry[:2] == stamp:
                return entry[2]
        digest = sha256_file(path)
        with self._lock:
            known[str(path)] = stamp + [digest]
            if self.index_path:
                # Re-read first: another process may have added hashes since we loaded.
                try:
                    on_disk = json.loads(self.index_path.read_text())
                except (OSError, ValueError):
                    on_disk = {}
                known.update({k: v for k, v in on_disk.items() if k not in known})
                text = json.dumps(known, indent=0, sort_keys=True).encode()
                atomic_write(self.index_path, lambda handle: handle.write(text))
        return digest

    def __len__(self) -> int:
        with self._lock:
            return len(self._load())
