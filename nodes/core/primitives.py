"""The primitive nodes seen in saved workflows: one constant value out."""
from __future__ import annotations

from dataclasses import dataclass

from engine import Node, NodeOutput, Widget

INT_LIMIT = 2**63 - 1


@dataclass(frozen=True)
class IntOut(NodeOutput):
    INT: int


@dataclass(frozen=True)
class FloatOut(NodeOutput):
    FLOAT: float


@dataclass(frozen=True)
class StringOut(NodeOutput):
    STRING: str


@dataclass(frozen=True)
class BooleanOut(NodeOutput):
    BOOLEAN: bool


class PrimitiveInt(Node):
    class_type = "PrimitiveInt"
    display_name = "Int"
    category = "utils/primitive"
    value: int = Widget(0, ge=-INT_LIMIT, le=INT_LIMIT, control_after_generate=True)

    def execute(self, ctx) -> IntOut:
        return IntOut(self.value)


class PrimitiveFloat(Node):
    class_type = "PrimitiveFloat"
    display_name = "Float"
    category = "utils/primitive"
    value: float = Widget(0.0, ge=-float(INT_LIMIT), le=float(INT_LIMIT))

    def execute(self, ctx) -> FloatOut:
        return FloatOut(self.value)


class PrimitiveString(Node):
    class_type = "PrimitiveString"
    display_name = "String"
    category = "utils/primitive"
    value: str = Widget("")

    def execute(self, ctx) -> StringOut:
        return StringOut(self.value)


class PrimitiveStringMultiline(Node):
    class_type = "PrimitiveStringMultiline"
    display_name = "String (Multiline)"
    category = "utils/primitive"
    value: str = Widget("", multiline=True)

    def execute(self, ctx) -> StringOut:
        return StringOut(self.value)


class PrimitiveBoolean(Node):
    class_type = "PrimitiveBoolean"
    display_name = "Boolean"
    category = "utils/primitive"
    value: bool = Widget(False)

    def execute(self, ctx) -> BooleanOut:
        return BooleanOut(self.value)
