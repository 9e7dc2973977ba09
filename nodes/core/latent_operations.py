"""Latent operations (ComfyUI's LATENT_OPERATION): functions on a latent, applied to one
(LatentApplyOperation) or, before CFG, to the guidance (LatentApplyOperationCFG)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from engine import EdgeValue, Link, Node, NodeOutput, Widget

from ..sd.loaders import ModelOut
from ..sd.models import DiffusionModel
from ..types import Latent
from .image_filters import gaussian_kernel
from .latent import LatentOut


@dataclass(frozen=True)
class LatentOperation(EdgeValue):
    comfy_type = "LATENT_OPERATION"

    def __call__(self, latent):
        raise NotImplementedError


@dataclass(frozen=True)
class ReinhardTonemap(LatentOperation):
    """Each latent pixel's channel-vector length compressed by Reinhard's x/(1+x), the knee at
    (mean + 5·std of the lengths) × multiplier; directions are kept."""

    multiplier: float

    def __call__(self, latent):
        import torch

        length = (torch.linalg.vector_norm(latent, dim=1) + 1e-10)[:, None]
        dims = list(range(1, length.ndim))
        top = (length.std(dim=dims, keepdim=True) * 5 + length.mean(dim=dims, keepdim=True)) * self.multiplier
        scaled = length / top
        return latent / length * (scaled / (scaled + 1.0) * top)


@dataclass(frozen=True)
class LatentSharpen(LatentOperation):
    """The latent's directions (unit channel vectors) sharpened with ComfyUI's ImageSharpen kernel,
    reflect-padded, then given their lengths back."""

    radius: int
    sigma: float
    alpha: float

    def __call__(self, latent):
        import torch

        length = (torch.linalg.vector_norm(latent, dim=1) + 1e-6)[:, None]
        size = self.radius * 2 + 1
        kernel = gaussian_kernel(size, self.sigma).to(latent.device, latent.dtype) * (self.alpha * -10)
        kernel[size // 2, size // 2] = kernel[size // 2, size // 2] - kernel.sum() + 1.0
        channels = latent.shape[1]
        padded = torch.nn.functional.pad(latent / length, (self.radius,) * 4, "reflect")
        sharpened = torch.nn.functional.conv2d(padded, kernel.repeat(channels, 1, 1).unsqueeze(1), groups=channels)
        return length * sharpened


@dataclass(frozen=True)
class OperationOut(NodeOutput):
    LATENT_OPERATION: LatentOperation


@dataclass(frozen=True)
class GuidanceOperation:
    """LatentApplyOperationCFG's pre-CFG step: the operation on (positive − negative)."""

    operation: LatentOperation

    def __call__(self, args, state: dict):
        cond, uncond = args.conds
        return [self.operation(cond - uncond) + uncond, uncond]


class LatentApplyOperation(Node):
    """A latent operation on the latent itself."""

    class_type = "LatentApplyOperation"
    display_name = "LatentApplyOperation"
    category = "latent/advanced/operations"

    samples: Latent = Link()
    operation: LatentOperation = Link()

    def execute(self, ctx) -> LatentOut:
        return LatentOut(dataclasses.replace(self.samples, samples=self.operation(self.samples.samples)))


class LatentApplyOperationCFG(Node):
    """A latent operation on the guidance at every step, before CFG."""

    class_type = "LatentApplyOperationCFG"
    display_name = "LatentApplyOperationCFG"
    category = "latent/advanced/operations"

    model: DiffusionModel = Link()
    operation: LatentOperation = Link()

    def execute(self, ctx) -> ModelOut:
        step = GuidanceOperation(self.operation)
        return ModelOut(dataclasses.replace(self.model, pre_cfg=self.model.pre_cfg + (step,)))


class LatentOperationTonemapReinhard(Node):
    class_type = "LatentOperationTonemapReinhard"
    display_name = "LatentOperationTonemapReinhard"
    category = "latent/advanced/operations"

    multiplier: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)

    def execute(self, ctx) -> OperationOut:
        return OperationOut(ReinhardTonemap(self.multiplier))


class LatentOperationSharpen(Node):
    class_type = "LatentOperationSharpen"
    display_name = "LatentOperationSharpen"
    category = "latent/advanced/operations"

    sharpen_radius: int = Widget(9, ge=1, le=31, step=1)
    sigma: float = Widget(1.0, ge=0.1, le=10.0, step=0.1)
    alpha: float = Widget(0.1, ge=0.0, le=5.0, step=0.01)

    def execute(self, ctx) -> OperationOut:
        return OperationOut(LatentSharpen(self.sharpen_radius, self.sigma, self.alpha))
