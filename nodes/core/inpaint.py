"""InpaintModelConditioning and InstructPixToPixConditioning: an image through the conditioning,
as ComfyUI's nodes do. For inpainting, the latent to sample is the whole image's; the masked
image's latent and the mask travel on both sides' entries, where an inpainting UNet takes them as
its extra input channels. For InstructPix2Pix, the image's latent travels, and sampling starts
from an empty latent of its size."""
from __future__ import annotations

from dataclasses import dataclass

from engine import Link, Node, NodeOutput, Widget

from ..sampling.conditioning import Conditioning
from ..types import Image, Latent, Mask
from .vae import VAE, crop_to_multiple_of_8, encode_pixels


@dataclass(frozen=True)
class InpaintOut(NodeOutput):
    positive: Conditioning
    negative: Conditioning
    latent: Latent


class InpaintModelConditioning(Node):
    """Encode an image and its masked copy for inpainting: the conditionings carry the masked
    latent and mask for inpainting models, the latent carries the noise mask."""

    class_type = "InpaintModelConditioning"
    display_name = "InpaintModelConditioning"
    category = "conditioning/inpaint"

    positive: Conditioning = Link()
    negative: Conditioning = Link()
    vae: VAE = Link()
    pixels: Image = Link()
    mask: Mask = Link()
    noise_mask: bool = Widget(True, tooltip="Add a noise mask to the latent so sampling only changes the "
                                            "masked area; without it an inpainting model still sees the mask")

    def execute(self, ctx) -> InpaintOut:
        import torch

        original = self.pixels.pixels[..., :3]
        mask = self.mask.mask.reshape(-1, 1, *self.mask.mask.shape[-2:]).float()
        mask = torch.nn.functional.interpolate(mask, size=original.shape[1:3], mode="bilinear")
        cropped = crop_to_multiple_of_8(original)
        mask = crop_to_multiple_of_8(mask.movedim(1, -1)).movedim(-1, 1)
        keep = (1.0 - mask.round()).movedim(1, -1)
        masked = (cropped - 0.5) * keep + 0.5
        concat = encode_pixels(ctx, self.vae, masked)
        # the sampled latent is the uncropped image's, as ComfyUI encodes it (VAE.encode crops)
        latent = Latent(encode_pixels(ctx, self.vae, crop_to_multiple_of_8(original)),
                        noise_mask=mask if self.noise_mask else None)
        return InpaintOut(self.positive.map(concat_latent=concat, concat_mask=mask),
                          self.negative.map(concat_latent=concat, concat_mask=mask), latent)


class InstructPixToPixConditioning(Node):
    """Encode the image to edit: both conditionings carry its latent, which an InstructPix2Pix
    UNet takes as its extra input channels; the latent to sample is zeros of its size."""

    class_type = "InstructPixToPixConditioning"
    display_name = "InstructPixToPixConditioning"
    category = "conditioning/instructpix2pix"

    positive: Conditioning = Link()
    negative: Conditioning = Link()
    vae: VAE = Link()
    pixels: Image = Link()

    def execute(self, ctx) -> InpaintOut:
        import torch

        concat = encode_pixels(ctx, self.vae, crop_to_multiple_of_8(self.pixels.pixels[..., :3]))
        return InpaintOut(self.positive.map(concat_latent=concat), self.negative.map(concat_latent=concat),
                          Latent(torch.zeros_like(concat)))
