"""PreviewAny: any value as text, as ComfyUI's "Preview Any" shows it."""
from __future__ import annotations

import dataclasses
import json

from engine import EdgeValue, Link, Node, ShownText


def as_text(value) -> str:
    """ComfyUI's conversion: strings as they are, numbers and booleans by str(), anything else
    as JSON where it can be, else str(). Values are first put in ComfyUI's form: a wrapped
    tensor (IMAGE, MASK) as the tensor, a LATENT as its dict of the fields it has."""
    if isinstance(value, EdgeValue) and dataclasses.is_dataclass(value):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        value = next(iter(fields.values())) if len(fields) == 1 else \
            {name: field for name, field in fields.items() if field is not None}
    if value is None:
        return "None"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return str(value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        try:
            return str(value)
        except Exception:  # noqa: BLE001 - whatever a value's __str__ raises
            return "source exists, but could not be serialized."


class PreviewAny(Node):
    """Show any value as text (the server's `executed` text; the CLI logs it)."""

    class_type = "PreviewAny"
    display_name = "Preview Any"
    category = "utils"
    is_output_node = True

    source: EdgeValue = Link()

    def execute(self, ctx) -> ShownText:
        return ShownText((as_text(self.source),))
