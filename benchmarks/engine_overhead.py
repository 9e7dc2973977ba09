"""Engine overhead, measured side by side in one run (no models, no torch).

Prints: parse+validate+plan time for generated graphs of 100 / 1,000 / 10,000 nodes (target:
linear growth, < 1 s at 10,000), per-node execution overhead on a chain of trivial nodes (target:
< 100 µs per node), and a warm re-run of an unchanged graph (target: nothing executed, < 5 ms).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import Link, Node, NodeOutput, NodeRegistry, SavedFiles, Session, Settings, Widget  # noqa: E402
from engine.node import EdgeValue  # noqa: E402
from engine.plan import make_plan  # noqa: E402
from engine.validate import validate  # noqa: E402


@dataclass(frozen=True, eq=False)
class Value(EdgeValue):
    comfy_type = "VALUE"
    v: float


@dataclass(frozen=True)
class ValueOut(NodeOutput):
    value: Value


class Source(Node):
    class_type = "Source"
    v: float = Widget(1.0)

    def execute(self, ctx) -> ValueOut:
        return ValueOut(Value(self.v))


class Step(Node):
    class_type = "Step"
    x: Value = Link()
    k: float = Widget(1.0, ge=-10, le=10)

    def execute(self, ctx) -> ValueOut:
        return ValueOut(Value(self.x.v + self.k))


class Sink(Node):
    class_type = "Sink"
    is_output_node = True
    x: Value = Link()

    def execute(self, ctx) -> SavedFiles:
        return SavedFiles()


REGISTRY = NodeRegistry.from_classes([Source, Step, Sink])


def chain(n: int) -> dict:
    prompt = {"0": {"class_type": "Source", "inputs": {"v": 0.0}}}
    for i in range(1, n - 1):
        prompt[str(i)] = {"class_type": "Step", "inputs": {"x": [str(i - 1), 0], "k": 1.0}}
    prompt[str(n - 1)] = {"class_type": "Sink", "inputs": {"x": [str(n - 2), 0]}}
    return prompt


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    work = Path(tempfile.mkdtemp())
    settings = Settings(output_dir=work / "out", cache_dir=work / "cache")
    session = Session(REGISTRY, settings)
    print("parse + validate + plan (best of 3):")
    previous = None
    for n in (100, 1_000, 10_000):
        prompt = chain(n)

        def prepare():
            graph = session.load(prompt)
            checked = validate(graph, REGISTRY, settings)
            make_plan(checked.graph, REGISTRY, checked.outputs, session.cache, settings)

        seconds = best_of(prepare, 3)
        growth = f"  x{seconds / previous:.1f} for x10 nodes" if previous else ""
        print(f"  {n:>6} nodes: {seconds * 1000:8.1f} ms{growth}")
        previous = seconds

    n = 2_000
    prompt = chain(n)
    cold = Session(REGISTRY, settings, cache=False)
    graph = cold.load(prompt)
    checked = validate(graph, REGISTRY, settings)
    plan_only = best_of(lambda: make_plan(checked.graph, REGISTRY, checked.outputs, cold.cache, settings), 3)
    total = best_of(lambda: cold.execute(graph), 3)
    validate_s = best_of(lambda: validate(graph, REGISTRY, settings), 3)
    per_node_us = (total - validate_s - plan_only) / n * 1e6
    print(f"per-node execution overhead on a {n}-node chain: {per_node_us:.1f} µs/node "
          f"(whole run incl. validation {total / n * 1e6:.1f} µs/node; target < 100)")

    def persisted_run():
        disk_settings = Settings(output_dir=work / "out", cache_dir=Path(tempfile.mkdtemp(dir=work)))
        Session(REGISTRY, disk_settings).execute(graph)

    with_disk = best_of(persisted_run, 3)
    print(f"  with the disk cache writing every output: {(with_disk - validate_s - plan_only) / n * 1e6:.1f} µs/node")

    small = chain(8)
    session.execute(small)
    warm = []
    for _ in range(20):
        result = session.execute(small)
        assert not result.executed
        warm.append(result.seconds)
    print(f"warm re-run of an unchanged 8-node graph: median {statistics.median(warm) * 1000:.2f} ms, "
          f"{len(result.executed)} nodes executed (target < 5 ms, 0 executed)")


if __name__ == "__main__":
    main()
