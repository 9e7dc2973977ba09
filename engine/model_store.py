"""Loaded models, shared by every run of a session: loaded once, on first use, by handle, and
kept within a memory budget.

Tiers: a model lives on its device (a GPU), in CPU memory, or nowhere. When a node asks for a
model that does not fit, the least recently used models that no running node holds make room:
on a GPU they move to CPU memory, and in CPU memory they are dropped (they reload from disk if
needed again). A model moves to its device when a node asks for it, and stays there until
another needs the room. So a workflow whose models do not all fit still runs: the text encoder
leaves before the UNet arrives.
"""
from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from contextlib import contextmanager
from typing import Any, Hashable, Iterator, Protocol, runtime_checkable

from .errors import ModelLoadError

log = logging.getLogger("run_graph.models")


@runtime_checkable
class ModelHandle(Protocol):
    """What loader nodes return: a cheap description of a model, not its weights. A handle may
    also offer `device` (where the model runs) and `estimated_bytes()` (its size once loaded)."""

    @property
    def cache_key(self) -> Hashable: ...

    def load(self) -> Any: ...


def _modules(model: Any) -> list:
    import torch

    parts = model if isinstance(model, (tuple, list)) else (model,)
    return [p for p in parts if isinstance(p, torch.nn.Module)]


def model_bytes(model: Any) -> int:
    return sum(t.numel() * t.element_size() for m in _modules(model)
               for t in list(m.parameters()) + list(m.buffers()))


def _move(model: Any, device: str) -> None:
    for module in _modules(model):
        module.to(device)


def default_ram_budget() -> int:
    """Three quarters of the machine's memory: the rest is for activations and everything else."""
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 3 // 4


def default_vram_budget(device: str) -> int:
    import torch

    return torch.cuda.get_device_properties(device).total_memory * 85 // 100


class RamSharer(Protocol):
    """Something else that holds CPU memory under the same budget (the output cache): it gives
    way before any model is dropped."""

    bytes: int

    def shrink(self, max_bytes: int) -> None: ...


class Change:
    """A change in place that its maker has undone (see ModelStore.modifying)."""

    is_undone = False

    def undone(self) -> None:
        self.is_undone = True


class ModelStore:
    """Models by handle key, least recently used first out. Budgets are bytes; a None VRAM
    budget is 85% of the GPU's memory. Loading happens in `get`, never in loader nodes."""

    def __init__(self, ram_budget: int | None = None, vram_budget: int | None = None,
                 shares_ram_with: RamSharer | None = None):
        self.ram_budget = ram_budget if ram_budget is not None else default_ram_budget()
        self.vram_budget = vram_budget
        self.shares_ram_with = shares_ram_with
        self._models: OrderedDict[Hashable, Any] = OrderedDict()
        self._sizes: dict[Hashable, int] = {}
        self._device: dict[Hashable, str] = {}  # where each model is now: "cpu" or a GPU
        self._pinned: set[Hashable] = set()  # held by the running node
        # Being changed in place (a LoRA merged in): if the change is cut short, the weights are
        # not the file's any more, and the next `get` loads them again.
        self._dirty: set[Hashable] = set()
        self.load_counts: Counter = Counter()  # how often each key was loaded (tests, reports)
        self.log: list[tuple[str, Hashable]] = []  # ("load" | "offload" | "drop" | "to_device", key)

    def get(self, handle: ModelHandle) -> Any:
        """The model on its device, loaded or moved there if needed. It stays pinned (never
        evicted) until `release()`, which the executor calls after each node."""
        key = handle.cache_key
        device = getattr(handle, "device", "cpu")
        if key in self._dirty:
            log.warning("model %s was left half-changed by an interrupted run; loading it again", key)
            self._dirty.discard(key)
            self.drop(key)
        self._pinned.add(key)
        if key in self._models:
            self._models.move_to_end(key)
            if self._device[key] != device:
                self._make_room(device, self._sizes[key])
                _move(self._models[key], device)
                self._device[key] = device
                self.log.append(("to_device", key))
            return self._models[key]
        estimate = getattr(handle, "estimated_bytes", lambda: 0)()
        self._make_room(device, estimate)
        try:
            model = handle.load()
        except ModelLoadError as exc:
            exc.model_key = key  # which model: the executor names the node that chose its file
            raise
        self.load_counts[key] += 1
        self.log.append(("load", key))
        self._models[key], self._sizes[key], self._device[key] = model, model_bytes(model), device
        self._make_room(device, 0)  # the estimate may have been low
        return model

    def release(self) -> None:
        self._pinned.clear()

    @contextmanager
    def modifying(self, handle: ModelHandle) -> Iterator["Change"]:
        """Mark the model as changed in place for the block. The mark goes when the block ends
        normally, or when it calls `change.undone()` after putting the weights back (in its own
        `finally`). Anything that cuts that short, a KeyboardInterrupt in the middle of a
        restore say, leaves the mark, and the model is reloaded before anyone uses it again."""
        key = handle.cache_key
        change = Change()
        self._dirty.add(key)
        try:
            yield change
            change.undone()
        finally:
            if change.is_undone:
                self._dirty.discard(key)

    def _used(self, on_gpu: bool) -> int:
        models = sum(self._sizes[k] for k in self._models if (self._device[k] != "cpu") == on_gpu)
        return models if on_gpu or self.shares_ram_with is None else models + self.shares_ram_with.bytes

    def _make_room(self, device: str, needed: int) -> None:
        if device != "cpu":
            if self.vram_budget is None:
                self.vram_budget = default_vram_budget(device)
            for key in self._victims(on_gpu=True):
                if self._used(True) + needed <= self.vram_budget:
                    break
                self._make_room("cpu", self._sizes[key])
                _move(self._models[key], "cpu")
                self._device[key] = "cpu"
                self.log.append(("offload", key))
                log.info("model %s offloaded to CPU memory to make room", key)
        if device == "cpu":
            if self.shares_ram_with is not None and self._used(False) + needed > self.ram_budget:
                others = self.shares_ram_with.bytes
                self.shares_ram_with.shrink(max(0, others - (self._used(False) + needed - self.ram_budget)))
            for key in self._victims(on_gpu=False):
                if self._used(False) + needed <= self.ram_budget:
                    break
                self.drop(key)
                log.info("model %s dropped from memory to make room", key)

    def _victims(self, on_gpu: bool) -> list[Hashable]:
        return [k for k in self._models if k not in self._pinned and (self._device[k] != "cpu") == on_gpu]

    def drop(self, key: Hashable) -> None:
        if self._models.pop(key, None) is not None:
            self.log.append(("drop", key))
        self._sizes.pop(key, None)
        self._device.pop(key, None)
        import gc

        gc.collect()  # return the memory now, before the next model loads

    def clear(self) -> None:
        for key in list(self._models):
            self.drop(key)

    def sizes(self) -> dict[Hashable, int]:
        """{key: bytes} of the models held now."""
        return dict(self._sizes)

    def resident(self) -> dict[Hashable, str]:
        """{key: where it is now}, least recently used first."""
        return {k: self._device[k] for k in self._models}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._models
