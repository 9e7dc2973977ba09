"""ComfyUI's attention experiments: the query, key, value and output projections of the UNet's
self- or cross-attentions (or of the text encoders' self-attentions) scaled by factors, weights
and biases alike, as patches in order with LoRAs and merges."""
from __future__ import annotations

import dataclasses

from engine import Link, Node, Widget

from ..sd.loaders import ClipOut, ModelOut
from ..sd.models import DiffusionModel, ScalePatch, TextEncoders

CATEGORY = "_for_testing/attention_experiments"


def _factor():
    return Widget(1.0, ge=0.0, le=10.0, step=0.01)


def projections(attention: str, q: float, k: float, v: float, out: float) -> ScalePatch:
    """ScalePatch for `<attention>.to_q/to_k/to_v/to_out.0` weights and biases."""
    parts = (("to_q", q), ("to_k", k), ("to_v", v), ("to_out.0", out))
    return ScalePatch(tuple((f"{attention}.{part}.{kind}", factor) for part, factor in parts
                            for kind in ("weight", "bias")))


class UNetSelfAttentionMultiply(Node):
    class_type = "UNetSelfAttentionMultiply"
    display_name = "UNetSelfAttentionMultiply"
    category = CATEGORY

    model: DiffusionModel = Link()
    q: float = _factor()
    k: float = _factor()
    v: float = _factor()
    out: float = _factor()

    def execute(self, ctx) -> ModelOut:
        return ModelOut(self.model.with_loras(projections("attn1", self.q, self.k, self.v, self.out)))


class UNetCrossAttentionMultiply(UNetSelfAttentionMultiply):
    class_type = "UNetCrossAttentionMultiply"
    display_name = "UNetCrossAttentionMultiply"

    def execute(self, ctx) -> ModelOut:
        return ModelOut(self.model.with_loras(projections("attn2", self.q, self.k, self.v, self.out)))


class CLIPAttentionMultiply(Node):
    class_type = "CLIPAttentionMultiply"
    display_name = "CLIPAttentionMultiply"
    category = CATEGORY

    clip: TextEncoders = Link()
    q: float = _factor()
    k: float = _factor()
    v: float = _factor()
    out: float = _factor()

    def execute(self, ctx) -> ClipOut:
        parts = (("q_proj", self.q), ("k_proj", self.k), ("v_proj", self.v), ("out_proj", self.out))
        patch = ScalePatch(tuple((f"self_attn.{part}.{kind}", factor) for part, factor in parts
                                 for kind in ("weight", "bias")))
        return ClipOut(dataclasses.replace(self.clip, loras=self.clip.loras + (patch,)))


class UNetTemporalAttentionMultiply(Node):
    """Video UNets' temporal attention outputs apart from the spatial ones; an image UNet has only
    spatial (structural) ones."""

    class_type = "UNetTemporalAttentionMultiply"
    display_name = "UNetTemporalAttentionMultiply"
    category = CATEGORY

    model: DiffusionModel = Link()
    self_structural: float = _factor()
    self_temporal: float = _factor()
    cross_structural: float = _factor()
    cross_temporal: float = _factor()

    def execute(self, ctx) -> ModelOut:
        patch = ScalePatch(tuple((f"{attention}.to_out.0.{kind}", factor)
                                 for attention, factor in (("attn1", self.self_structural),
                                                           ("attn2", self.cross_structural))
                                 for kind in ("weight", "bias")))
        return ModelOut(self.model.with_loras(patch))
