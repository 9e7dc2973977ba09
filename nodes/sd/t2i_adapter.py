"""T2I-Adapters for SD1.x/SD2.x/SDXL UNets, placed where ComfyUI places them.

An adapter turns the hint image into one feature map per UNet level, once per hint; ComfyUI
adds each map to the output of its level's last input block, before that output is kept as a
skip connection (SD: input blocks 2, 5, 8, 11; SDXL: 3, 5, 8 and the middle block). The network
is diffusers' T2IAdapter (full, full XL or light); files in TencentARC's original names are
renamed to diffusers' on load. The maps are added by forward hooks on the matching diffusers
modules, so the skip connections carry them exactly as ComfyUI's `input` controls do.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine import EdgeValue, ModelLoadError

from ..core.state_files import CheckpointFile
from .deep_shrink import warn_unfitted


@dataclass(frozen=True)
class T2IAdapterHandle(EdgeValue):
    """A T2I-Adapter file (ComfyUI hands it out as a CONTROL_NET too), read lazily."""

    comfy_type = "CONTROL_NET"
    path: str
    kind: str  # diffusers' adapter_type: full_adapter, full_adapter_xl or light_adapter
    in_channels: int  # of the hint: 1 (depth, sketch…) or 3
    channels: tuple[int, ...]
    num_res_blocks: int
    downscale_factor: int  # 8, or 16 for SDXL adapters
    original_names: bool  # TencentARC's names, not diffusers'
    device: str

    @property
    def cache_key(self):
        return ("t2i_adapter", self.path, self.device)

    @property
    def xl(self) -> bool:
        return self.kind == "full_adapter_xl"

    def estimated_bytes(self) -> int:
        return Path(self.path).stat().st_size * 2

    def load(self):
        import torch
        from diffusers import T2IAdapter

        state = _state(CheckpointFile(self.path))
        if self.original_names:
            state = {_diffusers_name(k, self.kind, self.num_res_blocks): v for k, v in state.items()}
        # diffusers' light adapter repeats its last width for the fourth level itself
        widths = list(self.channels[:-1] if self.kind == "light_adapter" else self.channels)
        adapter = T2IAdapter(in_channels=self.in_channels, channels=widths,
                             num_res_blocks=self.num_res_blocks, downscale_factor=self.downscale_factor,
                             adapter_type=self.kind)
        try:
            adapter.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"{Path(self.path).name}: the T2I-Adapter does not fit its detected {self.kind} "
                                 f"layout: {str(exc)[:400]}") from exc
        # ComfyUI runs adapters in the sampler's float32, whatever the UNet's precision
        return adapter.to(self.device, torch.float32).eval()


def _state(file: CheckpointFile) -> dict:
    raw = file.raw()
    if not file.shapes and isinstance(raw, dict) and isinstance(raw.get("adapter"), dict):
        return dict(raw["adapter"])  # TencentARC's .pth files wrap their weights
    return file.tensors("")


def _diffusers_name(name: str, kind: str, per_level: int) -> str:
    if kind == "light_adapter":  # body.{level}.body.{k} are the level's resnets
        return "adapter." + re.sub(r"^body\.(\d+)\.body\.(\d+)\.", r"body.\1.resnets.\2.", name)
    match = re.match(r"^body\.(\d+)\.(.*)$", name)
    if match is None:
        return "adapter." + name
    index, rest = int(match.group(1)), match.group(2)
    level, k = divmod(index, per_level)
    if rest.startswith("in_conv."):
        return f"adapter.body.{level}.{rest}"
    return f"adapter.body.{level}.resnets.{k}.{rest}"


def is_t2i_adapter(names) -> bool:
    return any(k in names for k in ("conv_in.weight", "body.0.in_conv.weight", "adapter.conv_in.weight",
                                    "adapter.body.0.in_conv.weight")) or not names


def t2i_adapter_handle(path, device: str, file: CheckpointFile | None = None) -> T2IAdapterHandle:
    """What kind of adapter a file holds, read off its names and shapes as ComfyUI tells them
    (`file`: the file already opened, so a pickle is not read again)."""
    file = file or CheckpointFile(path)
    shapes = file.shapes or {k: tuple(v.shape) for k, v in _state(file).items()}
    original = not any(k.startswith("adapter.") for k in shapes)
    names = shapes if original else {k[len("adapter."):]: v for k, v in shapes.items()}
    light = "body.0.out_conv.weight" in names
    if not light and "conv_in.weight" not in names:
        raise ModelLoadError(f"{Path(path).name} is not a ControlNet or T2I-Adapter run-graph knows")
    if any(k.endswith("down_opt.op.weight") for k in names):
        raise ModelLoadError(f"{Path(path).name}: a T2I-Adapter that downsamples with convolutions, which "
                             "run-graph does not run (ComfyUI's use_conv adapters)")
    resnet = (r"body\.(\d+)\.body\.(\d+)\.block1\.weight" if light and original else
              r"body\.(\d+)\.resnets\.(\d+)\.block1\.weight" if not original else r"body\.(\d+)\.block1\.weight")
    found = [tuple(int(g) for g in m.groups()) for k in names if (m := re.match(resnet, k))]
    if not found:
        raise ModelLoadError(f"{Path(path).name} is not a ControlNet or T2I-Adapter run-graph knows")
    if light:
        levels = 1 + max(level for level, _ in found)
        per_level = 1 + max(k for _, k in found)
        channels = tuple(names[f"body.{i}.out_conv.weight"][0] for i in range(levels))
        cin = names["body.0.in_conv.weight"][1]
        kind, factor = "light_adapter", 8
    else:
        cin = names["conv_in.weight"][1]
        if original:  # body.{level·2 + k}: two resnets a level, as every published adapter has
            per_level = 2
            levels = (1 + max(i for (i,) in found)) // per_level
            channels = tuple(names[f"body.{i * per_level}.block1.weight"][0] for i in range(levels))
        else:
            levels = 1 + max(level for level, _ in found)
            per_level = 1 + max(k for _, k in found)
            channels = tuple(names[f"body.{i}.resnets.0.block1.weight"][0] for i in range(levels))
        xl = cin in (256, 768)
        kind, factor = ("full_adapter_xl", 16) if xl else ("full_adapter", 8)
        block2 = next(v for k, v in names.items() if k.endswith("block2.weight"))
        if block2[-1] != 1:
            raise ModelLoadError(f"{Path(path).name}: a T2I-Adapter with {block2[-1]}×{block2[-1]} second "
                                 "convolutions, which run-graph does not run")
    return T2IAdapterHandle(str(path), kind, cin // (factor * factor), channels, per_level, factor, original,
                            device)


def input_block_of_level(config: dict, xl: bool) -> list[int]:
    """The LDM input block each adapter level's map is added to (ComfyUI's list of Nones and
    maps, read as one entry per input block); for SDXL adapters the last map goes to the middle."""
    if xl:
        return [3, 5, 8]
    per_level = config["layers_per_block"]
    return [(per_level + 1) * i + per_level for i in range(len(config["block_out_channels"]))]


def input_block_modules(unet) -> list:
    """diffusers' module whose output is each LDM input block's output (the skip it keeps)."""
    modules = [unet.conv_in]
    for block in unet.down_blocks:
        attentions = getattr(block, "attentions", None)
        for j, resnet in enumerate(block.resnets):
            modules.append(attentions[j] if attentions else resnet)
        if block.downsamplers:
            modules.append(block.downsamplers[0])
    return modules


@contextmanager
def adding_to_input_blocks(unet, additions: dict[int, object], middle=None):
    """For the block: `additions[k]` added to input block k's output, `middle` to the middle block's."""
    modules = input_block_modules(unet)
    handles = []

    def adder(extra, where: str):
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            if h.shape[-2:] != extra.shape[-2:]:  # Deep Shrink resized h: left out, as ComfyUI does
                warn_unfitted(where, h.shape, extra.shape)
                return None
            h = h + extra.to(h.dtype)
            return (h,) + output[1:] if isinstance(output, tuple) else h
        return hook

    for index, extra in additions.items():
        if index >= len(modules):
            raise ValueError(f"the T2I-Adapter has a map for input block {index}, the UNet only {len(modules)}")
        handles.append(modules[index].register_forward_hook(adder(extra, f"input block {index}")))
    if middle is not None:
        handles.append(unet.mid_block.register_forward_hook(adder(middle, "middle block")))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
