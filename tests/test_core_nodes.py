"""ComfyUI's latent, image, mask and conditioning nodes, each on small tensors against the
formulas of reference §8-9 (execute() called directly: these nodes touch no model)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nodes.core import conditioning as cond
from nodes.core import image_ops, latent, mask
from nodes.sampling.conditioning import CondEntry, Conditioning
from nodes.types import Image, Latent, Mask


def entry(value: float, tokens: int = 77, pooled: float | None = 1.0, **kw) -> CondEntry:
    return CondEntry(torch.full((1, tokens, 4), value), None if pooled is None else torch.full((1, 4), pooled), **kw)


def test_conditioning_combine_concat_average_zero_out():
    a, b = Conditioning((entry(1.0),)), Conditioning((entry(3.0, tokens=154, pooled=5.0),))
    assert cond.ConditioningCombine(conditioning_1=a, conditioning_2=b).execute(None).CONDITIONING.entries == \
        a.entries + b.entries
    [concat] = cond.ConditioningConcat(conditioning_to=a, conditioning_from=b).execute(None).CONDITIONING.entries
    assert concat.cross_attn.shape == (1, 77 + 154, 4) and torch.equal(concat.pooled, a.entries[0].pooled)
    [mixed] = cond.ConditioningAverage(conditioning_to=a, conditioning_from=b,
                                       conditioning_to_strength=0.25).execute(None).CONDITIONING.entries
    # from is cut to to's 77 tokens; pooled mixed the same way
    assert torch.allclose(mixed.cross_attn, torch.full((1, 77, 4), 0.25 * 1 + 0.75 * 3))
    assert torch.allclose(mixed.pooled, torch.full((1, 4), 0.25 * 1 + 0.75 * 5))
    [short] = cond.ConditioningAverage(conditioning_to=b, conditioning_from=a,
                                       conditioning_to_strength=0.5).execute(None).CONDITIONING.entries
    assert torch.allclose(short.cross_attn[:, :77], torch.full((1, 77, 4), 2.0))
    assert torch.allclose(short.cross_attn[:, 77:], torch.full((1, 77, 4), 1.5))  # zero-padded from
    [zero] = cond.ConditioningZeroOut(conditioning=b).execute(None).CONDITIONING.entries
    assert not zero.cross_attn.any() and not zero.pooled.any()


def test_conditioning_area_mask_and_range_nodes_store_comfyuis_values():
    a = Conditioning((entry(1.0),))
    [area] = cond.ConditioningSetArea(conditioning=a, width=256, height=128, x=64, y=8, strength=1.5) \
        .execute(None).CONDITIONING.entries
    assert area.area == (16, 32, 1, 8) and area.strength == 1.5
    [pct] = cond.ConditioningSetAreaPercentage(conditioning=a, width=0.5, height=0.25, x=0.5, y=0.0,
                                               strength=1.0).execute(None).CONDITIONING.entries
    assert pct.area_percent == (0.25, 0.5, 0.0, 0.5) and pct.area is None
    m = Mask(torch.ones(8, 8))
    [masked] = cond.ConditioningSetMask(conditioning=a, mask=m, strength=0.5,
                                        set_cond_area="mask bounds").execute(None).CONDITIONING.entries
    assert masked.mask.shape == (1, 8, 8) and masked.mask_strength == 0.5 and masked.set_area_to_bounds
    [ranged] = cond.ConditioningSetTimestepRange(conditioning=a, start=0.2, end=0.7).execute(None).CONDITIONING.entries
    assert (ranged.start_percent, ranged.end_percent) == (0.2, 0.7)


def test_latent_upscale_sizes_and_aspect():
    samples = Latent(torch.randn(1, 4, 16, 24))
    up = latent.LatentUpscale(samples=samples, upscale_method="nearest-exact", width=0, height=256, crop="disabled")
    assert up.execute(None).LATENT.samples.shape == (1, 4, 32, 48)  # 0 keeps the aspect
    small = latent.LatentUpscale(samples=samples, upscale_method="bilinear", width=8, height=8, crop="disabled")
    assert small.execute(None).LATENT.samples.shape == (1, 4, 8, 8)  # each side at least 64 px
    by = latent.LatentUpscaleBy(samples=samples, upscale_method="bislerp", scale_by=1.5).execute(None).LATENT.samples
    assert by.shape == (1, 4, 24, 36) and torch.isfinite(by).all()
    same = latent.LatentUpscaleBy(samples=samples, upscale_method="bislerp", scale_by=1.0).execute(None).LATENT.samples
    assert torch.allclose(same, samples.samples, atol=1e-5)  # slerp between a vector and itself
    kept = latent.LatentUpscale(samples=samples, upscale_method="area", width=0, height=0, crop="center")
    assert kept.execute(None).LATENT is samples


def test_latent_batch_nodes_keep_noise_draws():
    samples = Latent(torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 4, 2, 2).clone())
    picked = latent.LatentFromBatch(samples=samples, batch_index=1, length=2).execute(None).LATENT
    assert picked.batch_index == (1, 2) and picked.samples[:, 0, 0, 0].tolist() == [1.0, 2.0]
    again = latent.LatentFromBatch(samples=picked, batch_index=1, length=5).execute(None).LATENT
    assert again.batch_index == (2,)
    repeated = latent.RepeatLatentBatch(samples=picked, amount=3).execute(None).LATENT
    assert repeated.samples.shape[0] == 6 and repeated.batch_index == (1, 2, 3, 4, 5, 6)


def test_latent_composite_with_and_without_feather():
    to, source = Latent(torch.zeros(1, 4, 8, 8)), Latent(torch.ones(1, 4, 4, 4))
    hard = latent.LatentComposite(samples_to=to, samples_from=source, x=16, y=16, feather=0).execute(None).LATENT
    assert hard.samples[0, 0, 2:6, 2:6].eq(1).all() and hard.samples.sum() == 4 * 16
    soft = latent.LatentComposite(samples_to=to, samples_from=source, x=16, y=16, feather=16).execute(None).LATENT
    # feather 2 latent pixels on the inner edges: weights (t+1)/2 multiply
    assert soft.samples[0, 0, 2, 2] == pytest.approx(0.25) and soft.samples[0, 0, 3, 3] == pytest.approx(1.0)


def test_set_latent_noise_mask_shape():
    out = latent.SetLatentNoiseMask(samples=Latent(torch.zeros(2, 4, 8, 8)), mask=Mask(torch.ones(64, 64))).execute(None)
    assert out.LATENT.noise_mask.shape == (1, 1, 64, 64)


def _image(h=6, w=8, batch=1):
    return Image(torch.linspace(0, 1, batch * h * w * 3).reshape(batch, h, w, 3))


def test_image_scale_nodes():
    image = _image()
    assert image_ops.ImageScale(image=image, upscale_method="bilinear", width=0, height=12, crop="disabled") \
        .execute(None).IMAGE.pixels.shape == (1, 12, 16, 3)
    cropped = image_ops.ImageScale(image=image, upscale_method="nearest-exact", width=4, height=4, crop="center")
    assert cropped.execute(None).IMAGE.pixels.shape == (1, 4, 4, 3)
    lanczos = image_ops.ImageScaleBy(image=image, upscale_method="lanczos", scale_by=2.0).execute(None).IMAGE.pixels
    assert lanczos.shape == (1, 12, 16, 3) and torch.all((lanczos * 255 - (lanczos * 255).round()).abs() < 1e-3)
    total = image_ops.ImageScaleToTotalPixels(image=Image(torch.zeros(1, 512, 1024, 3)), upscale_method="area",
                                              megapixels=0.125).execute(None).IMAGE.pixels
    assert total.shape == (1, 256, 512, 3)


def test_pad_for_outpaint_mask_and_feather():
    image = Image(torch.full((1, 20, 20, 3), 0.2))
    out = image_ops.ImagePadForOutpaint(image=image, left=8, top=0, right=0, bottom=0, feathering=4).execute(None)
    assert out.IMAGE.pixels.shape == (1, 20, 28, 3) and out.IMAGE.pixels[0, 0, 0, 0] == 0.5
    m = out.MASK.mask[0]
    assert m[:, :8].eq(1).all() and m[10, 8] == pytest.approx(1.0) and m[10, 9] == pytest.approx(((4 - 1) / 4) ** 2)
    assert m[10, 8 + 4:].eq(0).all()


def test_invert_batch_crop_and_mask_conversions():
    image = _image()
    assert torch.allclose(image_ops.ImageInvert(image=image).execute(None).IMAGE.pixels, 1 - image.pixels)
    batch = image_ops.ImageBatch(image1=image, image2=_image(12, 16)).execute(None).IMAGE.pixels
    assert batch.shape == (2, 6, 8, 3)
    crop = image_ops.ImageCrop(image=image, width=4, height=3, x=2, y=1).execute(None).IMAGE.pixels
    assert torch.equal(crop, image.pixels[:, 1:4, 2:6])
    green = image_ops.ImageToMask(image=image, channel="green").execute(None).MASK.mask
    assert torch.equal(green, image.pixels[..., 1])
    back = image_ops.MaskToImage(mask=Mask(green)).execute(None).IMAGE.pixels
    assert back.shape == (1, 6, 8, 3) and torch.equal(back[..., 2], green)


def test_mask_nodes():
    solid = mask.SolidMask(value=0.5, width=8, height=4).execute(None).MASK.mask
    assert solid.shape == (1, 4, 8) and solid.eq(0.5).all()
    assert mask.InvertMask(mask=Mask(solid)).execute(None).MASK.mask.eq(0.5).all()
    ramp = Mask(torch.linspace(0, 1, 16).reshape(1, 4, 4))
    assert mask.CropMask(mask=ramp, x=1, y=2, width=2, height=2).execute(None).MASK.mask.shape == (1, 2, 2)
    assert torch.equal(mask.ThresholdMask(mask=ramp, value=0.5).execute(None).MASK.mask, (ramp.mask > 0.5).float())
    added = mask.MaskComposite(destination=Mask(torch.full((1, 4, 4), 0.7)), source=Mask(torch.full((1, 2, 2), 0.6)),
                               x=3, y=0, operation="add").execute(None).MASK.mask
    assert added[0, 0, 3] == 1.0 and added[0, 0, 2] == pytest.approx(0.7) and added[0, 2, 3] == pytest.approx(0.7)
    xor = mask.MaskComposite(destination=Mask(torch.ones(1, 2, 2)), source=Mask(torch.ones(1, 2, 2)), x=0, y=0,
                             operation="xor").execute(None).MASK.mask
    assert not xor.any()
    feathered = mask.FeatherMask(mask=Mask(torch.ones(1, 4, 8)), left=4, top=0, right=0, bottom=0).execute(None)
    assert feathered.MASK.mask[0, 0, :4].tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    dot = torch.zeros(1, 5, 5)
    dot[0, 2, 2] = 1
    grown = mask.GrowMask(mask=Mask(dot), expand=1, tapered_corners=True).execute(None).MASK.mask[0]
    assert grown.sum() == 5 and grown[1, 1] == 0  # a cross with tapered corners
    full = mask.GrowMask(mask=Mask(dot), expand=1, tapered_corners=False).execute(None).MASK.mask[0]
    assert full.sum() == 9
    assert mask.GrowMask(mask=Mask(full[None]), expand=-1, tapered_corners=False).execute(None).MASK.mask.sum() == 1


def test_load_image_mask_channels(tmp_path):
    from PIL import Image as PILImage

    from engine import Settings

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 64
    PILImage.fromarray(rgba).save(tmp_path / "m.png")

    class Ctx:
        settings = Settings(input_dir=tmp_path, output_dir=tmp_path / "out")

    alpha = mask.LoadImageMask(image="m.png", channel="alpha").execute(Ctx()).MASK.mask
    assert alpha.shape == (1, 4, 4) and alpha[0, 0, 0] == pytest.approx(1 - 64 / 255)
    assert mask.LoadImageMask(image="m.png", channel="red").execute(Ctx()).MASK.mask.eq(1).all()
