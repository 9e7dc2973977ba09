"""In-memory output cache keyed by node signature (never by node id)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any


class MemoryCache:
    """Least-recently-used map from signature to node output, bounded by entry count."""

    def __init__(self, max_entries: int = 512):
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Any] = OrderedDict()

    def get(self, signature: str) -> Any | None:
        value = self._entries.get(signature)
        if value is not None:
            self._entries.move_to_end(signature)
        return value

    def put(self, signature: str, value: Any) -> None:
        self._entries[signature] = value
        self._entries.move_to_end(signature)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class NullCache:
    """Remembers nothing: every run executes every needed node."""

    max_entries = 0

    def get(self, signature: str) -> None:
        return None

    def put(self, signature: str, value: Any) -> None:
        pass

    def clear(self) -> None:
        pass

    def __len__(self) -> int:
        return 0
