"""What a batch reads: files as given, folders as their .json and .png files."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

import orjson

from ..graph import Graph

WORKFLOW_SUFFIXES = (".json", ".png")


def expand_sources(sources: Iterable[str | Path | dict | Graph]) -> list[Path | dict | Graph]:
    """Files as given; folders become their .json and .png files, sorted, recursively. Prompts
    (dicts) and loaded graphs pass through."""
    found: list[Path | dict | Graph] = []
    for source in sources:
        if isinstance(source, (dict, Graph)):
            found.append(source)
            continue
        path = Path(source)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in WORKFLOW_SUFFIXES)
        else:
            found.append(path)
    return found


def source_digest(source: Any, graph: Graph | None) -> str:
    """A source's identity: the file's bytes, or for a prompt given in Python, its content."""
    if isinstance(source, Path):
        try:
            return hashlib.sha256(source.read_bytes()).hexdigest()
        except OSError:
            pass
    return hashlib.sha256(orjson.dumps(graph.to_prompt() if graph else str(source))).hexdigest()
