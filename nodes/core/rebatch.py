"""RebatchLatents and RebatchImages: between tensor batches and ComfyUI's lists.

Both take whole lists (INPUT_IS_LIST) and give a list (OUTPUT_IS_LIST), so the nodes after them
run once per new batch. Latents keep their noise draws: each image's `batch_index` is its place
in the whole sequence unless it had one, as ComfyUI's LatentRebatch numbers them.
"""
from __future__ import annotations

from dataclasses import dataclass

from engine import Link, Node, NodeOutput, Widget

from ..types import Image, Latent


@dataclass(frozen=True)
class LatentListOut(NodeOutput):
    LATENT: Latent


@dataclass(frozen=True)
class ImageListOut(NodeOutput):
    IMAGE: Image


def _latent_parts(latent: Latent, offset: int) -> list:
    """[samples, noise mask, batch indices]: a missing mask as ones (dropped again at the end), a
    short mask batch repeated; masks keep their size (ComfyUI's resize here is discarded)."""
    import torch

    samples = latent.samples
    count = samples.shape[0]
    mask = latent.noise_mask
    if mask is None:
        mask = torch.ones((count, 1, samples.shape[2] * 8, samples.shape[3] * 8))
    if mask.shape[0] < count:
        mask = mask.repeat((count - 1) // mask.shape[0] + 1, 1, 1, 1)[:count]
    indices = list(latent.batch_index) if latent.batch_index is not None else [offset + i for i in range(count)]
    return [samples, mask, indices]


def _latent(parts: list, start: int, stop: int) -> Latent:
    samples, mask, indices = (part[start:stop] for part in parts)
    return Latent(samples, None if float(mask.mean()) == 1.0 else mask, tuple(indices))


class RebatchLatents(Node):
    """Latent batches regrouped into batches of `batch_size`; a change of size starts a new one."""

    class_type = "RebatchLatents"
    display_name = "Rebatch Latents"
    category = "latent/batch"
    input_is_list = True
    output_is_list = (True,)

    latents: Latent = Link()
    batch_size: int = Widget(1, ge=1, le=4096)

    def execute(self, ctx) -> LatentListOut:
        import torch

        size = self.batch_size[0]
        batches: list[Latent] = []
        current, seen = None, 0
        for latent in self.latents:
            parts = _latent_parts(latent, seen)
            seen += len(parts[2])
            if current is None:
                current = parts
            elif parts[0].shape[-2:] != current[0].shape[-2:]:
                batches.append(_latent(current, 0, size))
                current = parts
            else:
                current = [torch.cat((current[0], parts[0])), torch.cat((current[1], parts[1])),
                           current[2] + parts[2]]
            if current[0].shape[0] > size:
                full = current[0].shape[0] // size
                batches += [_latent(current, i * size, (i + 1) * size) for i in range(full)]
                current = None if full * size == current[0].shape[0] else [part[full * size:] for part in current]
        if current is not None:
            batches.append(_latent(current, 0, size))
        return LatentListOut(batches)


class RebatchImages(Node):
    """Image batches regrouped, image by image, into batches of `batch_size`."""

    class_type = "RebatchImages"
    display_name = "Rebatch Images"
    category = "image/batch"
    input_is_list = True
    output_is_list = (True,)

    images: Image = Link()
    batch_size: int = Widget(1, ge=1, le=4096)

    def execute(self, ctx) -> ImageListOut:
        import torch

        size = self.batch_size[0]
        singles = [image.pixels[i:i + 1] for image in self.images for i in range(image.pixels.shape[0])]
        return ImageListOut([Image(torch.cat(singles[i:i + size])) for i in range(0, len(singles), size)])
