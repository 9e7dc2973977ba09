"""CLIPVisionLoader, CLIPVisionEncode and unCLIPConditioning."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine import Link, Node, NodeOutput, Widget

from ..sampling.conditioning import Conditioning
from ..sd.clip_vision import ClipVision, ClipVisionOutput, encode_image
from ..sd.part_loaders import files_fingerprint, files_in, find_model_file
from ..types import Image
from .conditioning import ConditioningOut


@dataclass(frozen=True)
class ClipVisionOut(NodeOutput):
    CLIP_VISION: ClipVision


@dataclass(frozen=True)
class ClipVisionOutputOut(NodeOutput):
    CLIP_VISION_OUTPUT: ClipVisionOutput


class CLIPVisionLoader(Node):
    """A CLIP vision model from `<models>/clip_vision` (ViT-L, ViT-H or ViT-bigG)."""

    class_type = "CLIPVisionLoader"
    display_name = "Load CLIP Vision"
    category = "loaders"
    loads_models = True

    clip_name: str = Widget(choices=files_in(("clip_vision",)))

    fingerprint = files_fingerprint(("clip_vision",), "clip_name")

    def execute(self, ctx) -> ClipVisionOut:
        path = find_model_file(ctx.settings, ("clip_vision",), self.clip_name, "clip_name")
        return ClipVisionOut(ClipVision(str(path), ctx.device))


class CLIPVisionEncode(Node):
    """Image embeddings (and hidden states) of images, centre-cropped to the model's square or not."""

    class_type = "CLIPVisionEncode"
    display_name = "CLIP Vision Encode"
    category = "conditioning"

    clip_vision: ClipVision = Link()
    image: Image = Link()
    crop: Literal["center", "none"] = Widget("center")

    def execute(self, ctx) -> ClipVisionOutputOut:
        model = ctx.models.get(self.clip_vision)
        return ClipVisionOutputOut(encode_image(model, self.image.pixels, crop=self.crop == "center"))


class unCLIPConditioning(Node):  # noqa: N801 - ComfyUI's node name
    """Condition on images' CLIP embeddings too (SDXL: they become the pooled vector; revision)."""

    class_type = "unCLIPConditioning"
    category = "conditioning"

    conditioning: Conditioning = Link()
    clip_vision_output: ClipVisionOutput = Link()
    strength: float = Widget(1.0, ge=-10.0, le=10.0, step=0.01)
    noise_augmentation: float = Widget(0.0, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> ConditioningOut:
        if self.strength == 0:
            return ConditioningOut(self.conditioning)
        added = (self.clip_vision_output.image_embeds, self.strength, self.noise_augmentation)
        return ConditioningOut(Conditioning(tuple(e.replace(unclip=e.unclip + (added,))
                                                  for e in self.conditioning.entries)))
