"""ControlNetLoader, DiffControlNetLoader, ControlNetApplyAdvanced and the old ControlNetApply.

Applying a ControlNet only records it on the conditioning entries (with the one applied before,
which it adds to); KSampler runs it beside the UNet at each step where its window is active."""
from __future__ import annotations

from dataclasses import dataclass

from engine import Link, Node, NodeOutput, Widget

from ..sampling.conditioning import Conditioning
from ..sd.controlnet import ControlLink, ControlNetHandle, controlnet_handle
from ..sd.models import DiffusionModel
from ..sd.part_loaders import files_fingerprint, files_in, find_model_file
from ..types import Image
from .conditioning import ConditioningOut
from .vae import VAE

CONTROLNET_FOLDERS = ("controlnet", "t2i_adapter")  # ComfyUI lists both under `controlnet`


@dataclass(frozen=True)
class ControlNetOut(NodeOutput):
    CONTROL_NET: ControlNetHandle


@dataclass(frozen=True)
class PositiveNegative(NodeOutput):
    positive: Conditioning
    negative: Conditioning


class ControlNetLoader(Node):
    """A ControlNet file from `<models>/controlnet` (SD1.x, SD2.x or SDXL; original or diffusers layout)."""

    class_type = "ControlNetLoader"
    display_name = "Load ControlNet Model"
    category = "loaders"
    loads_models = True

    control_net_name: str = Widget(choices=files_in(CONTROLNET_FOLDERS))

    fingerprint = files_fingerprint(CONTROLNET_FOLDERS, "control_net_name")

    def execute(self, ctx) -> ControlNetOut:
        path = find_model_file(ctx.settings, CONTROLNET_FOLDERS, self.control_net_name, "control_net_name")
        return ControlNetOut(controlnet_handle(path, ctx.device))


class DiffControlNetLoader(Node):
    """A ControlNet file whose weights may be stored as differences from the model's UNet."""

    class_type = "DiffControlNetLoader"
    display_name = "Load ControlNet Model (diff)"
    category = "loaders"
    loads_models = True

    model: DiffusionModel = Link()
    control_net_name: str = Widget(choices=files_in(CONTROLNET_FOLDERS))

    fingerprint = files_fingerprint(CONTROLNET_FOLDERS, "control_net_name")

    def execute(self, ctx) -> ControlNetOut:
        path = find_model_file(ctx.settings, CONTROLNET_FOLDERS, self.control_net_name, "control_net_name")
        return ControlNetOut(controlnet_handle(path, ctx.device, self.model))


def _hint(image: Image):
    return image.pixels.movedim(-1, 1)  # [B, H, W, C] -> [B, C, H, W]


class ControlNetApplyAdvanced(Node):
    """Guide both sides with a ControlNet and a hint image, over part of the schedule.

    It acts from `start_percent` to `end_percent`; entries that already carry ControlNets keep
    them, and the new one adds to them."""

    class_type = "ControlNetApplyAdvanced"
    display_name = "Apply ControlNet"
    category = "conditioning/controlnet"

    positive: Conditioning = Link()
    negative: Conditioning = Link()
    control_net: ControlNetHandle = Link()
    image: Image = Link()
    strength: float = Widget(1.0, ge=0.0, le=10.0, step=0.01)
    start_percent: float = Widget(0.0, ge=0.0, le=1.0, step=0.001)
    end_percent: float = Widget(1.0, ge=0.0, le=1.0, step=0.001)
    vae: VAE | None = Link(optional=True)  # for ControlNets that read latents (SD3, Flux); SD ones do not

    def execute(self, ctx) -> PositiveNegative:
        if self.strength == 0:
            return PositiveNegative(self.positive, self.negative)
        hint = _hint(self.image)
        # one new link per previous one, shared across both sides, as ComfyUI shares its copies:
        # the positive and negative then still run as one batch
        links: dict[int, ControlLink] = {}

        def linked(entry):
            previous = entry.control
            if id(previous) not in links:
                links[id(previous)] = ControlLink(self.control_net, hint, self.strength, self.start_percent,
                                                  self.end_percent, previous)
            return entry.replace(control=links[id(previous)], control_apply_to_uncond=False)

        return PositiveNegative(Conditioning(tuple(linked(e) for e in self.positive.entries)),
                                Conditioning(tuple(linked(e) for e in self.negative.entries)))


class ControlNetApply(Node):
    """Guide a conditioning with a ControlNet and a hint image (the old node).

    It is set on the positive entries; while sampling, the negative borrows it (ComfyUI's
    `control_apply_to_uncond`)."""

    class_type = "ControlNetApply"
    display_name = "Apply ControlNet (OLD)"
    category = "conditioning/controlnet"

    conditioning: Conditioning = Link()
    control_net: ControlNetHandle = Link()
    image: Image = Link()
    strength: float = Widget(1.0, ge=0.0, le=10.0, step=0.01)

    def execute(self, ctx) -> ConditioningOut:
        if self.strength == 0:
            return ConditioningOut(self.conditioning)
        hint = _hint(self.image)
        return ConditioningOut(Conditioning(tuple(
            e.replace(control=ControlLink(self.control_net, hint, self.strength, previous=e.control),
                      control_apply_to_uncond=True)
            for e in self.conditioning.entries)))
