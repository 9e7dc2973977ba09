"""Node outputs kept between runs, keyed by node signature (never by node id): an in-memory LRU
in front of an optional on-disk cache shared across processes (disk_cache.py)."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .disk_cache import DiskCache


@dataclass
class CacheHit:
    output: Any
    records: dict | None  # what the node recorded for the run's metadata (seeds, choices)
    bytes: int  # size of the entry on disk, 0 when it was not written there
    source: str = "cached"  # "cached" (this process's memory) or "disk"


class OutputCache:
    """Least-recently-used outputs in memory, bounded by entry count, backed by `disk` if given."""

    def __init__(self, max_entries: int = 512, disk: DiskCache | None = None):
        self.max_entries = max_entries
        self.disk = disk
        self._entries: OrderedDict[str, CacheHit] = OrderedDict()

    def lookup(self, signature: str) -> CacheHit | None:
        hit = self._entries.get(signature)
        if hit is not None:
            self._entries.move_to_end(signature)
            if self.disk is not None and hit.bytes:
                self.disk.touch(signature)  # still in use: not the disk's least recent
            return CacheHit(hit.output, hit.records, hit.bytes, "cached")
        if self.disk is None or (entry := self.disk.get(signature)) is None:
            return None
        self._remember(signature, CacheHit(entry.output, entry.records, entry.bytes))
        return CacheHit(entry.output, entry.records, entry.bytes, "disk")

    def store(self, signature: str, output: Any, records: dict | None = None) -> int:
        """Keep `output`; returns the bytes written to disk (0: memory only)."""
        written = self.disk.put(signature, output, records) if self.disk else 0
        self._remember(signature, CacheHit(output, records, written))
        return written

    def _remember(self, signature: str, hit: CacheHit) -> None:
        self._entries[signature] = hit
        self._entries.move_to_end(signature)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget what is in memory; the disk cache has its own `clear`."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class NullCache:
    """Remembers nothing: every run executes every needed node."""

    max_entries = 0
    disk = None

    def lookup(self, signature: str) -> None:
        return None

    def store(self, signature: str, output: Any, records: dict | None = None) -> int:
        return 0

    def clear(self) -> None:
        pass

    def __len__(self) -> int:
        return 0
