"""FreeU and FreeU_V2 on a diffusers UNet, as ComfyUI patches its output blocks.

Before each decoder block ComfyUI looks at the running hidden state h: where it has 4× (b1, s1)
or 2× (b2, s2) the first level's channels, the first half of h's channels is scaled up (by b,
or in V2 by 1 + (b − 1)·the channel-mean map normalised to [0, 1]) and the skip connection's
lowest frequencies are scaled by s. In diffusers the two meet as the input of each up-block
resnet, cat([h, skip]), so a forward pre-hook there splits, patches and joins them again.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class FreeU:
    version: int  # 1 or 2
    b1: float
    b2: float
    s1: float
    s2: float


def fourier_filter(x, threshold: int, scale: float):
    """The 2·threshold square of lowest frequencies (after an fft shift) scaled by `scale`."""
    import torch

    freq = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    mask = torch.ones(freq.shape, device=x.device)
    row, col = freq.shape[-2] // 2, freq.shape[-1] // 2
    mask[..., row - threshold:row + threshold, col - threshold:col + threshold] = scale
    freq = torch.fft.ifftshift(freq * mask, dim=(-2, -1))
    return torch.fft.ifftn(freq, dim=(-2, -1)).real.to(x.dtype)


def patched(h, skip, settings: FreeU, model_channels: int):
    import torch

    scales = {model_channels * 4: (settings.b1, settings.s1), model_channels * 2: (settings.b2, settings.s2)}
    scale = scales.get(int(h.shape[1]))
    if scale is None:
        return h, skip
    h = h.clone()
    half = h.shape[1] // 2
    if settings.version == 1:
        h[:, :half] = h[:, :half] * scale[0]
    else:
        mean = h.mean(1).unsqueeze(1)
        flat = mean.view(mean.shape[0], -1)
        low, high = torch.min(flat, dim=-1, keepdim=True)[0], torch.max(flat, dim=-1, keepdim=True)[0]
        mean = (mean - low.unsqueeze(2).unsqueeze(3)) / (high - low).unsqueeze(2).unsqueeze(3)
        h[:, :half] = h[:, :half] * ((scale[0] - 1) * mean + 1)
    return h, fourier_filter(skip, threshold=1, scale=scale[1])


@contextmanager
def freeu_applied(unet, settings: FreeU):
    """For the block, every up-block resnet sees its (h, skip) input patched."""
    import torch

    model_channels = unet.config.block_out_channels[0]
    handles = []
    running = unet.config.block_out_channels[-1]  # h leaves the middle block this wide
    for block in unet.up_blocks:
        for resnet in block.resnets:
            def hook(module, args, width=running):
                h, skip = patched(args[0][:, :width], args[0][:, width:], settings, model_channels)
                return (torch.cat([h, skip], dim=1),) + tuple(args[1:])
            handles.append(resnet.register_forward_pre_hook(hook))
            running = resnet.out_channels
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
