"""EmptyLatentImage."""
from __future__ import annotations

from dataclasses import dataclass

from engine import Node, NodeOutput, Widget

from ..types import Latent

MAX_RESOLUTION = 16384


@dataclass(frozen=True)
class LatentOut(NodeOutput):
    LATENT: Latent


class EmptyLatentImage(Node):
    """A batch of zero latents, [batch_size, 4, height/8, width/8]."""

    class_type = "EmptyLatentImage"
    display_name = "Empty Latent Image"
    category = "latent"

    width: int = Widget(512, ge=16, le=MAX_RESOLUTION, step=8)
    height: int = Widget(512, ge=16, le=MAX_RESOLUTION, step=8)
    batch_size: int = Widget(1, ge=1, le=4096)

    def execute(self, ctx) -> LatentOut:
        import torch

        return LatentOut(Latent(torch.zeros([self.batch_size, 4, self.height // 8, self.width // 8])))
