"""CLIPVisionLoader, CLIPVisionEncode, unCLIPConditioning, and the style models that turn CLIP
vision tokens into text tokens (StyleModelLoader, StyleModelApply)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine import Link, Node, NodeOutput, Widget

from ..sampling.conditioning import Conditioning
from ..sd.clip_vision import ClipVision, ClipVisionOutput, encode_image
from ..sd.part_loaders import files_fingerprint, files_in, find_model_file
from ..sd.style_model import StyleModel, style_tokens
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


@dataclass(frozen=True)
class StyleModelOut(NodeOutput):
    STYLE_MODEL: StyleModel


class StyleModelLoader(Node):
    """A style model from `<models>/style_models` (TencentARC's T2I style adapter)."""

    class_type = "StyleModelLoader"
    display_name = "Load Style Model"
    category = "loaders"
    loads_models = True

    style_model_name: str = Widget(choices=files_in(("style_models",)))

    fingerprint = files_fingerprint(("style_models",), "style_model_name")

    def execute(self, ctx) -> StyleModelOut:
        path = find_model_file(ctx.settings, ("style_models",), self.style_model_name, "style_model_name")
        return StyleModelOut(StyleModel(str(path), ctx.device))


class StyleModelApply(Node):
    """The style model's tokens for the images appended to every entry's text tokens. SD models
    take no attention mask, so `attn_bias` leaves the tokens as they are, as in ComfyUI; `multiply`
    scales them."""

    class_type = "StyleModelApply"
    display_name = "Apply Style Model"
    category = "conditioning/style_model"

    conditioning: Conditioning = Link()
    style_model: StyleModel = Link()
    clip_vision_output: ClipVisionOutput = Link()
    strength: float = Widget(1.0, ge=0.0, le=10.0, step=0.001)
    strength_type: Literal["multiply", "attn_bias"] = Widget("multiply")

    def execute(self, ctx) -> ConditioningOut:
        import torch

        from engine import ModelLoadError

        tokens = style_tokens(ctx.models.get(self.style_model), self.clip_vision_output)
        if self.strength_type == "multiply":
            tokens = tokens * self.strength
        entries = []
        for entry in self.conditioning.entries:
            if entry.cross_attn.shape[-1] != tokens.shape[-1]:
                raise ModelLoadError(f"the style model makes {tokens.shape[-1]}-wide tokens; the conditioning's are "
                                     f"{entry.cross_attn.shape[-1]} wide (the published adapter is for SD1.x)")
            style = tokens.to(entry.cross_attn).expand(entry.cross_attn.shape[0], -1, -1)
            entries.append(entry.replace(cross_attn=torch.cat([entry.cross_attn, style], dim=1)))
        return ConditioningOut(Conditioning(tuple(entries)))
