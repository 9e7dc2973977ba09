"""Where a run reads and writes, and on which device; plus the one rule for user-given paths."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .file_hashes import FileHashes

MODELS_DIR_ENV = "RUN_GRAPH_MODELS_DIR"
CACHE_DIR_ENV = "RUN_GRAPH_CACHE_DIR"
DEFAULT_CACHE_SIZE = 20 * 2**30
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30,
          "t": 2**40, "tb": 2**40}


def package_version(name: str) -> str:
    """An installed distribution's version, read from its metadata (no import), or "none"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "none"


def _default_models_dir() -> Path:
    return Path(os.environ.get(MODELS_DIR_ENV, "models"))


def _default_cache_dir() -> Path:
    if CACHE_DIR_ENV in os.environ:
        return Path(os.environ[CACHE_DIR_ENV])
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("run-graph"))


def parse_size(text: str | int) -> int:
    """Bytes from `123`, `500MB`, `20G`, `1.5GiB` (binary units)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*?)(?:i?[bB])?\s*", text)
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 500MB, 20GB)")
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass
class Settings:
    output_dir: Path = Path("output")
    input_dir: Path = Path("input")
    models_dir: Path = field(default_factory=_default_models_dir)
    device: str = "auto"  # "auto" picks cuda when present, else cpu
    # Absolute paths and '..' in path inputs are refused unless the user allows them.
    allow_unsafe_paths: bool = False
    # Node outputs persist here between processes; None keeps them in memory only.
    cache_dir: Path | None = field(default_factory=_default_cache_dir)
    cache_size: int = DEFAULT_CACHE_SIZE  # bytes; least recently used entries go beyond it
    # Loaded models stay within these (bytes); None: 3/4 of RAM, 85% of the GPU's memory.
    ram_budget: int | None = None
    vram_budget: int | None = None
    _hashes: FileHashes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.output_dir, self.input_dir, self.models_dir = (
            Path(self.output_dir), Path(self.input_dir), Path(self.models_dir))
        self.cache_dir = Path(self.cache_dir) if self.cache_dir is not None else None
        self.cache_size = parse_size(self.cache_size)
        self.ram_budget, self.vram_budget = (None if b is None else parse_size(b)
                                             for b in (self.ram_budget, self.vram_budget))

    def file_sha256(self, path: Path | str) -> str:
        """Content hash of a (model) file, remembered in the cache folder by size and mtime."""
        if self._hashes is None:
            self._hashes = FileHashes(self.cache_dir)
        return self._hashes.sha256(path)

    def torch_device(self) -> str:
        if self.device != "auto":
            return self.device
        if package_version("torch").endswith("+cpu"):
            return "cpu"  # a CPU-only build: known without the second it takes to import torch
        import torch  # deferred: the engine core runs without touching torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def contained_path(self, root: Path, name: str, what: str = "path") -> Path:
        """`root/name`, refusing names that leave `root` unless unsafe paths are allowed."""
        candidate = Path(name)
        if self.allow_unsafe_paths:
            return candidate if candidate.is_absolute() else root / candidate
        if candidate.is_absolute() or ".." in candidate.parts:
            raise UnsafePathError(f"{what} {name!r} leaves {root}; use a name inside it "
                                  "(or allow unsafe paths explicitly)")
        resolved = (root / candidate).resolve()
        if not resolved.is_relative_to(root.resolve()):
            raise UnsafePathError(f"{what} {name!r} resolves outside {root}")
        return root / candidate


class UnsafePathError(ValueError):
    pass
