"""ComfyUI's `common_upscale`: optional center crop to the target aspect, then torch
interpolation, PIL Lanczos (through uint8, as ComfyUI does) or bislerp."""
from __future__ import annotations

UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
IMAGE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")


def center_crop(samples, width: int, height: int):
    old_w, old_h = samples.shape[-1], samples.shape[-2]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return samples.narrow(-2, y, old_h - y * 2).narrow(-1, x, old_w - x * 2)


def common_upscale(samples, width: int, height: int, method: str, crop: str):
    """[B, C, H, W] → [B, C, height, width]."""
    import torch

    if crop == "center":
        samples = center_crop(samples, width, height)
    if method == "bislerp":
        return bislerp(samples, width, height)
    if method == "lanczos":
        return lanczos(samples, width, height)
    return torch.nn.functional.interpolate(samples, size=(height, width), mode=method)


def lanczos(samples, width: int, height: int):
    import numpy as np
    import torch
    from PIL import Image as PILImage

    out = []
    for image in samples:
        array = np.clip(255.0 * image.movedim(0, -1).cpu().numpy(), 0, 255).astype(np.uint8)
        resized = PILImage.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array)
        resized = resized.resize((width, height), resample=PILImage.Resampling.LANCZOS)
        values = torch.from_numpy(np.array(resized).astype(np.float32) / 255.0)
        out.append(values.reshape(height, width, -1).movedim(-1, 0))
    return torch.stack(out).to(samples.device, samples.dtype)


def _slerp(a, b, ratio):
    """Spherical interpolation of channel vectors [N, C]; the norms are interpolated linearly."""
    import torch

    norm_a, norm_b = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    unit_a, unit_b = a / norm_a, b / norm_b
    unit_a[norm_a.expand(-1, a.shape[-1]) == 0.0] = 0.0
    unit_b[norm_b.expand(-1, b.shape[-1]) == 0.0] = 0.0
    dot = (unit_a * unit_b).sum(1)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    out = (torch.sin((1.0 - ratio.squeeze(1)) * omega) / so).unsqueeze(1) * unit_a \
        + (torch.sin(ratio.squeeze(1) * omega) / so).unsqueeze(1) * unit_b
    out *= norm_a * (1.0 - ratio) + norm_b * ratio
    out[dot > 1 - 1e-5] = a[dot > 1 - 1e-5]  # nearly parallel: keep a
    opposite = dot < 1e-5 - 1
    out[opposite] = (a * (1.0 - ratio) + b * ratio)[opposite]
    return out


def _bilinear_pairs(old: int, new: int, device):
    """For each new position: the two source indices and the ratio between them."""
    import torch

    coords = torch.arange(old, dtype=torch.float32, device=device).reshape(1, 1, 1, -1)
    coords = torch.nn.functional.interpolate(coords, size=(1, new), mode="bilinear")
    ratios = coords - coords.floor()
    first = coords.to(torch.int64)
    second = torch.arange(old, dtype=torch.float32, device=device).reshape(1, 1, 1, -1) + 1
    second[:, :, :, -1] -= 1
    second = torch.nn.functional.interpolate(second, size=(1, new), mode="bilinear").to(torch.int64)
    return ratios, first, second


def bislerp(samples, width: int, height: int):
    """Separable slerp of the channel vectors: along the width, then along the height."""
    dtype = samples.dtype
    samples = samples.float()
    n, c, h, w = samples.shape
    ratios, first, second = _bilinear_pairs(w, width, samples.device)
    first = first.expand(n, c, h, -1)
    second = second.expand(n, c, h, -1)
    pass_1 = samples.gather(-1, first).movedim(1, -1).reshape(-1, c)
    pass_2 = samples.gather(-1, second).movedim(1, -1).reshape(-1, c)
    ratios = ratios.movedim(1, -1).expand(n, h, -1, 1).reshape(-1, 1)
    result = _slerp(pass_1, pass_2, ratios).reshape(n, h, width, c).movedim(-1, 1)

    ratios, first, second = _bilinear_pairs(h, height, samples.device)
    first = first.reshape(1, 1, -1, 1).expand(n, c, -1, width)
    second = second.reshape(1, 1, -1, 1).expand(n, c, -1, width)
    pass_1 = result.gather(-2, first).movedim(1, -1).reshape(-1, c)
    pass_2 = result.gather(-2, second).movedim(1, -1).reshape(-1, c)
    ratios = ratios.reshape(1, -1, 1, 1).expand(n, -1, width, 1).reshape(-1, 1)
    result = _slerp(pass_1, pass_2, ratios).reshape(n, height, width, c).movedim(-1, 1)
    return result.to(dtype)
