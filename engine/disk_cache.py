"""Node outputs on disk, shared by every process that uses the same folder.

One entry is one safetensors file named by the key: the tensors, plus a JSON description of the
output's structure and a checksum in the header metadata. Nothing is ever unpickled: the types
an entry may name are the NodeOutput and EdgeValue classes already imported. Entries are written
atomically; an entry that fails its checksum, or cannot be read at all, is deleted and reported
as a miss, so it is recomputed. Least recently used entries go first when the folder outgrows
its size limit (a hit touches the file's mtime).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .atomic import TEMP_PREFIX, atomic_write
from .model_store import ModelHandle
from .node import EdgeValue, ItemList, NodeOutput
from .settings import package_version

log = logging.getLogger("run_graph.cache")
FORMAT = "run-graph-output/1"
SUFFIX = ".safetensors"


class NotPersistable(Exception):
    """The output holds something that is not data (a model handle, an arbitrary object)."""


def _known_types() -> dict[str, type]:
    found, stack = {}, [NodeOutput, EdgeValue]
    while stack:
        cls = stack.pop()
        found[f"{cls.__module__}:{cls.__qualname__}"] = cls
        stack.extend(cls.__subclasses__())
    return found


def _type_id(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")  # no tensor can exist before torch was imported
    return torch is not None and isinstance(value, torch.Tensor)


def encode(value: Any, tensors: dict[str, Any]) -> Any:
    """JSON-able structure for `value`; its tensors are moved into `tensors` (CPU, contiguous)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if _is_tensor(value):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().to("cpu").contiguous()
        return {"$tensor": name}
    if isinstance(value, ModelHandle):
        raise NotPersistable("model handles are recreated by their loader, never stored")
    if isinstance(value, (NodeOutput, EdgeValue)) and dataclasses.is_dataclass(value):
        fields = {f.name: encode(getattr(value, f.name), tensors) for f in dataclasses.fields(value) if f.init}
        return {"$type": _type_id(type(value)), "fields": fields}
    if isinstance(value, ItemList):
        return {"$items": [encode(v, tensors) for v in value]}
    if isinstance(value, (list, tuple)):
        items = [encode(v, tensors) for v in value]
        return {"$tuple": items} if isinstance(value, tuple) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"$dict": {k: encode(v, tensors) for k, v in value.items()}}
    raise NotPersistable(f"{type(value).__name__} is not plain data")


def decode(data: Any, tensors: dict[str, Any], types: dict[str, type]) -> Any:
    if isinstance(data, list):
        return [decode(v, tensors, types) for v in data]
    if not isinstance(data, dict):
        return data
    if "$tensor" in data:
        return tensors[data["$tensor"]]
    if "$items" in data:
        return ItemList(decode(v, tensors, types) for v in data["$items"])
    if "$tuple" in data:
        return tuple(decode(v, tensors, types) for v in data["$tuple"])
    if "$dict" in data:
        return {k: decode(v, tensors, types) for k, v in data["$dict"].items()}
    cls = types.get(data["$type"])
    if cls is None:
        raise ValueError(f"unknown output type {data['$type']}")
    return cls(**{k: decode(v, tensors, types) for k, v in data["fields"].items()})


def _checksum(structure: str, tensors: dict[str, Any]) -> str:
    digest = hashlib.blake2b(structure.encode(), digest_size=20)
    if tensors:
        import torch  # only entries with tensors need it: an output node's entry is plain JSON
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


@dataclasses.dataclass
class DiskEntry:
    output: Any
    records: dict | None
    bytes: int


def environment_tag(device: str) -> str:
    """What changes numerics without changing a graph: the engine and library versions, and the
    device (for GPUs, the model: kernels differ between them)."""
    parts = [FORMAT, f"device={device.split(':')[0]}"]
    if device.startswith("cuda"):
        import torch

        parts.append(torch.cuda.get_device_name(device))
    parts += [f"{package}={package_version(package)}" for package in ("run-graph", "torch", "diffusers", "transformers")]
    return ";".join(parts)


class DiskCache:
    def __init__(self, folder: Path, max_bytes: int, device: Callable[[], str]):
        self.folder = Path(folder) / "outputs"
        self.max_bytes = max_bytes
        self._device = device  # resolved on first use: "auto" costs a torch import
        self._salt: str | None = None
        # The folder's size as of the last scan plus what this process wrote since: a scan per
        # write would cost O(entries). Rescanned when over the limit, or after a minute, since
        # other processes write too.
        self._size_estimate: int | None = None
        self._scanned_at = 0.0

    @property
    def salt(self) -> str:
        if self._salt is None:
            self._salt = environment_tag(self._device())
        return self._salt

    def _path(self, signature: str) -> Path:
        key = hashlib.blake2b(f"{self.salt}/{signature}".encode(), digest_size=20).hexdigest()
        return self.folder / key[:2] / f"{key}{SUFFIX}"

    def get(self, signature: str) -> DiskEntry | None:
        """The entry, or None: absent, evicted by another process while being read, or damaged
        (then it is deleted, and the output recomputed)."""
        path = self._path(signature)
        try:
            from safetensors import safe_open

            # The header first, without torch: an output node's entry holds no tensors.
            with safe_open(str(path), framework="numpy") as handle:
                meta, names = handle.metadata() or {}, list(handle.keys())
            tensors = {}
            if names:
                with safe_open(str(path), framework="pt") as handle:
                    tensors = {name: handle.get_tensor(name) for name in names}
            if meta.get("format") != FORMAT or _checksum(meta["structure"], tensors) != meta["checksum"]:
                raise ValueError("checksum mismatch")
            structure = json.loads(meta["structure"])
            types = _known_types()
            output, records = (decode(structure[k], tensors, types) for k in ("output", "records"))
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - any damage means: recompute, never return it
            if not path.exists():
                return None  # evicted mid-read: a plain miss, not damage
            log.warning("cache entry %s is damaged (%s); recomputing", path.name, exc)
            path.unlink(missing_ok=True)
            return None
        try:
            os.utime(path)  # least recently used goes first
            return DiskEntry(output, records, path.stat().st_size)
        except FileNotFoundError:
            return DiskEntry(output, records, 0)  # evicted just now: the output read is still whole

    def touch(self, signature: str) -> None:
        try:
            os.utime(self._path(signature))
        except OSError:
            pass  # evicted by another process meanwhile: it is rewritten on the next miss

    def put(self, signature: str, output: Any, records: dict | None = None) -> int:
        """Store `output`; returns the bytes written, 0 when the output is not plain data."""
        from safetensors import serialize

        tensors: dict[str, Any] = {}
        try:
            structure = json.dumps({"output": encode(output, tensors), "records": encode(records, tensors)},
                                   sort_keys=True)
        except NotPersistable:
            return 0
        metadata = {"format": FORMAT, "structure": structure, "checksum": _checksum(structure, tensors)}
        if tensors:
            from safetensors.torch import save

            blob = save(tensors, metadata=metadata)
        else:
            blob = serialize({}, metadata=metadata)
        try:
            atomic_write(self._path(signature), lambda handle: handle.write(blob))
            if self._size_estimate is None or self._size_estimate + len(blob) > self.max_bytes \
                    or time.monotonic() - self._scanned_at > 60:
                self.evict()
            else:
                self._size_estimate += len(blob)
        except OSError as exc:  # a full or read-only disk costs speed, not the run
            log.warning("could not write the cache entry for %s: %s", signature[:12], exc)
            return 0
        return len(blob)

    def _files(self) -> list[os.DirEntry]:
        if not self.folder.exists():
            return []
        return [e for sub in os.scandir(self.folder) if sub.is_dir() for e in os.scandir(sub.path)]

    def entries(self) -> list[os.DirEntry]:
        return [e for e in self._files() if e.name.endswith(SUFFIX) and not e.name.startswith(TEMP_PREFIX)]

    def evict(self) -> None:
        """Drop least recently used entries beyond the size limit, and temp files that a killed
        process left behind, in one pass over the folder."""
        now, entries = time.time(), []
        for e in self._files():
            stat = e.stat()
            if e.name.startswith(TEMP_PREFIX):
                if now - stat.st_mtime > 3600:
                    Path(e.path).unlink(missing_ok=True)
            elif e.name.endswith(SUFFIX):
                entries.append((stat.st_mtime, stat.st_size, e.path))
        total = kept = 0
        for _, size, path in sorted(entries, reverse=True):
            total += size
            if total > self.max_bytes:
                Path(path).unlink(missing_ok=True)
            else:
                kept += size
        self._size_estimate, self._scanned_at = kept, time.monotonic()

    def size(self) -> tuple[int, int]:
        """(entries, bytes)."""
        sizes = [e.stat().st_size for e in self.entries()]
        return len(sizes), sum(sizes)

    def clear(self) -> int:
        removed = 0
        for entry in self.entries():
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
        return removed
