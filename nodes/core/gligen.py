"""GLIGENLoader and GLIGENTextBoxApply: phrases placed in boxes (SD1.x/SD2.x)."""
from __future__ import annotations

from dataclasses import dataclass

from engine import Link, Node, NodeOutput, Widget

from ..sampling.conditioning import Conditioning
from ..sd.gligen import Gligen
from ..sd.models import TextEncoders
from ..sd.part_loaders import files_fingerprint, files_in, find_model_file
from ..sd.text import encode
from .conditioning import ConditioningOut

MAX_RESOLUTION = 16384


@dataclass(frozen=True)
class GligenOut(NodeOutput):
    GLIGEN: Gligen


class GLIGENLoader(Node):
    """A GLIGEN model from `<models>/gligen`."""

    class_type = "GLIGENLoader"
    display_name = "GLIGENLoader"
    category = "loaders"
    loads_models = True

    gligen_name: str = Widget(choices=files_in(("gligen",)))

    fingerprint = files_fingerprint(("gligen",), "gligen_name")

    def execute(self, ctx) -> GligenOut:
        path = find_model_file(ctx.settings, ("gligen",), self.gligen_name, "gligen_name")
        return GligenOut(Gligen(str(path), ctx.device))


class GLIGENTextBoxApply(Node):
    """Ground a phrase in a box (pixels) of the image: its pooled text becomes a GLIGEN token."""

    class_type = "GLIGENTextBoxApply"
    display_name = "GLIGENTextBoxApply"
    category = "conditioning/gligen"

    conditioning_to: Conditioning = Link()
    clip: TextEncoders = Link()
    gligen_textbox_model: Gligen = Link()
    text: str = Widget(multiline=True, dynamic_prompts=True)
    width: int = Widget(64, ge=8, le=MAX_RESOLUTION, step=8)
    height: int = Widget(64, ge=8, le=MAX_RESOLUTION, step=8)
    x: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=8)
    y: int = Widget(0, ge=0, le=MAX_RESOLUTION, step=8)

    def execute(self, ctx) -> ConditioningOut:
        _, pooled = encode(ctx, self.clip, {tower.spec.name: self.text for tower in self.clip.towers})
        box = (pooled, self.height // 8, self.width // 8, self.y // 8, self.x // 8)

        def grounded(entry):
            earlier = entry.gligen[1] if entry.gligen is not None else ()
            return entry.replace(gligen=(self.gligen_textbox_model, earlier + (box,)))

        return ConditioningOut(Conditioning(tuple(grounded(e) for e in self.conditioning_to.entries)))
