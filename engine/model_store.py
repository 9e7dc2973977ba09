"""Loaded models, shared by every run of a session: loaded once, on first use, by handle."""
from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any, Hashable, Protocol


class ModelHandle(Protocol):
    """What loader nodes return: a cheap description of a model, not its weights."""

    @property
    def cache_key(self) -> Hashable: ...

    def load(self) -> Any: ...


class ModelStore:
    """Least-recently-used models by handle key. Loading happens in `get`, never in loaders."""

    def __init__(self, max_models: int = 6):
        self.max_models = max_models
        self._models: OrderedDict[Hashable, Any] = OrderedDict()
        self.load_counts: Counter = Counter()  # how often each key was loaded (tests, reports)

    def get(self, handle: ModelHandle) -> Any:
        key = handle.cache_key
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        model = handle.load()
        self.load_counts[key] += 1
        self._models[key] = model
        while len(self._models) > self.max_models:
            self._models.popitem(last=False)
        return model

    def drop(self, key: Hashable) -> None:
        self._models.pop(key, None)

    def clear(self) -> None:
        self._models.clear()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._models
