"""Nodes that change how a MODEL samples without touching its weights: ModelSamplingDiscrete
(the prediction type and zero-terminal-SNR schedule), ModelSamplingContinuousEDM / V, RescaleCFG,
the post-CFG steps (PerturbedAttentionGuidance, SelfAttentionGuidance, Epsilon Scaling,
CFGZeroStar, CFGNorm), DifferentialDiffusion, FreeU, FreeU_V2, PatchModelAddDownscale and
HypernetworkLoader. They return a new handle; the UNet loaded for it is the same."""
from __future__ import annotations

import dataclasses
from typing import Literal

from engine import Link, Node, Widget

from ..sampling import post_cfg, pre_cfg, sag
from ..sd.loaders import ModelOut
from ..sd.deep_shrink import METHODS as SHRINK_METHODS
from ..sd.deep_shrink import DeepShrink
from ..sd.freeu import FreeU as FreeUSettings
from ..sd.hypernetwork import Hypernetwork
from ..sd.hypertile import HyperTileSettings
from ..sampling.conditioning import Conditioning
from ..sd.models import DiffusionModel
from ..sd.part_loaders import files_fingerprint, files_in, find_model_file


def with_post_cfg(model: DiffusionModel, step) -> ModelOut:
    """The model with one more post-CFG step, after those already added (ComfyUI's order)."""
    return ModelOut(dataclasses.replace(model, post_cfg=model.post_cfg + (step,)))


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
                                            zero_terminal_snr=self.zsnr, continuous=None))


def _continuous_kind(value, vctx) -> str | None:
    if value == "cosmos_rflow":
        return (f"sampling {value!r} needs a flow model run-graph does not have; "
                "supported: v_prediction, edm, edm_playground_v2.5, eps")
    return None


class ModelSamplingContinuousEDM(Node):
    """Sample the model on continuous σ in [sigma_min, sigma_max], as an EDM, v or eps model."""

    class_type = "ModelSamplingContinuousEDM"
    display_name = "ModelSamplingContinuousEDM"
    category = "advanced/model"

    model: DiffusionModel = Link()
    sampling: Literal["v_prediction", "edm", "edm_playground_v2.5", "eps", "cosmos_rflow"] = Widget(
        "v_prediction", check=_continuous_kind)
    sigma_max: float = Widget(120.0, ge=0.0, le=1000.0, step=0.001)
    sigma_min: float = Widget(0.002, ge=0.0, le=1000.0, step=0.001)

    def execute(self, ctx) -> ModelOut:
        prediction = {"v_prediction": "v", "edm": "edm", "edm_playground_v2.5": "edm", "eps": "eps"}[self.sampling]
        sigma_data = 0.5 if prediction == "edm" else 1.0
        # the Playground choice also sets the latent format; the others keep the model's
        playground = self.model.playground or self.sampling == "edm_playground_v2.5"
        return ModelOut(dataclasses.replace(self.model, prediction=prediction, zero_terminal_snr=False,
                                            continuous=(self.sigma_min, self.sigma_max, sigma_data, False),
                                            playground=playground))


class ModelSamplingContinuousV(Node):
    """Continuous v-prediction with t = 2·atan(σ)/π."""

    class_type = "ModelSamplingContinuousV"
    display_name = "ModelSamplingContinuousV"
    category = "advanced/model"

    model: DiffusionModel = Link()
    sampling: Literal["v_prediction"] = Widget("v_prediction")
    sigma_max: float = Widget(500.0, ge=0.0, le=1000.0, step=0.001)
    sigma_min: float = Widget(0.03, ge=0.0, le=1000.0, step=0.001)

    def execute(self, ctx) -> ModelOut:
        return ModelOut(dataclasses.replace(self.model, prediction="v", zero_terminal_snr=False,
                                            continuous=(self.sigma_min, self.sigma_max, 1.0, True)))


class RescaleCFG(Node):
    """Rescale the guided prediction to the conditional one's spread (for v-prediction models)."""

    class_type = "RescaleCFG"
    display_name = "RescaleCFG"
    category = "advanced/model"

    model: DiffusionModel = Link()
    multiplier: float = Widget(0.7, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> ModelOut:
        # ComfyUI's model holds one CFG function: the last patch to set it wins
        return ModelOut(dataclasses.replace(self.model, cfg_rescale=self.multiplier, perp_neg=None))


class PerpNeg(Node):
    """The deprecated form of PerpNegGuider: its perpendicular-negative CFG as the model's CFG
    function (replacing RescaleCFG's; at CFG 1 the negative is not evaluated and counts as 0, as
    a CFG function sees it in ComfyUI)."""

    class_type = "PerpNeg"
    display_name = "Perp-Neg (DEPRECATED by PerpNegGuider)"
    category = "_for_testing"

    model: DiffusionModel = Link()
    empty_conditioning: Conditioning = Link()
    neg_scale: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)

    def execute(self, ctx) -> ModelOut:
        return ModelOut(dataclasses.replace(self.model, perp_neg=(self.empty_conditioning, self.neg_scale),
                                            cfg_rescale=None))


class PerturbedAttentionGuidance(Node):
    """Guide away from the prediction made with the middle block's self-attention perturbed (PAG)."""

    class_type = "PerturbedAttentionGuidance"
    display_name = "PerturbedAttentionGuidance"
    category = "model_patches/unet"

    model: DiffusionModel = Link()
    scale: float = Widget(3.0, ge=0.0, le=100.0, step=0.01)

    def execute(self, ctx) -> ModelOut:
        return with_post_cfg(self.model, post_cfg.PerturbedAttention(self.scale))


class DifferentialDiffusion(Node):
    """Inpaint by how much: a soft noise mask says when each pixel starts changing."""

    class_type = "DifferentialDiffusion"
    display_name = "Differential Diffusion"
    category = "_for_testing"

    model: DiffusionModel = Link()
    strength: float = Widget(1.0, ge=0.0, le=1.0, step=0.01, optional=True)

    def execute(self, ctx) -> ModelOut:
        return ModelOut(dataclasses.replace(self.model, differential_diffusion=self.strength))


class FreeU(Node):
    """Scale the decoder's backbone features up and its skip connections' low frequencies down."""

    class_type = "FreeU"
    category = "model_patches/unet"

    model: DiffusionModel = Link()
    b1: float = Widget(1.1, ge=0.0, le=10.0, step=0.01)
    b2: float = Widget(1.2, ge=0.0, le=10.0, step=0.01)
    s1: float = Widget(0.9, ge=0.0, le=10.0, step=0.01)
    s2: float = Widget(0.2, ge=0.0, le=10.0, step=0.01)
    generation = 1

    def execute(self, ctx) -> ModelOut:
        settings = FreeUSettings(self.generation, self.b1, self.b2, self.s1, self.s2)
        return ModelOut(dataclasses.replace(self.model, freeu=settings))


class FreeU_V2(FreeU):  # noqa: N801 - ComfyUI's node name
    """FreeU with the backbone scaled by each pixel's normalised channel mean."""

    class_type = "FreeU_V2"

    b1: float = Widget(1.3, ge=0.0, le=10.0, step=0.01)
    b2: float = Widget(1.4, ge=0.0, le=10.0, step=0.01)
    s1: float = Widget(0.9, ge=0.0, le=10.0, step=0.01)
    s2: float = Widget(0.2, ge=0.0, le=10.0, step=0.01)
    generation = 2


class SelfAttentionGuidance(Node):
    """Guidance away from a copy of the image blurred where the middle block's self-attention
    looks most (the unconditional side's map); it always evaluates the negative side."""

    class_type = "SelfAttentionGuidance"
    display_name = "Self-Attention Guidance"
    category = "_for_testing"

    model: DiffusionModel = Link()
    scale: float = Widget(0.5, ge=-2.0, le=5.0, step=0.01)
    blur_sigma: float = Widget(2.0, ge=0.0, le=10.0, step=0.1)

    def execute(self, ctx) -> ModelOut:
        return with_post_cfg(self.model, sag.SelfAttentionGuidance(self.scale, self.blur_sigma))


class EpsilonScaling(Node):
    """Divide the noise the guided estimate implies by the factor (exposure-bias correction)."""

    class_type = "Epsilon Scaling"
    display_name = "Epsilon Scaling"
    category = "model_patches/unet"

    model: DiffusionModel = Link()
    scaling_factor: float = Widget(1.005, ge=0.5, le=1.5, step=0.001)

    def execute(self, ctx) -> ModelOut:
        return with_post_cfg(self.model, post_cfg.EpsilonScaling(self.scaling_factor))


class CFGZeroStar(Node):
    """CFG-Zero*: rescale the negative estimate by its projection onto the positive one."""

    class_type = "CFGZeroStar"
    display_name = "CFGZeroStar"
    category = "advanced/guidance"
    output_names = ("patched_model",)

    model: DiffusionModel = Link()

    def execute(self, ctx) -> ModelOut:
        return with_post_cfg(self.model, post_cfg.CFGZeroStar())


class CFGNorm(Node):
    """Cap the guided estimate's channel norm at the positive estimate's, times the strength."""

    class_type = "CFGNorm"
    display_name = "CFGNorm"
    category = "advanced/guidance"
    output_names = ("patched_model",)

    model: DiffusionModel = Link()
    strength: float = Widget(1.0, ge=0.0, le=100.0, step=0.01)

    def execute(self, ctx) -> ModelOut:
        return with_post_cfg(self.model, post_cfg.CFGNorm(self.strength))


class Mahiro(Node):
    """Scale the guidance more along the positive prompt's own direction than along its difference
    from the negative's."""

    class_type = "Mahiro"
    display_name = "Mahiro is so cute that she deserves a better guidance function!! (。・ω・。)"
    category = "_for_testing"
    output_names = ("patched_model",)

    model: DiffusionModel = Link()

    def execute(self, ctx) -> ModelOut:
        return with_post_cfg(self.model, post_cfg.Mahiro())


def with_pre_cfg(model: DiffusionModel, step) -> ModelOut:
    return ModelOut(dataclasses.replace(model, pre_cfg=model.pre_cfg + (step,)))


class APG(Node):
    """Adaptive Projected Guidance: the guidance's part along the positive estimate scaled by eta,
    its norm capped, optionally averaged over steps (fewer oversaturated colours at high CFG)."""

    class_type = "APG"
    display_name = "Adaptive Projected Guidance"
    category = "sampling/custom_sampling"

    model: DiffusionModel = Link()
    eta: float = Widget(1.0, ge=-10.0, le=10.0, step=0.01)
    norm_threshold: float = Widget(5.0, ge=0.0, le=50.0, step=0.1)
    momentum: float = Widget(0.0, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> ModelOut:
        return with_pre_cfg(self.model, pre_cfg.AdaptiveProjectedGuidance(self.eta, self.norm_threshold,
                                                                          self.momentum))


class TCFG(Node):
    """Tangential Damping CFG: the negative aligned with the positive before CFG."""

    class_type = "TCFG"
    display_name = "Tangential Damping CFG"
    category = "advanced/guidance"
    output_names = ("patched_model",)

    model: DiffusionModel = Link()

    def execute(self, ctx) -> ModelOut:
        return with_pre_cfg(self.model, pre_cfg.TangentialDamping())


class FreSca(Node):
    """Scale the guidance's low and high frequencies apart."""

    class_type = "FreSca"
    display_name = "FreSca"
    category = "_for_testing"

    model: DiffusionModel = Link()
    scale_low: float = Widget(1.0, ge=0.0, le=10.0, step=0.01)
    scale_high: float = Widget(1.25, ge=0.0, le=10.0, step=0.01)
    freq_cutoff: int = Widget(20, ge=1, le=10000, step=1)

    def execute(self, ctx) -> ModelOut:
        return with_pre_cfg(self.model, pre_cfg.FrequencyScaledGuidance(self.scale_low, self.scale_high,
                                                                        self.freq_cutoff))


class PatchModelAddDownscale(Node):
    """Kohya's Deep Shrink: early in sampling the UNet works on a smaller hidden state from input
    block `block_number` on, so large images keep a small image's composition."""

    class_type = "PatchModelAddDownscale"
    display_name = "PatchModelAddDownscale (Kohya Deep Shrink)"
    category = "model_patches/unet"

    model: DiffusionModel = Link()
    block_number: int = Widget(3, ge=1, le=32, step=1)
    downscale_factor: float = Widget(2.0, ge=0.1, le=9.0, step=0.001)
    start_percent: float = Widget(0.0, ge=0.0, le=1.0, step=0.001)
    end_percent: float = Widget(0.35, ge=0.0, le=1.0, step=0.001)
    downscale_after_skip: bool = Widget(True)
    downscale_method: Literal[SHRINK_METHODS] = Widget("bicubic")  # type: ignore[valid-type]
    upscale_method: Literal[SHRINK_METHODS] = Widget("bicubic")  # type: ignore[valid-type]

    def execute(self, ctx) -> ModelOut:
        sampling = self.model.model_sampling()
        shrink = DeepShrink(self.block_number, self.downscale_factor, sampling.percent_to_sigma(self.start_percent),
                            sampling.percent_to_sigma(self.end_percent), self.downscale_after_skip,
                            self.downscale_method, self.upscale_method)
        return ModelOut(dataclasses.replace(self.model, deep_shrink=shrink))


class HyperTile(Node):
    """Tiled self-attention on the UNet's highest-resolution levels (faster on large images)."""

    class_type = "HyperTile"
    display_name = "HyperTile"
    category = "model_patches/unet"

    model: DiffusionModel = Link()
    tile_size: int = Widget(256, ge=1, le=2048)
    swap_size: int = Widget(2, ge=1, le=128)
    max_depth: int = Widget(0, ge=0, le=10)
    scale_depth: bool = Widget(False)

    def execute(self, ctx) -> ModelOut:
        settings = HyperTileSettings(self.tile_size, self.swap_size, self.max_depth, self.scale_depth)
        return ModelOut(dataclasses.replace(self.model, hypertile=settings))


class TomePatchModel(Node):
    """Token Merging: merge `ratio` of the full-resolution self-attention queries (faster)."""

    class_type = "TomePatchModel"
    display_name = "TomePatchModel"
    category = "_for_testing"

    model: DiffusionModel = Link()
    ratio: float = Widget(0.3, ge=0.0, le=1.0, step=0.01)

    def execute(self, ctx) -> ModelOut:
        return ModelOut(dataclasses.replace(self.model, tome_ratio=self.ratio))


class ModelComputeDtype(Node):
    """Run the UNet in another dtype (a debugging aid)."""

    class_type = "ModelComputeDtype"
    display_name = "ModelComputeDtype"
    category = "advanced/debug/model"

    model: DiffusionModel = Link()
    dtype: Literal["default", "fp32", "fp16", "bf16"] = Widget("default")

    def execute(self, ctx) -> ModelOut:
        return ModelOut(dataclasses.replace(self.model, compute_dtype=self.dtype))


class HypernetworkLoader(Node):
    """An A1111 hypernetwork from `<models>/hypernetworks`, applied to the model's attentions."""

    class_type = "HypernetworkLoader"
    display_name = "HypernetworkLoader"
    category = "loaders"
    loads_models = True

    model: DiffusionModel = Link()
    hypernetwork_name: str = Widget(choices=files_in(("hypernetworks",)))
    strength: float = Widget(1.0, ge=-10.0, le=10.0, step=0.01)

    fingerprint = files_fingerprint(("hypernetworks",), "hypernetwork_name")

    def execute(self, ctx) -> ModelOut:
        path = find_model_file(ctx.settings, ("hypernetworks",), self.hypernetwork_name, "hypernetwork_name")
        network = Hypernetwork(str(path), ctx.device)
        ctx.models.get(network)  # a file that is no hypernetwork fails here, naming this node
        chained = self.model.hypernetworks + ((network, self.strength),)
        return ModelOut(dataclasses.replace(self.model, hypernetworks=chained))
