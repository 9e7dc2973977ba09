"""Node outputs kept between runs, keyed by node signature (never by node id): an in-memory LRU
bounded in bytes, in front of an optional on-disk cache shared across processes (disk_cache.py).

The memory part counts against the model store's RAM budget: when a model needs room, cached
outputs leave first (the disk still has them)."""
from __future__ import annotations

import dataclasses
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .disk_cache import DiskCache


@dataclass
class CacheHit:
    output: Any
    records: dict | None  # {signature: what it recorded} for the node and its ancestors (seeds, choices)
    bytes: int  # size of the entry on disk, 0 when it was not written there
    source: str = "cached"  # "cached" (this process's memory) or "disk"
    memory: int = 0  # what holding the output costs in RAM


def memory_bytes(value: Any) -> int:
    """What an output holds in CPU memory: its tensors and arrays (model handles count 0: the
    model store accounts for models)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.numel() * value.element_size() if value.device.type == "cpu" else 0
    if hasattr(value, "nbytes") and hasattr(value, "dtype"):  # numpy
        return int(value.nbytes)
    if isinstance(value, (str, bytes)):
        return len(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(memory_bytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, (list, tuple)):
        return sum(memory_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(memory_bytes(v) for v in value.values())
    return 0


class OutputCache:
    """Least-recently-used outputs in memory, at most `max_bytes` of them, backed by `disk`."""

    def __init__(self, max_bytes: int = 2**30, disk: DiskCache | None = None):
        self.max_bytes = max_bytes
        self.disk = disk
        self.bytes = 0
        self._entries: OrderedDict[str, CacheHit] = OrderedDict()

    def lookup(self, signature: str) -> CacheHit | None:
        hit = self._entries.get(signature)
        if hit is not None:
            self._entries.move_to_end(signature)
            if self.disk is not None and hit.bytes:
                self.disk.touch(signature)  # still in use: not the disk's least recent
            return dataclasses.replace(hit, source="cached")
        if self.disk is None or (entry := self.disk.get(signature)) is None:
            return None
        self._remember(signature, CacheHit(entry.output, entry.records, entry.bytes))
        return CacheHit(entry.output, entry.records, entry.bytes, "disk")

    def holds(self, signature: str) -> bool:
        """In memory now (no disk read, no recency change): ComfyUI's sense of "cached"."""
        return signature in self._entries

    def store(self, signature: str, output: Any, records: dict | None = None) -> int:
        """Keep `output`; returns the bytes written to disk (0: memory only)."""
        written = self.disk.put(signature, output, records) if self.disk else 0
        self._remember(signature, CacheHit(output, records, written))
        return written

    def _remember(self, signature: str, hit: CacheHit) -> None:
        self.forget(signature)
        hit.memory = memory_bytes(hit.output) + memory_bytes(hit.records)
        self._entries[signature] = hit
        self.bytes += hit.memory
        self.shrink(self.max_bytes)

    def forget(self, signature: str) -> None:
        old = self._entries.pop(signature, None)
        if old is not None:
            self.bytes -= old.memory

    def shrink(self, max_bytes: int) -> None:
        """Drop least recently used outputs until at most `max_bytes` remain. The newest entry
        stays even when it alone is larger: the run that made it is about to use it."""
        while self.bytes > max_bytes and len(self._entries) > 1:
            _, old = self._entries.popitem(last=False)
            self.bytes -= old.memory

    def clear(self) -> None:
        """Forget what is in memory; the disk cache has its own `clear`."""
        self._entries.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)


class NullCache:
    """Remembers nothing: every run executes every needed node."""

    max_bytes = bytes = 0
    disk = None

    def lookup(self, signature: str) -> None:
        return None

    def holds(self, signature: str) -> bool:
        return False

    def store(self, signature: str, output: Any, records: dict | None = None) -> int:
        return 0

    def shrink(self, max_bytes: int) -> None:
        pass

    def clear(self) -> None:
        pass

    def __len__(self) -> int:
        return 0
