"""spandrel (the upscale-model library), even where torchvision cannot be imported: a CPU-only
torch next to PyPI's CUDA torchvision, or no torchvision at all.

spandrel's package imports `rotate` and `normalize` from torchvision at import time, for two
architectures only (LaMa, RestoreFormer). While it imports, stand-ins for those two take
torchvision's place; they refuse to run, and they are gone from `sys.modules` afterwards, so no
other library ever sees them. Every other architecture needs nothing from torchvision.
"""
from __future__ import annotations

import enum
import sys
import types
from contextlib import contextmanager

from engine import ModelLoadError

NEEDS_TORCHVISION = frozenset({"LaMa", "RestoreFormer"})
_STAND_IN_NAMES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")


def import_spandrel():
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    problem = _torchvision_problem()
    if problem is None:
        return _import_spandrel()
    with _torchvision_stand_ins(problem):
        return _import_spandrel()


def refuse_if_torchvision_is_needed(architecture) -> None:
    if architecture.id in NEEDS_TORCHVISION and (problem := _torchvision_problem()) is not None:
        raise ModelLoadError(f"{architecture.name} models need torchvision, which cannot be imported here "
                             f"({problem})")


def _torchvision_problem() -> str | None:
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a broken install raises RuntimeError, not ImportError
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


def _import_spandrel():
    try:
        import spandrel
    except ImportError as exc:
        raise ModelLoadError("upscale models need the spandrel package: pip install spandrel "
                             "(with a CPU-only torch: pip install --no-deps spandrel einops)") from exc
    return spandrel


@contextmanager
def _torchvision_stand_ins(problem: str):
    def refuse(*args, **kwargs):
        raise ModelLoadError(f"this upscale model's architecture needs torchvision, which cannot be imported "
                             f"here ({problem})")

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.rotate = functional.normalize = refuse
    functional.InterpolationMode = enum.Enum("InterpolationMode", "NEAREST BILINEAR BICUBIC")
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    package = types.ModuleType("torchvision")
    package.transforms = transforms
    saved = {name: sys.modules.get(name) for name in _STAND_IN_NAMES}
    sys.modules.update(zip(_STAND_IN_NAMES, (package, transforms, functional)))
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
