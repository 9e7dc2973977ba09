"""ModelMergeSimple and CLIPMergeSimple: weighted means of two models' weights, applied while
sampling or encoding like LoRAs (in order with them) and undone after."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from engine import Link, ModelLoadError, Node, Widget

from ..sd.loaders import ClipOut, ModelOut
from ..sd.models import DiffusionModel, MergePatch, TextEncoders

CATEGORY = "advanced/model_merging"


class ModelMergeSimple(Node):
    """ratio of model1's weights and 1 − ratio of model2's (the same architecture)."""

    class_type = "ModelMergeSimple"
    display_name = "ModelMergeSimple"
    category = CATEGORY

    model1: DiffusionModel = Link()
    model2: DiffusionModel = Link()
    ratio: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> ModelOut:
        if self.model1.unet_config_json != self.model2.unet_config_json:
            raise ModelLoadError(f"cannot merge {Path(self.model2.path).name} ({self.model2.family_name}) into "
                                 f"{Path(self.model1.path).name} ({self.model1.family_name}): their UNets differ in "
                                 "shape")
        return ModelOut(self.model1.with_loras(MergePatch(self.model2, self.ratio)))


class CLIPMergeSimple(Node):
    """ratio of clip1's text-encoder weights and 1 − ratio of clip2's (the same towers)."""

    class_type = "CLIPMergeSimple"
    display_name = "CLIPMergeSimple"
    category = CATEGORY

    clip1: TextEncoders = Link()
    clip2: TextEncoders = Link()
    ratio: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> ClipOut:
        if [t.spec.name for t in self.clip1.towers] != [t.spec.name for t in self.clip2.towers]:
            raise ModelLoadError(f"cannot merge a {self.clip2.family_name} CLIP into a {self.clip1.family_name} "
                                 "one: their text towers differ")
        merged = dataclasses.replace(self.clip1, loras=self.clip1.loras + (MergePatch(self.clip2, self.ratio),))
        return ClipOut(merged)
