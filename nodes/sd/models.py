"""MODEL and CLIP handles for single-file checkpoints; `ctx.models.get(handle)` loads them.

Each handle reads only its own tensors from the file, so a checkpoint's UNet, text encoders and
VAE load (and are evicted) independently.
"""
from __future__ import annotations

import json
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine import EdgeValue, ModelLoadError

from .families import BY_NAME, Family, TextEncoderSpec


def loaded_bytes(path: str, prefix: str, device: str, float32: bool = False) -> int:
    """What the tensors under `prefix` take once loaded (read from the file's header): the
    store's budgets count a checkpoint's parts, not its whole file."""
    import math

    from ..core.state_files import CheckpointFile

    elements = sum(math.prod(shape) for name, shape in CheckpointFile(path).shapes.items() if name.startswith(prefix))
    return elements * (4 if float32 or not device.startswith("cuda") else 2)


def compute_dtype(device: str, name: str = "default"):
    """The UNet's compute dtype: fp16 on CUDA and fp32 elsewhere, unless ModelComputeDtype names one."""
    import torch

    if name != "default":
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
    return torch.float16 if device.startswith("cuda") else torch.float32


@dataclass(frozen=True)
class LoraPatch:
    path: str
    strength: float


@dataclass(frozen=True)
class MergePatch:
    """A merge with `other` (a MODEL or CLIP of the same shape), ComfyUI's key patches: every
    weight w becomes own·w + theirs·w_other. With `block_ratios` (ModelMergeBlocks) each weight
    takes the ratio r of the longest LDM prefix its name starts with (the first one's if none),
    and own = r, theirs = 1 − r."""

    other: Any  # DiffusionModel or TextEncoders
    own: float
    theirs: float
    block_ratios: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ScalePatch:
    """Weights multiplied by a factor where their names end with a suffix (the attention-multiply
    nodes: ComfyUI's strength_model patches), in order with LoRAs and merges."""

    factors: tuple[tuple[str, float], ...]  # (name suffix, factor)

    def factor(self, name: str) -> float:
        return next((f for suffix, f in self.factors if name.endswith(suffix)), 1.0)


@dataclass(frozen=True)
class DiffusionModel(EdgeValue):
    """ComfyUI's MODEL: a UNet in a checkpoint (or a UNet-only file), its family and the
    LoRAs to patch in while sampling."""

    comfy_type = "MODEL"
    path: str
    family_name: str
    unet_prefix: str
    unet_config_json: str  # the diffusers config read off the weights (JSON keeps the handle hashable)
    prediction: str
    device: str
    zero_terminal_snr: bool = False
    loras: tuple[LoraPatch | MergePatch | ScalePatch, ...] = ()  # in the order they apply
    weight_dtype: str = "default"  # UNETLoader's fp8 choices store the weights in that format
    compute_dtype: str = "default"  # ModelComputeDtype's choice (fp32, fp16, bf16)
    layout: str = "ldm"  # or "diffusers": a UNet file already in diffusers' names
    cfg_rescale: float | None = None  # RescaleCFG's multiplier
    perp_neg: tuple | None = None  # the deprecated PerpNeg patch's (empty conditioning, neg_scale)
    hypertile: Any = None  # HyperTile's settings (sd.hypertile.HyperTileSettings)
    tome_ratio: float | None = None  # TomePatchModel's share of merged tokens
    post_cfg: tuple = ()  # post-CFG steps in the order nodes added them (PAG, SAG, Epsilon Scaling…)
    pre_cfg: tuple = ()  # pre-CFG steps in the order nodes added them (APG, TCFG, FreSca)
    differential_diffusion: float | None = None  # DifferentialDiffusion's strength
    freeu: Any = None  # FreeU / FreeU_V2 settings (sd.freeu.FreeU)
    deep_shrink: Any = None  # PatchModelAddDownscale's settings (sd.deep_shrink.DeepShrink)
    continuous: tuple | None = None  # continuous σ: (σ_min, σ_max, σ_data, arctan timesteps)
    stored_edm: bool = False  # the file itself is an EDM v-prediction model (ComfyUI's V_PREDICTION_EDM)
    playground: bool = False  # Playground v2.5's latent format (its checkpoints' edm_mean, or the EDM node)
    hypernetworks: tuple = ()  # (Hypernetwork handle, strength), in the order they apply

    @property
    def family(self) -> Family:
        return BY_NAME[self.family_name]

    @property
    def cache_key(self):
        return ("sd-unet", self.path, self.unet_prefix, self.device, self.weight_dtype, self.compute_dtype)

    def estimated_bytes(self) -> int:
        return loaded_bytes(self.path, self.unet_prefix, self.device)

    def with_loras(self, *patches: LoraPatch) -> "DiffusionModel":
        return replace(self, loras=self.loras + patches)

    def latent_format(self):
        from ..sampling.latent_format import PLAYGROUND_V2_5, LatentFormat

        return PLAYGROUND_V2_5 if self.playground else LatentFormat(self.family.latent_scale)

    def model_sampling(self):
        from ..sampling.model_sampling import model_sampling

        return model_sampling(self.prediction, self.zero_terminal_snr, self.continuous)

    def load(self) -> Any:
        from diffusers import UNet2DConditionModel
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

        from .checkpoint import CheckpointFile

        config = json.loads(self.unet_config_json)
        state = CheckpointFile(self.path).tensors(self.unet_prefix, strip=False)
        try:
            if self.layout == "diffusers":
                converted = state
            else:  # diffusers' converter reads the ComfyUI/LDM prefix only
                converted = convert_ldm_unet_checkpoint(
                    {"model.diffusion_model." + k[len(self.unet_prefix):]: v for k, v in state.items()}, config)
            unet = UNet2DConditionModel(**config)
            unet.load_state_dict(converted, strict=True)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ModelLoadError(f"{Path(self.path).name}: the UNet does not fit its detected "
                                 f"{self.family_name} layout: {str(exc)[:400]}") from exc
        if self.weight_dtype != "default":
            _round_through(unet, self.weight_dtype)
        return unet.to(self.device, compute_dtype(self.device, self.compute_dtype)).eval()


def _round_through(module, weight_dtype: str) -> None:
    """fp8 weight storage, as ComfyUI's weight_dtype does: each weight rounded to the 8-bit
    format and computed upcast, so the numbers are the fp8 ones even where fp8 kernels are not."""
    import torch

    storage = torch.float8_e5m2 if weight_dtype == "fp8_e5m2" else torch.float8_e4m3fn
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(param.to(storage).to(param.dtype))


@dataclass(frozen=True)
class TextEncoders(EdgeValue):
    """ComfyUI's CLIP: the family's text towers (from a checkpoint or separate files), which
    layer to read, and LoRAs."""

    comfy_type = "CLIP"
    family_name: str
    towers: tuple["TextTower", ...]  # in the family's order (SDXL: CLIP-L, then bigG)
    layer: int | None = None  # CLIPSetLastLayer; None: the family's default
    loras: tuple[LoraPatch | MergePatch | ScalePatch, ...] = ()  # in the order they apply
    embeddings_dirs: tuple[str, ...] = field(default=())

    @classmethod
    def of_checkpoint(cls, path: str, family_name: str, device: str, **kwargs) -> "TextEncoders":
        towers = tuple(TextTower(str(path), spec, device) for spec in BY_NAME[family_name].encoders)
        return cls(family_name, towers, **kwargs)

    @property
    def family(self) -> Family:
        return BY_NAME[self.family_name]


@dataclass(frozen=True)
class TextTower(EdgeValue):
    """One CLIP text model in a file (a checkpoint's, or a text-encoder file), as a handle."""

    path: str
    spec: TextEncoderSpec
    device: str

    @property
    def cache_key(self):
        return ("clip-tower", self.path, self.spec.prefix, self.device)

    def estimated_bytes(self) -> int:
        return loaded_bytes(self.path, self.spec.prefix, self.device, float32=True)

    def load(self) -> Any:
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        from ..core.ldm_keys import open_clip_to_hf_clip
        from .checkpoint import CheckpointFile

        state = CheckpointFile(self.path).tensors(self.spec.prefix)
        if self.spec.open_clip:
            state = open_clip_to_hf_clip(state)
        else:
            state = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
                     for k, v in state.items()}
            state.pop("text_model.embeddings.position_ids", None)
        hidden = state["text_model.embeddings.token_embedding.weight"].shape[1]
        layers = len({k.split(".")[3] for k in state if k.startswith("text_model.encoder.layers.")})
        config = CLIPTextConfig(
            vocab_size=state["text_model.embeddings.token_embedding.weight"].shape[0], hidden_size=hidden,
            intermediate_size=state["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
            num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
            max_position_embeddings=state["text_model.embeddings.position_embedding.weight"].shape[0],
            hidden_act="quick_gelu" if self.spec.name == "l" else "gelu",  # OpenAI's CLIP-L; OpenCLIP's H and bigG
            projection_dim=state["text_projection.weight"].shape[0] if "text_projection.weight" in state else hidden,
            bos_token_id=49406, eos_token_id=49407, pad_token_id=self.spec.pad_token)
        model_class = CLIPTextModelWithProjection if self.spec.projected_pool else CLIPTextModel
        model = model_class(config)
        if not self.spec.projected_pool:
            # transformers 5's CLIPTextModel has no `text_model.` level; checkpoints keep v4's names
            state = {k.removeprefix("text_model."): v for k, v in state.items() if k != "text_projection.weight"}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"{Path(self.path).name}: text encoder at {self.spec.prefix} does not "
                                 f"load: {str(exc)[:400]}") from exc
        # ComfyUI computes text encoders in float32 even when their weights are stored in fp16
        return model.to(self.device).float().eval()


def sampling_model(handle: DiffusionModel, unet, side_models: dict | None = None):
    """The model as the sampler sees it: raw predictions at integer timesteps for a batch of
    conditioning entries, with token lengths repeated to their LCM (77 vs 154: exact), plus what
    the batch's ControlNets, T2I-Adapters and GLIGEN boxes add (`side_models`: those models,
    loaded, by handle)."""
    import math

    import torch

    from ..sampling.ksampler import SamplingModel
    from ..sampling.sag import SelfAttentionGuidance
    from .controlnet import control_residuals
    from .deep_shrink import controls_fitted, deep_shrink_applied
    from .gligen import fusers_lent, grounding
    from .hypertile import hypertile_applied
    from .tome import token_merging_applied
    from .sag_attention import first_negative_rows, recording_middle_attention
    from .t2i_adapter import adding_to_input_blocks

    family, dtype, device = handle.family, unet.dtype, handle.device

    def predict(x_in, timesteps, entries, size, concat, control=None, perturbed=False, sigma=None):
        common = math.lcm(*{e.cross_attn.shape[1] for e in entries})
        context = torch.cat([e.cross_attn.repeat(1, common // e.cross_attn.shape[1], 1) for e in entries])
        context = context.to(device, dtype)
        added = family.added_inputs(entries, size[0] * 8, size[1] * 8, device, dtype)
        unet_kwargs, added_by_hooks = {}, None
        if control is not None:
            links, batched_number = control
            out = control_residuals(links, side_models, x_in, timesteps, context, added, batched_number,
                                    unet.config)
            if out.skips is not None:
                unet_kwargs = {"down_block_additional_residuals": [d.to(dtype) for d in out.skips],
                               "mid_block_additional_residual": out.middle.to(dtype)}
            if out.blocks:
                added_by_hooks = (out.blocks, None if out.skips is not None else out.middle)
        if concat is not None:
            x_in = torch.cat([x_in, concat.to(x_in)], dim=1)
        with ExitStack() as patches:
            if perturbed:
                patches.enter_context(middle_self_attention_as_values(unet))
            if records_attention and (rows := first_negative_rows(entries)) is not None:
                patches.enter_context(recording_middle_attention(unet, rows, recorded))
            if added_by_hooks is not None:  # before a shrink at the same block, as ComfyUI adds controls first
                patches.enter_context(adding_to_input_blocks(unet, *added_by_hooks))
            if handle.deep_shrink is not None and handle.deep_shrink.active(sigma):
                patches.enter_context(deep_shrink_applied(unet, handle.deep_shrink))
                patches.enter_context(controls_fitted(unet, unet_kwargs))
            if handle.hypertile is not None:
                patches.enter_context(hypertile_applied(unet, handle.hypertile, x_in.shape[-2:], generator_on("cpu")))
            if handle.tome_ratio is not None:
                patches.enter_context(token_merging_applied(unet, handle.tome_ratio, x_in.shape[-2:],
                                                            generator_on(x_in.device)))
            if entries[0].gligen is not None:  # a GLIGEN entry runs in a batch of its own
                gligen, boxes = entries[0].gligen
                lent = side_models[gligen]
                patches.enter_context(fusers_lent(unet, lent))
                args = grounding(boxes, x_in.shape[2], x_in.shape[3], x_in.shape[0],
                                 lent["position_net"].positive_len, device)
                unet_kwargs["cross_attention_kwargs"] = {"gligen": {k: v.to(dtype) for k, v in args.items()}}
            return unet(x_in.to(dtype), timesteps.float(), encoder_hidden_states=context,
                        added_cond_kwargs=added, return_dict=False, **unet_kwargs)[0]

    extra = unet.config.in_channels - unet.config.out_channels
    recorded: dict = {}
    drawn: dict = {}  # the sampling run's GlobalGenerators: what patches draw from

    def generator_on(device):
        generators = drawn.get("generators")
        return None if generators is None else generators.on(device)

    records_attention = any(isinstance(step, SelfAttentionGuidance) for step in handle.post_cfg)

    def with_image_pooled(entries, seed: int):
        """SDXL's pooled vector from unCLIP images where an entry has them (revision)."""
        from .clip_vision import revision_pooled

        return [e.replace(pooled=revision_pooled(e.unclip, seed, e.pooled.shape[-1]).to(e.pooled))
                if e.unclip else e for e in entries]

    return SamplingModel(predict, handle.model_sampling(), handle.latent_format(), device, concat_channels=extra,
                         cfg_rescale=handle.cfg_rescale, post_cfg=handle.post_cfg, pre_cfg=handle.pre_cfg,
                         perp_neg=None if handle.perp_neg is None else
                         (list(handle.perp_neg[0].entries), handle.perp_neg[1]),
                         attention=lambda: recorded.get("attention"),
                         differential_diffusion=handle.differential_diffusion,
                         wants_sigma=handle.deep_shrink is not None,
                         ip2p_scale=family.latent_scale if handle.stored_edm else 1.0,
                         prepare=with_image_pooled if family.size_conditioning else None,
                         takes_generators=lambda generators: drawn.update(generators=generators))


@contextmanager
def model_patches_applied(handle: DiffusionModel, unet, side_models: dict):
    """The model's own changes that hold for the whole sampling run, made once around it rather
    than on every UNet call: FreeU's decoder hooks and the hypernetworks' attention processors
    (calls that perturb or ground attention then patch on top of them and put them back)."""
    from .freeu import freeu_applied
    from .hypernetwork import hypernetworks_applied

    with ExitStack() as patches:
        if handle.freeu is not None:
            patches.enter_context(freeu_applied(unet, handle.freeu))
        if handle.hypernetworks:
            networks = [(side_models[network], strength) for network, strength in handle.hypernetworks]
            patches.enter_context(hypernetworks_applied(unet, networks))
        yield


class ValuesOnly:
    """A self-attention that attends to nothing but each token itself: its output is the value
    projection (PAG's perturbed attention, as ComfyUI's `attn1` replacement returns v)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        return attn.to_out[1](attn.to_out[0](attn.to_v(hidden_states)))


@contextmanager
def middle_self_attention_as_values(unet):
    """For the block: every self-attention of the middle block (ComfyUI's "middle", 0) replaced."""
    layers = [block.attn1 for attention in unet.mid_block.attentions for block in attention.transformer_blocks]
    saved = [layer.processor for layer in layers]
    try:
        for layer in layers:
            layer.set_processor(ValuesOnly())
        yield
    finally:
        for layer, processor in zip(layers, saved):
            layer.set_processor(processor)
