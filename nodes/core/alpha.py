"""ComfyUI's compositing nodes: PorterDuffImageComposite, SplitImageWithAlpha and
JoinImageWithAlpha. Masks here are ComfyUI's: 1 − alpha (1 where the image is transparent)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine import Link, Node, NodeOutput, Widget

from ..types import Image, Mask
from .composite import repeat_to_batch
from .vae import ImageOut

CATEGORY = "mask/compositing"
MODES = ("ADD", "CLEAR", "DARKEN", "DST", "DST_ATOP", "DST_IN", "DST_OUT", "DST_OVER", "LIGHTEN", "MULTIPLY",
         "OVERLAY", "SCREEN", "SRC", "SRC_ATOP", "SRC_IN", "SRC_OUT", "SRC_OVER", "XOR")


@dataclass(frozen=True)
class ImageAndMask(NodeOutput):
    IMAGE: Image
    MASK: Mask


def porter_duff(src, src_alpha, dst, dst_alpha, mode: str):
    """One composite on premultiplied colours; alphas come in and go out as ComfyUI masks."""
    import torch

    sa, da = 1 - src_alpha, 1 - dst_alpha
    s, d = src * sa, dst * da
    union = sa + da - sa * da
    alpha, image = {
        "ADD": lambda: (torch.clamp(sa + da, 0, 1), torch.clamp(s + d, 0, 1)),
        "CLEAR": lambda: (torch.zeros_like(da), torch.zeros_like(d)),
        "DARKEN": lambda: (union, (1 - da) * s + (1 - sa) * d + torch.min(s, d)),
        "DST": lambda: (da, d),
        "DST_ATOP": lambda: (sa, sa * d + (1 - da) * s),
        "DST_IN": lambda: (sa * da, d * sa),
        "DST_OUT": lambda: ((1 - sa) * da, (1 - sa) * d),
        "DST_OVER": lambda: (da + (1 - da) * sa, d + (1 - da) * s),
        "LIGHTEN": lambda: (union, (1 - da) * s + (1 - sa) * d + torch.max(s, d)),
        "MULTIPLY": lambda: (sa * da, s * d),
        "OVERLAY": lambda: (union, torch.where(2 * d < da, 2 * s * d, sa * da - 2 * (da - s) * (sa - d))),
        "SCREEN": lambda: (union, s + d - s * d),
        "SRC": lambda: (sa, s),
        "SRC_ATOP": lambda: (da, da * s + (1 - sa) * d),
        "SRC_IN": lambda: (sa * da, s * da),
        "SRC_OUT": lambda: ((1 - da) * sa, (1 - da) * s),
        "SRC_OVER": lambda: (sa + (1 - sa) * da, s + (1 - sa) * d),
        "XOR": lambda: ((1 - da) * sa + (1 - sa) * da, (1 - da) * s + (1 - sa) * d),
    }[mode]()
    image = torch.where(alpha > 1e-5, image / alpha, torch.zeros_like(image)).clamp(0, 1)
    return image, 1 - alpha


def _fitted(tensor, height: int, width: int):
    """[H, W, C] resized as ComfyUI's node resizes a mismatched input: bicubic, centre crop."""
    from .resample import common_upscale

    return common_upscale(tensor.movedim(-1, 0)[None], width, height, "bicubic", "center")[0].movedim(0, -1)


class PorterDuffImageComposite(Node):
    """Source over (or in, out, atop, xor… of) destination, with both alphas, image by image."""

    class_type = "PorterDuffImageComposite"
    display_name = "Porter-Duff Image Composite"
    category = CATEGORY

    source: Image = Link()
    source_alpha: Mask = Link()
    destination: Image = Link()
    destination_alpha: Mask = Link()
    mode: Literal[MODES] = Widget("DST")  # type: ignore[valid-type]

    def execute(self, ctx) -> ImageAndMask:
        import torch

        sources, destinations = self.source.pixels, self.destination.pixels
        source_alphas, destination_alphas = self.source_alpha.mask, self.destination_alpha.mask
        if sources.shape[-1] != destinations.shape[-1]:
            raise ValueError(f"source has {sources.shape[-1]} channels and destination {destinations.shape[-1]}: "
                             "they must match")
        images, alphas = [], []
        for i in range(min(len(sources), len(source_alphas), len(destinations), len(destination_alphas))):
            dst = destinations[i]
            height, width = dst.shape[:2]
            dst_alpha = destination_alphas[i].reshape(*destination_alphas[i].shape[-2:], 1)
            if dst_alpha.shape[:2] != (height, width):
                dst_alpha = _fitted(dst_alpha, height, width)
            src = sources[i] if sources[i].shape == dst.shape else _fitted(sources[i], height, width)
            src_alpha = source_alphas[i].reshape(*source_alphas[i].shape[-2:], 1)
            if src_alpha.shape != dst_alpha.shape:
                src_alpha = _fitted(src_alpha, *dst_alpha.shape[:2])
            image, alpha = porter_duff(src, src_alpha, dst, dst_alpha, self.mode)
            images.append(image)
            alphas.append(alpha[..., 0])
        return ImageAndMask(Image(torch.stack(images)), Mask(torch.stack(alphas)))


class SplitImageWithAlpha(Node):
    """RGB and the alpha channel as a mask (an image without alpha gives an empty mask)."""

    class_type = "SplitImageWithAlpha"
    display_name = "Split Image with Alpha"
    category = CATEGORY

    image: Image = Link()

    def execute(self, ctx) -> ImageAndMask:
        import torch

        pixels = self.image.pixels
        alpha = pixels[..., 3] if pixels.shape[-1] > 3 else torch.ones_like(pixels[..., 0])
        return ImageAndMask(Image(pixels[..., :3]), Mask(1.0 - alpha))


class JoinImageWithAlpha(Node):
    """RGB plus a mask as its alpha channel (the mask resized to the image, batches repeated)."""

    class_type = "JoinImageWithAlpha"
    display_name = "Join Image with Alpha"
    category = CATEGORY

    image: Image = Link()
    alpha: Mask = Link()

    def execute(self, ctx) -> ImageOut:
        import torch

        pixels, mask = self.image.pixels, self.alpha.mask.reshape(-1, *self.alpha.mask.shape[-2:])
        size = max(len(pixels), len(mask))
        pixels, mask = repeat_to_batch(pixels, size), repeat_to_batch(mask, size)
        mask = torch.nn.functional.interpolate(mask[:, None], size=pixels.shape[1:3], mode="bilinear")[:, 0]
        return ImageOut(Image(torch.cat((pixels[..., :3], (1.0 - mask)[..., None]), dim=-1)))
