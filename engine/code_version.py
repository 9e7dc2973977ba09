"""A digest of the code behind a node class, for cache keys: after an upgrade or a `git pull`
that changes how a node computes, its persisted outputs must miss, even where nobody bumped the
class's `version`.

The digest covers the source of every module in the class's own folder (its family: nodes there
call each other's helpers, often through imports inside functions) and, following module-level
imports, every module of the same top-level package those modules use.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import sys
from pathlib import Path
from types import ModuleType


@functools.lru_cache(maxsize=None)
def code_digest(cls: type) -> str:
    module = sys.modules[cls.__module__]
    root = cls.__module__.split(".")[0]
    sources: dict[str, bytes] = {}
    folder = Path(getattr(module, "__file__", "") or "").parent
    if folder.is_dir():
        for path in sorted(folder.glob("*.py")):
            sources[str(path)] = path.read_bytes()
    stack, seen = [module], set()
    while stack:
        current = stack.pop()
        if current.__name__ in seen:
            continue
        seen.add(current.__name__)
        path = getattr(current, "__file__", None)
        if path and path not in sources:
            try:
                sources[path] = Path(path).read_bytes()
            except OSError:
                sources[path] = inspect.getsource(current).encode() if _has_source(current) else b""
        stack.extend(_package_modules_used(current, root))
    digest = hashlib.blake2b(digest_size=12)
    for path in sorted(sources):
        digest.update(Path(path).name.encode() + b"\0" + sources[path] + b"\0")
    return digest.hexdigest()


def _package_modules_used(module: ModuleType, root: str) -> list[ModuleType]:
    used = []
    for value in vars(module).values():
        name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
        if isinstance(name, str) and name.split(".")[0] == root and name in sys.modules:
            used.append(sys.modules[name])
    return used


def _has_source(module: ModuleType) -> bool:
    try:
        inspect.getsource(module)
    except (OSError, TypeError):
        return False
    return True
