"""Pure-Python nodes for engine tests: no torch, registered through an injected registry."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine import Link, Node, NodeOutput, NodeRegistry, SavedFiles, Widget
from engine.node import EdgeValue

CALLS: list[str] = []  # class types in execution order; tests reset it


@dataclass(frozen=True, eq=False)
class Number(EdgeValue):
    comfy_type = "NUMBER"
    value: float


@dataclass(frozen=True)
class NumberOut(NodeOutput):
    number: Number


class Constant(Node):
    class_type = "Constant"
    value: float = Widget(1.0, ge=-1000, le=1000)

    def execute(self, ctx) -> NumberOut:
        CALLS.append(self.class_type)
        return NumberOut(Number(self.value))


class Add(Node):
    class_type = "Add"
    a: Number = Link()
    b: Number = Link()

    def execute(self, ctx) -> NumberOut:
        CALLS.append(self.class_type)
        return NumberOut(Number(self.a.value + self.b.value))


class Scale(Node):
    class_type = "Scale"
    x: Number = Link()
    factor: float = Widget(2.0)
    seed: int = Widget(0, ge=0, le=2**64 - 1)
    mode: Literal["mul", "div"] = Widget("mul")
    offset: Number | None = Link(optional=True)
    bias: float = Widget(0.5, optional=True)

    def execute(self, ctx) -> NumberOut:
        CALLS.append(self.class_type)
        v = self.x.value * self.factor if self.mode == "mul" else self.x.value / self.factor
        extra = self.offset.value if self.offset is not None else 0.0
        return NumberOut(Number(v + extra + self.bias))


class Fail(Node):
    class_type = "Fail"
    x: Number = Link()

    def execute(self, ctx) -> NumberOut:
        CALLS.append(self.class_type)
        raise RuntimeError("boom")


class Volatile(Node):
    """Like IS_CHANGED returning NaN: re-runs every time."""
    class_type = "Volatile"
    is_idempotent = False
    value: float = Widget(3.0)

    def execute(self, ctx) -> NumberOut:
        CALLS.append(self.class_type)
        return NumberOut(Number(self.value))


class Fingerprinted(Node):
    """Like IS_CHANGED returning a constant: cached; records what the hook saw."""
    class_type = "Fingerprinted"
    x: Number = Link()
    tag: str = Widget("a")
    SEEN: list = []

    @classmethod
    def fingerprint(cls, constants, settings):
        cls.SEEN.append(dict(constants))
        return "stable"

    def execute(self, ctx) -> NumberOut:
        CALLS.append(self.class_type)
        return NumberOut(Number(self.x.value))


class FloatOrNumber(Node):
    """An input that takes a NUMBER link or a literal float, with custom validation (item 15)."""
    class_type = "FloatOrNumber"
    x: Number | float = Link()

    @classmethod
    def check_inputs(cls, constants, linked_types, vctx):
        if "x" in constants and not isinstance(constants["x"], float):
            return [("x", f"must be a float, got {type(constants['x']).__name__}")]
        if "x" in linked_types and linked_types["x"] != "NUMBER":
            return [("x", "must be a NUMBER link")]
        return []

    def execute(self, ctx) -> NumberOut:
        CALLS.append(self.class_type)
        return NumberOut(Number(self.x if isinstance(self.x, float) else self.x.value))


class Steps(Node):
    """Like a sampler: reports `steps` progress steps, `pause_s` apart (cancel is noticed there)."""
    class_type = "Steps"
    x: Number = Link()
    steps: int = Widget(50, ge=1, le=10_000)
    pause_s: float = Widget(0.01)

    def execute(self, ctx) -> NumberOut:
        import time

        CALLS.append(self.class_type)
        for step in range(self.steps):
            time.sleep(self.pause_s)
            ctx.progress(step + 1, self.steps)
        return NumberOut(Number(self.x.value + self.steps))


class Record(Node):
    """Output node: writes the value to a text file in the output folder."""
    class_type = "Record"
    is_output_node = True
    x: Number = Link()
    name: str = Widget("value", optional=True)
    RESULTS: list = []

    def execute(self, ctx) -> SavedFiles:
        CALLS.append(self.class_type)
        Record.RESULTS.append(self.x.value)
        path = ctx.output_path(f"{self.name}.txt")
        ctx.write_file(path, lambda fh: fh.write(str(self.x.value).encode()))
        return SavedFiles((str(path),))


class Range(Node):
    """Like TestMakeListNode: a list of `count` numbers 0, 1, … on one slot (OUTPUT_IS_LIST)."""
    class_type = "Range"
    output_is_list = (True,)
    count: int = Widget(3, ge=0, le=100)

    def execute(self, ctx) -> NumberOut:
        CALLS.append(self.class_type)
        return NumberOut([Number(float(i)) for i in range(self.count)])


class Total(Node):
    """INPUT_IS_LIST: one run over the whole list; its widget comes as a list of one."""
    class_type = "Total"
    input_is_list = True
    x: Number = Link()
    factor: float = Widget(1.0)

    def execute(self, ctx) -> NumberOut:
        CALLS.append(self.class_type)
        return NumberOut(Number(sum(n.value for n in self.x) * self.factor[0]))


TOY_NODES = [Constant, Add, Scale, Fail, Volatile, Fingerprinted, FloatOrNumber, Steps, Record, Range, Total]


def registry() -> NodeRegistry:
    return NodeRegistry.from_classes(TOY_NODES)


def api(*nodes: tuple) -> dict:
    """api(("1", "Constant", {"value": 2}), ...) → an API prompt dict."""
    return {nid: {"class_type": ct, "inputs": inputs, "_meta": {"title": f"T{nid}"}}
            for nid, ct, inputs in nodes}
