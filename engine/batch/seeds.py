"""Seeds between repeated runs, as the ComfyUI frontend changes them after each queued prompt
(Comfy-Org/ComfyUI_frontend `useValueControlWidget`): fixed, increment, decrement or randomize.

The frontend works in JavaScript numbers, so it caps every range at ±1125899906842624 (2^50).
Increment and decrement move by the widget's step and then clamp to [min, max]: they never wrap.
Randomize draws `floor(random · (max − min) / step) · step + min` inside the same caps.
"""
from __future__ import annotations

import math
import random
from typing import Any

from ..graph import Graph
from ..sweep import Assignment

FRONTEND_LIMIT = 1125899906842624
MODES = ("fixed", "increment", "decrement", "randomize")


def next_value(value: int, mode: str, low: int, high: int, step: int, rng: random.Random) -> int:
    """The value the frontend gives a widget after one queued run."""
    if mode == "increment":
        value += step
    elif mode == "decrement":
        value -= step
    elif mode == "randomize":
        value = math.floor(rng.random() * ((high - low) / step)) * step + low
    return min(max(value, low), high) if mode in MODES[1:] else value


def seed_range(spec: Any) -> tuple[int, int, int]:
    """(min, max, step) of a widget under the frontend's caps."""
    low = max(-FRONTEND_LIMIT, int(spec.ge) if spec.ge is not None else -FRONTEND_LIMIT)
    high = min(FRONTEND_LIMIT, int(spec.le) if spec.le is not None else FRONTEND_LIMIT)
    return low, high, int(spec.step or 1)


def repeat_overrides(graph: Graph, registry: Any, repeats: int, salt: str) -> list[list[Assignment]]:
    """For each of `repeats` runs, the seed changes that run gets under each widget's saved mode.
    Run 0 keeps the saved values. Modes come from the UI workflow (also the one a PNG carries);
    the seeds of an API prompt, which carries none, increment. Random draws are seeded by `salt`,
    so the same batch draws the same seeds again."""
    runs: list[list[Assignment]] = [[] for _ in range(max(1, repeats))]
    for node, spec, value in registry.seed_widgets(graph.nodes.values()):
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        mode = graph.controls.get((node.id, spec.name), "increment" if graph.ui_workflow is None else "fixed")
        if mode not in MODES[1:]:
            continue
        low, high, step = seed_range(spec)
        for index in range(1, len(runs)):
            value = next_value(value, mode, low, high, step, random.Random(f"{salt}:{node.id}:{index}"))
            runs[index].append((node.id, spec.name, value))
    return runs
