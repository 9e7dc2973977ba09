"""ComfyUI's model merging nodes: sums of two models' weights (weighted means, per-block means,
per-architecture block means, differences, sums), applied while sampling or encoding like LoRAs (in order with them) and undone
after. Only the weights are merged; everything else (prediction type, patches) is model1's."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from engine import Link, ModelLoadError, Node, Widget

from ..sd.loaders import ClipOut, ModelOut
from ..sd.models import DiffusionModel, MergePatch, TextEncoders

CATEGORY = "advanced/model_merging"


def merged_models(model1: DiffusionModel, model2: DiffusionModel, own: float, theirs: float,
                  block_ratios: tuple[tuple[str, float], ...] = ()) -> ModelOut:
    if model1.unet_config_json != model2.unet_config_json:
        raise ModelLoadError(f"cannot merge {Path(model2.path).name} ({model2.family_name}) into "
                             f"{Path(model1.path).name} ({model1.family_name}): their UNets differ in shape")
    return ModelOut(model1.with_loras(MergePatch(model2, own, theirs, block_ratios)))


def merged_clips(clip1: TextEncoders, clip2: TextEncoders, own: float, theirs: float) -> ClipOut:
    if [t.spec.name for t in clip1.towers] != [t.spec.name for t in clip2.towers]:
        raise ModelLoadError(f"cannot merge a {clip2.family_name} CLIP into a {clip1.family_name} one: their "
                             "text towers differ")
    return ClipOut(dataclasses.replace(clip1, loras=clip1.loras + (MergePatch(clip2, own, theirs),)))


class ModelMergeSimple(Node):
    """ratio of model1's weights and 1 − ratio of model2's (the same architecture)."""

    class_type = "ModelMergeSimple"
    category = CATEGORY

    model1: DiffusionModel = Link()
    model2: DiffusionModel = Link()
    ratio: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> ModelOut:
        return merged_models(self.model1, self.model2, self.ratio, 1.0 - self.ratio)


class ModelMergeBlocks(Node):
    """ModelMergeSimple with one ratio for the input blocks, one for the middle block and one for
    the output blocks; the time and label embeddings take the input ratio, as in ComfyUI."""

    class_type = "ModelMergeBlocks"
    category = CATEGORY

    model1: DiffusionModel = Link()
    model2: DiffusionModel = Link()
    input: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)
    middle: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)
    out: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> ModelOut:
        # ComfyUI matches the widget names as prefixes of the LDM names: "out" takes the output
        # blocks and the final norm and convolution ("out.0", "out.2").
        blocks = (("input", self.input), ("middle", self.middle), ("out", self.out))
        return merged_models(self.model1, self.model2, 1.0, 0.0, blocks)


class ModelMergeSubtract(Node):
    """multiplier · (model1 − model2): the difference a fine-tune added, to add to another model."""

    class_type = "ModelMergeSubtract"
    category = CATEGORY

    model1: DiffusionModel = Link()
    model2: DiffusionModel = Link()
    multiplier: float = Widget(1.0, ge=-10.0, le=10.0, step=0.01)

    def execute(self, ctx) -> ModelOut:
        return merged_models(self.model1, self.model2, self.multiplier, -self.multiplier)


class ModelMergeAdd(Node):
    """model1 + model2, weight by weight."""

    class_type = "ModelMergeAdd"
    category = CATEGORY

    model1: DiffusionModel = Link()
    model2: DiffusionModel = Link()

    def execute(self, ctx) -> ModelOut:
        return merged_models(self.model1, self.model2, 1.0, 1.0)


class CLIPMergeSimple(Node):
    """ratio of clip1's text-encoder weights and 1 − ratio of clip2's (the same towers)."""

    class_type = "CLIPMergeSimple"
    category = CATEGORY

    clip1: TextEncoders = Link()
    clip2: TextEncoders = Link()
    ratio: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> ClipOut:
        return merged_clips(self.clip1, self.clip2, self.ratio, 1.0 - self.ratio)


class CLIPMergeSubtract(Node):
    """multiplier · (clip1 − clip2)."""

    class_type = "CLIPMergeSubtract"
    category = CATEGORY

    clip1: TextEncoders = Link()
    clip2: TextEncoders = Link()
    multiplier: float = Widget(1.0, ge=-10.0, le=10.0, step=0.01)

    def execute(self, ctx) -> ClipOut:
        return merged_clips(self.clip1, self.clip2, self.multiplier, -self.multiplier)


class CLIPMergeAdd(Node):
    """clip1 + clip2, weight by weight."""

    class_type = "CLIPMergeAdd"
    category = CATEGORY

    clip1: TextEncoders = Link()
    clip2: TextEncoders = Link()

    def execute(self, ctx) -> ClipOut:
        return merged_clips(self.clip1, self.clip2, 1.0, 1.0)


def _block_merge_node(class_type: str, blocks: list[str]) -> type[Node]:
    """A per-architecture block merge (ComfyUI's ModelMergeSD1, …): one ratio per LDM block, the
    inputs named by the blocks' key prefixes (`input_blocks.3.`), which is why the class is built
    here rather than declared (a field name cannot hold dots)."""

    def execute(self, ctx) -> ModelOut:
        return merged_models(self.model1, self.model2, 1.0, 0.0, tuple((b, self.__dict__[b]) for b in blocks))

    ratios = {block: Widget(1.0, ge=0.0, le=1.0, step=0.01) for block in blocks}
    namespace = {"__module__": __name__, "__qualname__": class_type,
                 "__doc__": f"ModelMergeBlocks with a ratio for each of the {len(blocks)} blocks of this architecture.",
                 "__annotations__": {"model1": DiffusionModel, "model2": DiffusionModel, **dict.fromkeys(blocks, float)},
                 "class_type": class_type, "category": CATEGORY + "/model_specific",
                 "model1": Link(), "model2": Link(), **ratios, "execute": execute}
    return type(class_type, (Node,), namespace)


def _blocks(inputs: int, outputs: int) -> list[str]:
    return (["time_embed.", "label_emb."] + [f"input_blocks.{i}." for i in range(inputs)]
            + [f"middle_block.{i}." for i in range(3)] + [f"output_blocks.{i}." for i in range(outputs)] + ["out."])


ModelMergeSD1 = _block_merge_node("ModelMergeSD1", _blocks(12, 12))
ModelMergeSD2 = _block_merge_node("ModelMergeSD2", _blocks(12, 12))
ModelMergeSDXL = _block_merge_node("ModelMergeSDXL", _blocks(9, 9))
