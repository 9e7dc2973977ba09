"""Kohya's Deep Shrink (PatchModelAddDownscale) on a diffusers UNet, as ComfyUI patches its blocks.

While σ is in the window, the hidden state leaving LDM input block `block_number` is scaled down
(after its skip connection is saved, or before, so the skip shrinks too), and each output block
scales h back up to its skip connection's size before joining them. ComfyUI's Upsample layers
also always upsample to the size of the skip that comes next, so the output side follows the
skips' sizes whatever they are.

In diffusers, input block b is a (resnet, attention) pair inside a down block, or its
downsampler: "before the skip" is a forward hook on the module that produces the block's output;
"after the skip" is a pre-hook on the module that takes it next (the skip already holds the full
tensor). On the output side, h meets a skip in the concatenation that opens each up-block resnet:
the up block's own pre-hook fits its input h, and a forward hook on each (resnet, attention)
pair fits the h that the next resnet joins.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)
METHODS = ("bicubic", "nearest-exact", "bilinear", "area", "bislerp")
_WARNED: set = set()


def warn_unfitted(where: str, shape, control_shape) -> None:
    """ComfyUI's "control could not be applied" warning, once per kind of mismatch."""
    key = (where, tuple(shape), tuple(control_shape))
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning("a control could not be applied to the %s (%s vs %s): Deep Shrink changed its size; "
                    "it is left out there, as ComfyUI leaves it out", where, tuple(shape), tuple(control_shape))


@dataclass(frozen=True)
class DeepShrink:
    block_number: int
    downscale_factor: float
    sigma_start: float
    sigma_end: float
    downscale_after_skip: bool
    downscale_method: str
    upscale_method: str

    def active(self, sigma: float) -> bool:
        return self.sigma_end <= sigma <= self.sigma_start


def _first(output):
    return output if not isinstance(output, tuple) else output[0]


def _replace_first(output, value):
    return value if not isinstance(output, tuple) else (value,) + tuple(output[1:])


def _input_block_modules(unet, block_number: int):
    """(module that produces LDM input block `block_number`'s output, module that takes it next),
    or None when the UNet has no such block (ComfyUI then patches nothing)."""
    per_level, levels = unet.config.layers_per_block, len(unet.down_blocks)
    level, slot = divmod(block_number - 1, per_level + 1)
    if level >= levels:
        return None
    block = unet.down_blocks[level]
    following = unet.down_blocks[level + 1].resnets[0] if level + 1 < levels else unet.mid_block
    if slot == per_level:  # the level's downsampler
        return (block.downsamplers[0], following) if block.downsamplers else None
    attentions = getattr(block, "attentions", None)
    producer = attentions[slot] if attentions else block.resnets[slot]
    if slot + 1 < per_level:
        return producer, block.resnets[slot + 1]
    return producer, block.downsamplers[0] if block.downsamplers else following


@contextmanager
def deep_shrink_applied(unet, shrink: DeepShrink):
    """For one UNet call at a σ inside the window."""
    from ..core.resample import common_upscale

    def resized(h, size, method):
        return common_upscale(h, size[-1], size[-2], method, "disabled")

    def shrunk(h):
        factor = shrink.downscale_factor
        return resized(h, (round(h.shape[-2] / factor), round(h.shape[-1] / factor)), shrink.downscale_method)

    def fitted(h, skip):
        return resized(h, skip.shape, shrink.upscale_method) if h.shape[2] != skip.shape[2] else h

    handles, skips, current = [], [], {}
    modules = _input_block_modules(unet, shrink.block_number)
    if modules is not None:
        producer, consumer = modules
        if shrink.downscale_after_skip:
            handles.append(consumer.register_forward_pre_hook(lambda m, args: (shrunk(args[0]),) + tuple(args[1:])))
        else:
            handles.append(producer.register_forward_hook(lambda m, a, out: _replace_first(out, shrunk(_first(out)))))

    # The skips' sizes in the order the up blocks take them back (diffusers' down_block_res_samples).
    handles.append(unet.conv_in.register_forward_hook(lambda m, a, out: skips.append(out.shape)))
    for block in unet.down_blocks:
        handles.append(block.register_forward_hook(lambda m, a, out: skips.extend(s.shape for s in out[1])))

    def before_up_block(block, args, kwargs):
        own = kwargs["res_hidden_states_tuple"]
        del skips[-len(own):]
        current["skips"] = own
        kwargs = dict(kwargs, hidden_states=fitted(kwargs["hidden_states"], own[-1]))
        if block.upsamplers is not None and skips:
            kwargs["upsample_size"] = tuple(skips[-1][-2:])
        return args, kwargs

    for block in unet.up_blocks:
        handles.append(block.register_forward_pre_hook(before_up_block, with_kwargs=True))
        pairs = getattr(block, "attentions", None) or block.resnets
        for j, module in enumerate(list(pairs)[:-1]):
            def after_pair(m, a, out, j=j):
                # the skip the next resnet joins h with: the tuple is taken from its end
                return _replace_first(out, fitted(_first(out), current["skips"][-(j + 2)]))
            handles.append(module.register_forward_hook(after_pair))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def controls_fitted(unet, unet_kwargs: dict):
    """For one UNet call with ControlNet residuals under an active Deep Shrink: a residual whose
    skip (or the middle block's output) the shrink resized is left out with a warning, as
    ComfyUI's apply_control leaves out what does not fit; the others are added as diffusers adds
    them. The down residuals are fitted in place once the down blocks have shown every skip's
    size; the middle one is added by a hook (diffusers then adds a broadcast zero)."""
    import torch

    residuals = unet_kwargs.get("down_block_additional_residuals")
    if residuals is None:
        yield
        return
    middle = unet_kwargs["mid_block_additional_residual"]
    unet_kwargs["mid_block_additional_residual"] = torch.zeros((), dtype=middle.dtype, device=middle.device)
    shapes: list = []

    def fit_down(module, args, output):  # the last down block: every skip's size is known now
        for i, (shape, residual) in enumerate(zip(shapes, residuals)):
            if residual.shape != shape:
                warn_unfitted(f"skip of input block {i}", shape, residual.shape)
                residuals[i] = torch.zeros((), dtype=residual.dtype, device=residual.device)

    def add_middle(module, args, output):
        if output.shape != middle.shape:
            warn_unfitted("middle block", output.shape, middle.shape)
            return None
        return output + middle

    handles = [unet.conv_in.register_forward_hook(lambda m, a, out: shapes.append(out.shape))]
    handles += [block.register_forward_hook(lambda m, a, out: shapes.extend(s.shape for s in out[1]))
                for block in unet.down_blocks]
    handles += [unet.down_blocks[-1].register_forward_hook(fit_down),
                unet.mid_block.register_forward_hook(add_middle)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
