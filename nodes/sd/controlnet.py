"""ControlNets for SD1.x, SD2.x and SDXL UNets: files, the chain a conditioning carries, and
their residuals while sampling.

A file is either the original layout (`cldm` names, with or without `control_model.`) or
diffusers' (`controlnet_cond_embedding.…`); its config is read off the shapes as a UNet's is. The
network is diffusers' ControlNetModel; its outputs are added to the UNet's skip connections and
middle block, as ComfyUI adds its `output` and `middle` controls.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import EdgeValue, ModelLoadError

from ..core.state_files import CheckpointFile
from .families import SD2
from .models import compute_dtype, loaded_bytes

LDM_PREFIX = "control_model."
# What other control files hold, to refuse them by name rather than fail on a missing weight
OTHER_KINDS = {"lora_controlnet": "a Control-LoRA", "controlnet_blocks.0.weight": "an SD3/Flux ControlNet",
               "controlnet_x_embedder.weight": "a Flux ControlNet", "control_add_embedding.linear_1.weight":
               "a ControlNet-Union"}


@dataclass(frozen=True)
class ControlNetHandle(EdgeValue):
    """ComfyUI's CONTROL_NET: a ControlNet file, read lazily (`ctx.models.get(handle)`)."""

    comfy_type = "CONTROL_NET"
    path: str
    prefix: str
    layout: str  # "ldm" or "diffusers"
    config_json: str  # diffusers ControlNetModel config (JSON keeps the handle hashable)
    family_name: str
    device: str
    global_average_pooling: bool = False  # shuffle models: ComfyUI averages their outputs
    # a "diff" ControlNet stores its weights minus the UNet's: (checkpoint, UNet prefix) to add back
    base: tuple[str, str] | None = None

    @property
    def cache_key(self):
        return ("controlnet", self.path, self.device, self.base)

    @property
    def config(self) -> dict:
        return json.loads(self.config_json)

    def estimated_bytes(self) -> int:
        return loaded_bytes(self.path, self.prefix, self.device)

    def load(self) -> Any:
        from diffusers import ControlNetModel
        from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

        state = CheckpointFile(self.path).tensors(self.prefix, strip=True)
        if self.base is not None:  # in the file's precision, as ComfyUI adds them
            unet = CheckpointFile(self.base[0]).tensors(self.base[1], strip=True)
            state = {k: v + unet[k].to(v.dtype) if k in unet else v for k, v in state.items()}
        try:
            if self.layout == "ldm":
                converted = convert_controlnet_checkpoint({LDM_PREFIX + k: v for k, v in state.items()}, self.config)
                # diffusers' table has no SDXL size embedding for ControlNets
                size_embedding = (("label_emb.0.0", "add_embedding.linear_1"), ("label_emb.0.2", "add_embedding.linear_2"))
                for ldm, ours in size_embedding:
                    for kind in ("weight", "bias"):
                        if f"{ldm}.{kind}" in state:
                            converted[f"{ours}.{kind}"] = state[f"{ldm}.{kind}"]
            else:
                converted = state
            net = ControlNetModel(**self.config)
            net.load_state_dict(converted, strict=True)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ModelLoadError(f"{Path(self.path).name}: the ControlNet does not fit its detected "
                                 f"{self.family_name} layout: {str(exc)[:400]}") from exc
        return net.to(self.device, compute_dtype(self.device)).eval()


def controlnet_handle(path, device: str, model=None):
    """Tell a ControlNet file's layout, config and family from its tensor names and shapes (or
    hand it to the T2I-Adapter reader, as ComfyUI's loader does). `model`: DiffControlNetLoader's
    MODEL, whose UNet weights a diff ControlNet is stored relative to."""
    from .checkpoint import unet_config
    from .part_loaders import DiffusersUnetView, unet_family
    from .t2i_adapter import is_t2i_adapter, t2i_adapter_handle

    file = CheckpointFile(path)
    names = file.shapes
    for marker, kind in OTHER_KINDS.items():
        if marker in names:
            raise ModelLoadError(f"{Path(path).name} is {kind}, which run-graph does not run yet "
                                 "(SD1.x/SD2.x/SDXL ControlNets and T2I-Adapters do)")
    if "controlnet_cond_embedding.conv_in.weight" in names:
        view, layout, prefix = DiffusersUnetView(file, controlnet=True), "diffusers", ""
    else:
        view, layout = file, "ldm"
        prefix = LDM_PREFIX if f"{LDM_PREFIX}zero_convs.0.0.weight" in names else ""
        if f"{prefix}zero_convs.0.0.weight" not in names and is_t2i_adapter(names):
            return t2i_adapter_handle(path, device, file)
        if f"{prefix}zero_convs.0.0.weight" not in names or f"{prefix}input_hint_block.0.weight" not in names:
            raise ModelLoadError(f"{Path(path).name} is not a ControlNet or T2I-Adapter run-graph knows: it has "
                                 "no zero convolutions and hint encoder (input_hint_block, zero_convs) nor an "
                                 "adapter's conv_in")
    shapes = {k[len(prefix):]: v for k, v in view.shapes.items() if k.startswith(prefix)}
    family = unet_family(unet_config(shapes, "", SD2))  # head layout aside, the shapes say the family
    config = unet_config(shapes, "", family)
    hint = [shapes[f"input_hint_block.{i}.weight"] for i in range(0, 64, 2) if f"input_hint_block.{i}.weight" in shapes]
    for key in ("up_block_types", "out_channels", "sample_size", "reverse_transformer_layers_per_block"):
        config.pop(key, None)
    config.update(conditioning_channels=hint[0][1],
                  conditioning_embedding_out_channels=[hint[0][0]] + [h[0] for h in hint[2:-1:2]])
    stem = Path(path).stem
    base = None
    if "difference" in names and prefix == LDM_PREFIX:
        if model is None or model.layout != "ldm":
            raise ModelLoadError(f"{Path(path).name} is a diff ControlNet (its weights are differences from a "
                                 "UNet's): load it with DiffControlNetLoader and a checkpoint's MODEL")
        base = (model.path, model.unet_prefix)
    return ControlNetHandle(str(path), prefix, layout, json.dumps(config, sort_keys=True), family.name, device,
                            global_average_pooling=stem.endswith(("_shuffle", "_shuffle_fp16")), base=base)


@dataclass(frozen=True, eq=False)
class ControlLink:
    """One ControlNet applied to a conditioning: the network, its hint image ([B, 3, H, W] in
    [0, 1]), strength and window, and the link applied before it (ComfyUI's previous_controlnet).
    Entries that share a link object are evaluated together, as ComfyUI batches them."""

    net: Any  # ControlNetHandle or T2IAdapterHandle
    hint: Any
    strength: float
    start_percent: float = 0.0
    end_percent: float = 1.0
    previous: "ControlLink | None" = None

    def chain(self) -> list["ControlLink"]:
        """Oldest first."""
        return ([] if self.previous is None else self.previous.chain()) + [self]

    def active(self, sigma: float, percent_to_sigma) -> bool:
        return not (sigma > percent_to_sigma(self.start_percent) or sigma < percent_to_sigma(self.end_percent))


def _broadcast(hint, batch: int, batched_number: int):
    """ComfyUI's broadcast_image_to: a hint batch fills each conditioning's share of the batch."""
    import torch

    if hint.shape[0] == 1:
        return hint
    per_cond = batch // batched_number
    hint = hint[:per_cond]
    if per_cond > hint.shape[0]:
        hint = torch.cat([hint] * (per_cond // hint.shape[0]) + [hint[:per_cond % hint.shape[0]]])
    return hint if hint.shape[0] == batch else torch.cat([hint] * batched_number)


@dataclass
class Residuals:
    """What the active links add to the UNet, summed: to the skip connections (ControlNets, in
    diffusers' `down_block_additional_residuals` order), to input blocks' outputs by LDM index
    (T2I-Adapters) and to the middle block's output (both)."""

    skips: list | None = None
    blocks: dict = field(default_factory=dict)
    middle: Any = None

    def add(self, skips=None, blocks=None, middle=None) -> None:
        if skips is not None:
            self.skips = skips if self.skips is None else [a + b for a, b in zip(self.skips, skips)]
        for index, extra in (blocks or {}).items():
            self.blocks[index] = extra if index not in self.blocks else self.blocks[index] + extra
        if middle is not None:
            self.middle = middle if self.middle is None else self.middle + middle


def control_residuals(links: list[ControlLink], nets: dict, x_in, timesteps, context, added: dict,
                      batched_number: int, unet_config: dict) -> Residuals:
    """The active links' contributions, oldest first, each scaled by its strength."""
    import torch

    from ..core.resample import common_upscale
    from .t2i_adapter import T2IAdapterHandle, input_block_of_level

    out = Residuals()
    for link in links:
        net = nets[link.net]
        if isinstance(link.net, T2IAdapterHandle):
            # ComfyUI: the hint goes to the latent size × 8, rounded up to the adapter's unshuffle
            factor = link.net.downscale_factor
            width, height = (math.ceil(s * 8 / factor) * factor for s in (x_in.shape[3], x_in.shape[2]))
            hint = common_upscale(link.hint.float(), width, height, "nearest-exact", "center")
            if link.net.in_channels == 1 and hint.shape[1] > 1:
                hint = torch.mean(hint, 1, keepdim=True)
            hint = _broadcast(hint.to(x_in.device), x_in.shape[0], batched_number)
            maps = [m * link.strength for m in net(hint.to(next(net.parameters()).dtype))]
            middle = maps.pop() if link.net.xl else None
            blocks = dict(zip(input_block_of_level(unet_config, link.net.xl), maps))
            out.add(blocks=blocks, middle=middle)
            continue
        dtype = net.dtype
        hint = common_upscale(link.hint.float(), x_in.shape[3] * 8, x_in.shape[2] * 8, "nearest-exact", "center")
        hint = _broadcast(hint.to(x_in.device, dtype), x_in.shape[0], batched_number)
        blocks, middle = net(x_in.to(dtype), timesteps.float(), encoder_hidden_states=context.to(dtype),
                             controlnet_cond=hint, added_cond_kwargs=added or None, return_dict=False)
        outputs = []
        for output in [*blocks, middle]:
            if link.net.global_average_pooling:
                output = torch.mean(output, dim=(2, 3), keepdim=True).expand_as(output)
            outputs.append(output * link.strength)
        out.add(skips=outputs[:-1], middle=outputs[-1])
    return out


def conditioning_models(ctx, model, conditionings, unet=None) -> dict:
    """Every ControlNet, T2I-Adapter and GLIGEN model the conditionings carry, loaded, after
    checking each fits the model (`unet`: the loaded UNet, which GLIGEN's fusers must match)."""
    handles, gligens = {}, {}
    for conditioning in conditionings:
        for entry in conditioning.entries if conditioning is not None else ():
            for link in entry.control.chain() if entry.control is not None else ():
                handles[link.net] = None
            if entry.gligen is not None:
                gligens[entry.gligen[0]] = None
    config = json.loads(model.unet_config_json)
    for net in handles:
        problem = _misfit(net, config, model)
        if problem:
            error = ModelLoadError(f"{net.path} {problem}")
            error.model_key = net.cache_key  # reported on the loader that chose the file
            raise error
    loaded = {net: ctx.models.get(net) for net in [*handles, *gligens]}
    if unet is not None:
        from .gligen import transformer_blocks

        widths = [block.attn1.query_dim for block in transformer_blocks(unet)]
        for gligen in gligens:
            fusers = [fuser.linear.weight.shape[0] for fuser in loaded[gligen]["fusers"]]
            if fusers != widths:
                error = ModelLoadError(f"{gligen.path} is a GLIGEN model for a UNet whose transformer blocks are "
                                       f"{fusers} wide; {Path(model.path).name}'s are {widths}")
                error.model_key = gligen.cache_key
                raise error
    return loaded


def _misfit(net, unet: dict, model) -> str | None:
    from .t2i_adapter import T2IAdapterHandle

    widths = list(unet["block_out_channels"])
    if isinstance(net, T2IAdapterHandle):
        # ComfyUI's placement: SD adapters need three input blocks a level, SDXL ones SDXL's levels
        wanted = widths + [widths[-1]] if net.xl else widths
        if list(net.channels) != wanted or (not net.xl and unet["layers_per_block"] != 2):
            return (f"is a T2I-Adapter with levels {list(net.channels)} wide; the model sampled "
                    f"({Path(model.path).name}) has {widths} with {unet['layers_per_block']} blocks a level")
        return None
    config = net.config
    fits = all(config.get(k) == unet.get(k) for k in ("cross_attention_dim", "projection_class_embeddings_input_dim"))
    if not fits or config["block_out_channels"] != widths:
        return f"is a ControlNet for {net.family_name} models; the model sampled is {model.family_name} " \
               f"({Path(model.path).name})"
    return None
