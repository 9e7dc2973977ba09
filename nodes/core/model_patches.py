"""Nodes that change how a MODEL samples without touching its weights: ModelSamplingDiscrete
(the prediction type and zero-terminal-SNR schedule), RescaleCFG, PerturbedAttentionGuidance and
DifferentialDiffusion. They return a new handle;
the UNet loaded for it is the same."""
from __future__ import annotations

import dataclasses
from typing import Literal

from engine import Link, Node, Widget

from ..sd.loaders import ModelOut
from ..sd.models import DiffusionModel

PREDICTIONS = {"eps": "eps", "v_prediction": "v", "lcm": "lcm", "x0": "x0", "img_to_img": "img_to_img"}


class ModelSamplingDiscrete(Node):
    """Sample the model as another prediction type (v, LCM, x0…), optionally with zero terminal SNR."""

    class_type = "ModelSamplingDiscrete"
    display_name = "ModelSamplingDiscrete"
    category = "advanced/model"

    model: DiffusionModel = Link()
    sampling: Literal[tuple(PREDICTIONS)] = Widget("eps")  # type: ignore[valid-type]
    zsnr: bool = Widget(False)

    def execute(self, ctx) -> ModelOut:
        return ModelOut(dataclasses.replace(self.model, prediction=PREDICTIONS[self.sampling],
                                            zero_terminal_snr=self.zsnr))


class RescaleCFG(Node):
    """Rescale the guided prediction to the conditional one's spread (for v-prediction models)."""

    class_type = "RescaleCFG"
    display_name = "RescaleCFG"
    category = "advanced/model"

    model: DiffusionModel = Link()
    multiplier: float = Widget(0.7, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> ModelOut:
        return ModelOut(dataclasses.replace(self.model, cfg_rescale=self.multiplier))


class PerturbedAttentionGuidance(Node):
    """Guide away from the prediction made with the middle block's self-attention perturbed (PAG)."""

    class_type = "PerturbedAttentionGuidance"
    display_name = "PerturbedAttentionGuidance"
    category = "model_patches/unet"

    model: DiffusionModel = Link()
    scale: float = Widget(3.0, ge=0.0, le=100.0, step=0.01)

    def execute(self, ctx) -> ModelOut:
        return ModelOut(dataclasses.replace(self.model, pag_scale=self.scale or None))


class DifferentialDiffusion(Node):
    """Inpaint by how much: a soft noise mask says when each pixel starts changing."""

    class_type = "DifferentialDiffusion"
    display_name = "Differential Diffusion"
    category = "_for_testing"

    model: DiffusionModel = Link()
    strength: float = Widget(1.0, ge=0.0, le=1.0, step=0.01, optional=True)

    def execute(self, ctx) -> ModelOut:
        return ModelOut(dataclasses.replace(self.model, differential_diffusion=self.strength))
