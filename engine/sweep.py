"""Parameter sweeps: `--sweep 14.seed=1..100`, `--sweep "12.prompt=@prompts.txt"`, JSON lists,
product and zip of several axes, by node id or title, from the command line or a sweep file.

A sweep file (JSON or YAML) maps targets to values under `product` and/or `zip`:

    product: {"14.seed": "1..3", "Kolors Sampler.cfg": [4, 6]}
    zip: {"12.prompt": "@prompts.txt", "12.negative_prompt": "@negatives.txt"}

Zipped axes advance together (they must be the same length) and form one axis of the product.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .errors import EngineError
from .overrides import parse_assignment

Assignment = tuple[str, str, Any]  # (node id or title, input, value)
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?::(\d+))?$")


class SweepError(EngineError):
    pass


def parse_values(raw: Any, base: Path = Path(".")) -> list:
    """`1..100` (inclusive; `1..100:5` steps by 5), `@file` (one value per non-empty line),
    a JSON list, or a single value."""
    if isinstance(raw, list):
        return raw
    if not isinstance(raw, str):
        return [raw]
    if m := _RANGE.match(raw.strip()):
        start, stop, step = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
        if step < 1:
            raise SweepError(f"range {raw!r}: the step after ':' must be at least 1")
        return list(range(start, stop + 1, step) if start <= stop else range(start, stop - 1, -step))
    if raw.startswith("@"):
        path = base / raw[1:]
        try:
            return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as exc:
            raise SweepError(f"sweep values file {path}: {exc.strerror or exc}") from exc
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return [raw]
    return value if isinstance(value, list) else [value]


def _split_target(target: str) -> tuple[str, str]:
    node_key, _, input_name = target.rpartition(".")
    if not node_key or not input_name:
        raise SweepError(f"sweep target {target!r}: expected NODE.INPUT (node id or title)")
    return node_key.strip(), input_name.strip()


@dataclass
class Sweep:
    product: list[tuple[str, str, list]] = field(default_factory=list)
    zipped: list[tuple[str, str, list]] = field(default_factory=list)

    def add(self, target: str, raw: Any, *, zipped: bool = False, base: Path = Path(".")) -> None:
        values = parse_values(raw, base)
        if not values:
            raise SweepError(f"sweep {target}: no values")
        (self.zipped if zipped else self.product).append((*_split_target(target), values))

    def add_assignment(self, text: str, *, zipped: bool = False) -> None:
        """Add an axis from `NODE.INPUT=VALUES` (a --sweep / --sweep-zip argument)."""
        node_key, input_name, raw = parse_assignment(text)
        self.add(f"{node_key}.{input_name}", raw, zipped=zipped)

    def combinations(self) -> list[list[Assignment]]:
        """Every combination, the first product axis slowest, zipped axes as the last axis."""
        axes = [[(node, name, v) for v in values] for node, name, values in self.product]
        if self.zipped:
            lengths = {len(values) for _, _, values in self.zipped}
            if len(lengths) > 1:
                names = ", ".join(f"{n}.{i} ({len(v)})" for n, i, v in self.zipped)
                raise SweepError(f"zipped sweep axes differ in length: {names}")
            axes.append([[(node, name, values[k]) for node, name, values in self.zipped]
                         for k in range(lengths.pop())])
        combos = []
        for combo in itertools.product(*axes):
            flat: list[Assignment] = []
            for part in combo:
                flat.extend(part if isinstance(part, list) else [part])
            combos.append(flat)
        return combos

    def __bool__(self) -> bool:
        return bool(self.product or self.zipped)


def build_sweep(product: list[str] = (), zipped: list[str] = (), file: Path | None = None) -> Sweep:
    """From `--sweep`, `--sweep-zip` (TARGET=VALUES each) and `--sweep-file`."""
    sweep = Sweep()
    if file is not None:
        sweep = load_sweep_file(file)
    for texts, is_zip in ((product, False), (zipped, True)):
        for text in texts:
            sweep.add_assignment(text, zipped=is_zip)
    return sweep


def load_sweep_file(path: Path) -> Sweep:
    try:
        text = Path(path).read_text(encoding="utf-8")
        if Path(path).suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = orjson.loads(text)
    except Exception as exc:  # noqa: BLE001 - OSError, orjson and YAML errors alike
        raise SweepError(f"cannot read sweep file {path}: {exc}") from exc
    if not isinstance(data, dict) or not set(data) <= {"product", "zip"} or not data:
        raise SweepError(f"sweep file {path}: expected a mapping with 'product' and/or 'zip'")
    sweep = Sweep()
    for key, is_zip in (("product", False), ("zip", True)):
        section = data.get(key) or {}
        if not isinstance(section, dict):
            raise SweepError(f"sweep file {path}: '{key}' must map NODE.INPUT to values")
        for target, raw in section.items():
            sweep.add(target, raw, zipped=is_zip, base=Path(path).parent)
    return sweep
