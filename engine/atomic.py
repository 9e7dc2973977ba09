"""Files appear whole or not at all: write a temporary file beside the target, then rename it
onto a fixed name (`atomic_write`) or link it to the first free name of a series (`create_new`).
Series are ComfyUI's numbered names, `<stem>_00001_<suffix>` (`numbered`, `next_number`)."""
from __future__ import annotations

import errno
import itertools
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

TEMP_PREFIX = ".tmp-"
NAMES_LOCK = ".run-graph-names.lock"


def _write_temp(folder: Path, suffix: str, write: Callable[[Any], None]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write(path: Path, write: Callable[[Any], None]) -> Path:
    """Call `write(handle)` on a temporary file in `path`'s folder and rename it onto `path`.
    A process killed half-way leaves at most a `.tmp-…` file, never a partial `path`."""
    tmp = _write_temp(path.parent, path.suffix, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def create_new(folder: Path, names: Iterable[str], write: Callable[[Any], None]) -> Path:
    """Write a file under the first of `names` that no file has yet, and return its path.

    Another process (or session) saving the same series at the same time can never get the
    same name: a name is claimed by hard-linking the finished temporary file to it, which fails
    when the name exists. Where the file system has no hard links, a lock file in the folder
    serialises the claims instead.
    """
    tmp = None
    try:
        for name in names:
            target = folder / name
            if target.exists():
                continue
            if tmp is None:
                tmp = _write_temp(folder, target.suffix, write)
            try:
                os.link(tmp, target)
                return target
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
                if (claimed := _claim_under_lock(folder, tmp, target)) is not None:
                    tmp = None  # renamed onto the target
                    return claimed
        raise FileExistsError(f"every candidate name in {folder} is taken")
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


NUMBERED = re.compile(r"^(?P<stem>.*)_(?P<number>\d{5,})_(?P<suffix>\.\w+)$")


def numbered(stem: str, suffix: str, start: int) -> Iterator[str]:
    """ComfyUI's names for a series, from `start` on: `<stem>_00007_<suffix>`, ..."""
    return (f"{stem}_{n:05}_{suffix}" for n in itertools.count(start))


def next_number(folder: Path, stem_pattern: str, suffix: str) -> int:
    """One past the highest number of the series in `folder` (1 for none); `stem_pattern` is a
    regular expression, so a stem may stand for several (ComfyUI's `%batch_num%`)."""
    pattern = re.compile(stem_pattern + r"_(\d{5,})_" + re.escape(suffix) + "$")
    names = [entry.name for entry in os.scandir(folder)] if folder.is_dir() else []
    return max((int(m.group(1)) for name in names if (m := pattern.match(name))), default=0) + 1


def _claim_under_lock(folder: Path, tmp: Path, target: Path) -> Path | None:
    from filelock import FileLock

    with FileLock(str(folder / NAMES_LOCK)):
        if target.exists():
            return None
        os.replace(tmp, target)
        return target
