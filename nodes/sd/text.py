"""CLIPTextEncode, CLIPTextEncodeSDXL and CLIPTextEncodeSDXLRefiner."""
from __future__ import annotations

from dataclasses import dataclass

from engine import Link, Node, NodeOutput, Widget

from ..sampling.conditioning import CondEntry, Conditioning
from .models import TextEncoders

MAX_SIZE = 16384


@dataclass(frozen=True)
class ConditioningOut(NodeOutput):
    CONDITIONING: Conditioning


def encode(ctx, clip: TextEncoders, texts: dict[str, str]):
    """Encode `texts[tower name]` with each of the family's towers: the token embeddings side by
    side along the features (SDXL: CLIP-L then bigG), the pooled output of the last tower."""
    import torch

    from .clip_text import Embeddings, encode_rows, pack_rows, tokenize
    from .lora import patched, tower_changes

    embeddings = Embeddings(clip.embeddings_dirs)
    packed, models = {}, {}
    for tower in clip.towers:
        spec = tower.spec
        models[spec.name] = model = ctx.models.get(tower)
        groups = tokenize(texts[spec.name], embeddings.for_tower(spec.name, model.config.hidden_size))
        packed[spec.name] = pack_rows(groups, spec.pad_token)
    longest = max(len(rows) for rows in packed.values())
    hidden, pooled = [], None
    for tower in clip.towers:
        spec = tower.spec
        rows = packed[spec.name]
        # towers given different texts may need different row counts: pad with empty prompts
        rows = rows + [pack_rows([], spec.pad_token)[0]] * (longest - len(rows))
        model = models[spec.name]
        layer = clip.layer if clip.layer is not None else spec.default_layer
        if layer is not None and -layer > model.config.num_hidden_layers:
            layer = None  # beyond the first layer: ComfyUI falls back to the last one
        changes = tower_changes(ctx, model, spec, clip)
        with ctx.models.modifying(tower) as change, patched(model, changes, change):
            tokens, pooled = encode_rows(model, rows, layer=layer, final_norm_on_hidden=spec.final_norm_on_hidden,
                                         projected_pool=spec.projected_pool, pad_token=spec.pad_token)
        hidden.append(tokens)
    length = min(h.shape[1] for h in hidden)
    return torch.cat([h[:, :length] for h in hidden], dim=-1), pooled


class CLIPTextEncode(Node):
    """A prompt, with ComfyUI's weighting syntax, as conditioning."""

    class_type = "CLIPTextEncode"
    display_name = "CLIP Text Encode (Prompt)"
    category = "conditioning"

    text: str = Widget(multiline=True, dynamic_prompts=True)
    clip: TextEncoders = Link()

    def execute(self, ctx) -> ConditioningOut:
        names = {tower.spec.name: self.text for tower in self.clip.towers}
        tokens, pooled = encode(ctx, self.clip, names)
        return ConditioningOut(Conditioning((CondEntry(tokens, pooled),)))


class CLIPTextEncodeSDXL(Node):
    """SDXL's two prompts (bigG and CLIP-L) and its size conditioning."""

    class_type = "CLIPTextEncodeSDXL"
    display_name = "CLIPTextEncodeSDXL"
    category = "advanced/conditioning"

    clip: TextEncoders = Link()
    width: int = Widget(1024, ge=0, le=MAX_SIZE)
    height: int = Widget(1024, ge=0, le=MAX_SIZE)
    crop_w: int = Widget(0, ge=0, le=MAX_SIZE)
    crop_h: int = Widget(0, ge=0, le=MAX_SIZE)
    target_width: int = Widget(1024, ge=0, le=MAX_SIZE)
    target_height: int = Widget(1024, ge=0, le=MAX_SIZE)
    text_g: str = Widget(multiline=True, dynamic_prompts=True)
    text_l: str = Widget(multiline=True, dynamic_prompts=True)

    def execute(self, ctx) -> ConditioningOut:
        tokens, pooled = encode(ctx, self.clip, {"l": self.text_l, "g": self.text_g})
        entry = CondEntry(tokens, pooled, width=self.width, height=self.height, crop_w=self.crop_w,
                          crop_h=self.crop_h, target_width=self.target_width, target_height=self.target_height)
        return ConditioningOut(Conditioning((entry,)))


class CLIPTextEncodeSDXLRefiner(Node):
    """The SDXL refiner's prompt with its aesthetic score and size."""

    class_type = "CLIPTextEncodeSDXLRefiner"
    display_name = "CLIPTextEncodeSDXLRefiner"
    category = "advanced/conditioning"

    ascore: float = Widget(6.0, ge=0.0, le=1000.0, step=0.01)
    width: int = Widget(1024, ge=0, le=MAX_SIZE)
    height: int = Widget(1024, ge=0, le=MAX_SIZE)
    text: str = Widget(multiline=True, dynamic_prompts=True)
    clip: TextEncoders = Link()

    def execute(self, ctx) -> ConditioningOut:
        tokens, pooled = encode(ctx, self.clip, {"g": self.text, "l": self.text})
        entry = CondEntry(tokens, pooled, width=self.width, height=self.height, aesthetic_score=self.ascore)
        return ConditioningOut(Conditioning((entry,)))
