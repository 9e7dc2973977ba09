"""Where a run reads and writes, and on which device; plus the one policy for user-given paths.

Path policy (every node that takes a file name goes through `model_file`, `input_file` (or
`annotated_file`) or `output_path`):
- Writing: only inside the output folder, always. No setting lifts this.
- Model files: a name inside `<models>/<folder>`. An absolute path to a file that exists is read
  where it is when `allow_absolute_model_paths` is on (the CLI and Python default; the server
  turns it off), with a log line.
- Input files: a name inside the input folder; elsewhere only with `allow_unsafe_paths`. A name
  ending in ` [output]` or ` [temp]` (the web UI's) is read from inside the output folder.
- Either kind: a path from another machine (Windows `D:\\models\\x.ckpt` or POSIX) that cannot be
  used as it is falls back to the file of the same base name in the folder, with a log line.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from .file_hashes import FileHashes

log = logging.getLogger("run_graph.paths")
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
    # Input files outside the input folder (absolute paths, '..') are refused unless allowed.
    allow_unsafe_paths: bool = False
    # Model files named by an absolute path that exists are read where they are.
    allow_absolute_model_paths: bool = True
    # Where samplers draw initial noise: None lets each node's widget decide; "cpu" or "device"
    # overrides every sampler that offers the choice.
    noise_device: str | None = None
    # torch.compile the diffusion models where loaders support it: slower first run, faster after.
    compile: bool = False
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

        if self.noise_device not in (None, "cpu", "device"):
            raise ValueError(f"noise device must be cpu or device, not {self.noise_device!r}")

    def contained_path(self, root: Path, name: str, what: str = "path", follow_links: bool = False) -> Path:
        """`root/name`, refusing names that leave `root` (absolute, '..', or, unless
        `follow_links`, a link out)."""
        candidate = Path(name.replace("\\", "/")) if not _is_absolute(name) else Path(name)
        if _is_absolute(name) or ".." in candidate.parts:
            raise UnsafePathError(f"{what} {name!r} leaves {root}; use a name inside it")
        return root / candidate if follow_links else _inside(root, root / candidate, f"{what} {name!r}")

    def output_path(self, relative: str, what: str = "output path") -> Path:
        """A path inside the output folder. Nothing is ever written anywhere else."""
        return self.contained_path(self.output_dir, relative, what)

    def inside_output(self, path: Path) -> Path:
        """`path` as it is, if it lies inside the output folder once links are resolved."""
        return _inside(self.output_dir, Path(path), str(path))

    def model_file(self, folder: str, name: str, what: str = "model file") -> Path:
        """An existing model file: `<models>/<folder>/<name>`, or an absolute path (see the policy).
        Links the user placed in the models folder are followed, as ComfyUI follows them (a
        checkpoint folder on another disk); the name itself must still stay inside."""
        return self._existing_file(self.models_dir / folder, name, what, self.allow_absolute_model_paths,
                                   "absolute model paths are not allowed here", follow_links=True)

    def input_file(self, name: str, what: str = "input file") -> Path:
        """An existing file in the input folder (elsewhere only with allow_unsafe_paths)."""
        return self._existing_file(self.input_dir, name, what, self.allow_unsafe_paths,
                                   "allow unsafe paths to read it where it is")

    def annotated_file(self, name: str, what: str = "input file", folder: str = "input") -> Path:
        """An existing file named as ComfyUI's web UI names them: `name [output]` in the output
        folder, `name [temp]` among the previews, `name [input]` or a plain name in `folder`'s."""
        for suffix in (" [input]", " [output]", " [temp]"):
            if name.endswith(suffix):
                name, folder = name[:-len(suffix)], suffix[2:-1]
                break
        if folder == "input":
            return self.input_file(name, what)
        root = self.output_dir if folder == "output" else self.output_dir / "previews"
        return self._existing_file(root, name, what, False, "only files inside it are read")

    def _existing_file(self, root: Path, name: str, what: str, may_leave: bool, refusal: str,
                       follow_links: bool = False) -> Path:
        if not _is_absolute(name) and not (may_leave and ".." in Path(name).parts):
            path = self.contained_path(root, name, what, follow_links)
            if not path.is_file():
                raise FileNotFoundError(f"{what} {name!r}: no such file in {root}")
            return path
        outside = Path(name)
        if may_leave and outside.is_file():
            log.info("%s: reading %s, outside %s", what, outside, root)
            return outside
        fallback = root / base_name(name)
        if fallback.is_file():
            log.info("%s %s: using %s, the file of the same name in %s", what, name, fallback, root)
            return fallback
        if outside.is_file():
            raise UnsafePathError(f"{what} {name!r} is outside {root} and {refusal}; "
                                  f"copy it into {root}")
        raise FileNotFoundError(f"{what} {name!r}: no such file, nor {base_name(name)!r} in {root}")


def _inside(root: Path, path: Path, what: str) -> Path:
    if not path.resolve().is_relative_to(root.resolve()):
        raise UnsafePathError(f"{what} resolves outside {root}")
    return path


def _is_absolute(name: str) -> bool:
    """Absolute on POSIX or on Windows (`D:\\x`, `\\\\server\\share`), wherever we run."""
    return PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() \
        or bool(PureWindowsPath(name).drive)


def base_name(name: str) -> str:
    """The file name at the end of a Windows or POSIX path."""
    return PureWindowsPath(name).name if "\\" in name or PureWindowsPath(name).drive else PurePosixPath(name).name


class UnsafePathError(ValueError):
    pass
