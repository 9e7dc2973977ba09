"""Where a run reads and writes, and on which device; plus the one rule for user-given paths."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MODELS_DIR_ENV = "RUN_GRAPH_MODELS_DIR"


def _default_models_dir() -> Path:
    return Path(os.environ.get(MODELS_DIR_ENV, "models"))


@dataclass
class Settings:
    output_dir: Path = Path("output")
    input_dir: Path = Path("input")
    models_dir: Path = field(default_factory=_default_models_dir)
    device: str = "auto"  # "auto" picks cuda when present, else cpu
    # Absolute paths and '..' in path inputs are refused unless the user allows them.
    allow_unsafe_paths: bool = False

    def __post_init__(self) -> None:
        self.output_dir, self.input_dir, self.models_dir = (
            Path(self.output_dir), Path(self.input_dir), Path(self.models_dir))

    def torch_device(self) -> str:
        if self.device != "auto":
            return self.device
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
