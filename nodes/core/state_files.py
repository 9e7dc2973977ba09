"""Tensor files: names and shapes without loading, tensors by name prefix.

safetensors files are read lazily (a 7 GB checkpoint's VAE costs only the VAE); pickles
(`.ckpt`, `.pt`) go through `torch.load(weights_only=True)`, so nothing in them is run.
"""
from __future__ import annotations

import re
from pathlib import Path

from engine import ModelLoadError


class CheckpointFile:
    """Names, shapes and (lazily) tensors of a .safetensors or .ckpt file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._tensors: dict | None = None
        self._raw = None
        try:
            with open(self.path, "rb") as file:
                self.is_safetensors = file.read(9)[8:] == b"{"
            if self.is_safetensors:
                from safetensors import safe_open

                with safe_open(str(self.path), framework="pt") as handle:
                    self.shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
            else:
                self._raw = _load_pickle(self.path)
                flat = self._raw.get("state_dict", self._raw) if isinstance(self._raw, dict) else {}
                self._tensors = {k: v for k, v in flat.items() if hasattr(v, "shape")} if isinstance(flat, dict) else {}
                self.shapes = {k: tuple(v.shape) for k, v in self._tensors.items()}
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors and torch raise many kinds
            raise ModelLoadError(f"cannot read checkpoint {self.path}: {type(exc).__name__}: {str(exc)[:300]}") from exc

    def raw(self):
        """The pickle's top-level object (textual-inversion files nest their tensors)."""
        return self._raw

    def tensors(self, prefix: str, strip: bool = True) -> dict:
        """Every tensor whose name starts with `prefix` (the prefix removed when `strip`)."""
        cut = len(prefix) if strip else 0
        if self._tensors is not None:
            return {k[cut:]: v for k, v in self._tensors.items() if k.startswith(prefix)}
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as handle:
            return {k[cut:]: handle.get_tensor(k) for k in self.shapes if k.startswith(prefix)}


def _load_pickle(path: Path):
    import pickle

    import torch

    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # old (non-zip) pickles cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused something in the file
        reason = re.search(r"WeightsUnpickler error: ([^.\n]*)", str(exc))
        raise ModelLoadError(f"refused to load {path}: it is not a plain tensor file, nothing in it was run "
                             f"({reason.group(1) if reason else type(exc).__name__})") from exc


_SAFETENSORS_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
                       "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
                       "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}


def write_safetensors(handle, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """`tensors` in the safetensors format, written to an open binary file one tensor at a time,
    so a checkpoint never needs a second copy in memory (safetensors' own `save` builds the
    whole file as bytes first)."""
    import json

    import torch

    header, offset = {}, 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[str(tensor.dtype).removeprefix("torch.")],
                        "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    handle.write(len(encoded).to_bytes(8, "little") + encoded)
    for tensor in tensors.values():
        data = tensor.detach().to("cpu").contiguous()
        handle.write(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
