"""Files appear whole or not at all: write a temporary file beside the target, then rename."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

TEMP_PREFIX = ".tmp-"


def atomic_write(path: Path, write: Callable[[Any], None]) -> Path:
    """Call `write(handle)` on a temporary file in `path`'s folder and rename it onto `path`.
    A process killed half-way leaves at most a `.tmp-…` file, never a partial `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
