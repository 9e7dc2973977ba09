"""The conditioning nodes: combine, concat, average, zero out, area, mask, timestep range.

They edit entries; nothing is evaluated until sampling, where several entries on one side are
averaged as predictions (see nodes/sampling/guidance.py)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from engine import Link, Node, NodeOutput, Widget

from ..sampling.conditioning import Conditioning
from ..types import Mask

log = logging.getLogger(__name__)
MAX_SIZE = 16384


@dataclass(frozen=True)
class ConditioningOut(NodeOutput):
    CONDITIONING: Conditioning


class ConditioningCombine(Node):
    """Both lists of entries; their predictions are averaged when sampling."""

    class_type = "ConditioningCombine"
    display_name = "Conditioning (Combine)"
    category = "conditioning"

    conditioning_1: Conditioning = Link()
    conditioning_2: Conditioning = Link()

    def execute(self, ctx) -> ConditioningOut:
        return ConditioningOut(Conditioning(self.conditioning_1.entries + self.conditioning_2.entries))


class ConditioningConcat(Node):
    """Each `to` entry with `from`'s first entry appended along the tokens; `to`'s pooled kept."""

    class_type = "ConditioningConcat"
    display_name = "Conditioning (Concat)"
    category = "conditioning"

    conditioning_to: Conditioning = Link()
    conditioning_from: Conditioning = Link()

    def execute(self, ctx) -> ConditioningOut:
        import torch

        source = self.conditioning_from.entries
        if len(source) > 1:
            log.warning("ConditioningConcat: conditioning_from has %d entries; only the first is used", len(source))
        first = source[0].cross_attn
        return ConditioningOut(Conditioning(tuple(
            e.replace(cross_attn=torch.cat([e.cross_attn, first], dim=1)) for e in self.conditioning_to.entries)))


class ConditioningAverage(Node):
    """to·s + from·(1−s), `from`'s first entry cut or zero-padded to `to`'s token count."""

    class_type = "ConditioningAverage"
    display_name = "Conditioning (Average)"
    category = "conditioning"

    conditioning_to: Conditioning = Link()
    conditioning_from: Conditioning = Link()
    conditioning_to_strength: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> ConditioningOut:
        import torch

        source = self.conditioning_from.entries
        if len(source) > 1:
            log.warning("ConditioningAverage: conditioning_from has %d entries; only the first is used", len(source))
        s = self.conditioning_to_strength
        src, src_pooled = source[0].cross_attn, source[0].pooled
        out = []
        for e in self.conditioning_to.entries:
            tokens = e.cross_attn.shape[1]
            fitted = src[:, :tokens]
            if fitted.shape[1] < tokens:
                fitted = torch.cat([fitted, torch.zeros_like(e.cross_attn[:, fitted.shape[1]:])], dim=1)
            pooled = e.pooled
            if pooled is not None and src_pooled is not None:
                pooled = pooled * s + src_pooled * (1 - s)
            elif src_pooled is not None:
                pooled = src_pooled
            out.append(e.replace(cross_attn=e.cross_attn * s + fitted * (1 - s), pooled=pooled))
        return ConditioningOut(Conditioning(tuple(out)))


class ConditioningZeroOut(Node):
    """Zeros for the tokens and the pooled output (SDXL-turbo style negatives)."""

    class_type = "ConditioningZeroOut"
    display_name = "ConditioningZeroOut"
    category = "advanced/conditioning"

    conditioning: Conditioning = Link()

    def execute(self, ctx) -> ConditioningOut:
        import torch

        return ConditioningOut(Conditioning(tuple(
            e.replace(cross_attn=torch.zeros_like(e.cross_attn),
                      pooled=None if e.pooled is None else torch.zeros_like(e.pooled))
            for e in self.conditioning.entries)))


class ConditioningSetArea(Node):
    """Apply the conditioning to a rectangle (pixels, multiples of 8) with a strength."""

    class_type = "ConditioningSetArea"
    display_name = "Conditioning (Set Area)"
    category = "conditioning"

    conditioning: Conditioning = Link()
    width: int = Widget(64, ge=64, le=MAX_SIZE, step=8)
    height: int = Widget(64, ge=64, le=MAX_SIZE, step=8)
    x: int = Widget(0, ge=0, le=MAX_SIZE, step=8)
    y: int = Widget(0, ge=0, le=MAX_SIZE, step=8)
    strength: float = Widget(1.0, ge=0.0, le=10.0, step=0.01)

    def execute(self, ctx) -> ConditioningOut:
        area = (self.height // 8, self.width // 8, self.y // 8, self.x // 8)
        return ConditioningOut(self.conditioning.map(area=area, area_percent=None, strength=self.strength,
                                                     set_area_to_bounds=False))


class ConditioningSetAreaPercentage(Node):
    """The same with the rectangle as fractions of the image."""

    class_type = "ConditioningSetAreaPercentage"
    display_name = "Conditioning (Set Area with Percentage)"
    category = "conditioning"

    conditioning: Conditioning = Link()
    width: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)
    height: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)
    x: float = Widget(0.0, ge=0.0, le=1.0, step=0.01)
    y: float = Widget(0.0, ge=0.0, le=1.0, step=0.01)
    strength: float = Widget(1.0, ge=0.0, le=10.0, step=0.01)

    def execute(self, ctx) -> ConditioningOut:
        percent = (self.height, self.width, self.y, self.x)
        return ConditioningOut(self.conditioning.map(area=None, area_percent=percent, strength=self.strength,
                                                     set_area_to_bounds=False))


class ConditioningSetAreaStrength(Node):
    """Set only the strength of the conditioning's entries."""

    class_type = "ConditioningSetAreaStrength"
    category = "conditioning"

    conditioning: Conditioning = Link()
    strength: float = Widget(1.0, ge=0.0, le=10.0, step=0.01)

    def execute(self, ctx) -> ConditioningOut:
        return ConditioningOut(self.conditioning.map(strength=self.strength))


class ConditioningSetMask(Node):
    """Weight the conditioning by a mask; `mask bounds` runs the model on the mask's bounding box."""

    class_type = "ConditioningSetMask"
    display_name = "Conditioning (Set Mask)"
    category = "conditioning"

    conditioning: Conditioning = Link()
    mask: Mask = Link()
    strength: float = Widget(1.0, ge=0.0, le=10.0, step=0.01)
    set_cond_area: Literal["default", "mask bounds"] = Widget("default")

    def execute(self, ctx) -> ConditioningOut:
        mask = self.mask.mask
        if mask.ndim < 3:
            mask = mask.unsqueeze(0)
        return ConditioningOut(self.conditioning.map(mask=mask, mask_strength=self.strength,
                                                     set_area_to_bounds=self.set_cond_area != "default"))


class ConditioningSetTimestepRange(Node):
    """Use the conditioning only between `start` and `end` (fractions of the denoising)."""

    class_type = "ConditioningSetTimestepRange"
    display_name = "ConditioningSetTimestepRange"
    category = "advanced/conditioning"

    conditioning: Conditioning = Link()
    start: float = Widget(0.0, ge=0.0, le=1.0, step=0.001)
    end: float = Widget(1.0, ge=0.0, le=1.0, step=0.001)

    def execute(self, ctx) -> ConditioningOut:
        return ConditioningOut(self.conditioning.map(start_percent=self.start, end_percent=self.end))
