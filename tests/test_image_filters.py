"""ImageBlend, ImageBlur, ImageSharpen, Image/LatentCompositeMasked, EmptyImage, GetImageSize."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import Session, Settings
from nodes.core.composite import ImageCompositeMasked, LatentCompositeMasked
from nodes.core.image_filters import ImageBlend, ImageBlur, ImageSharpen
from nodes.core.image_ops import EmptyImage
from nodes.types import Image, Latent, Mask


def _pixels(node) -> torch.Tensor:
    return node.execute(None).IMAGE.pixels


@pytest.mark.parametrize("mode, expected", [
    ("normal", lambda a, b: b), ("multiply", lambda a, b: a * b), ("screen", lambda a, b: 1 - (1 - a) * (1 - b)),
    ("difference", lambda a, b: a - b),
    ("overlay", lambda a, b: np.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))),
    ("soft_light", lambda a, b: np.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a),
                                         a + (2 * b - 1) * (np.where(a <= 0.25, ((16 * a - 12) * a + 4) * a,
                                                                     np.sqrt(a)) - a)))])
def test_blend_modes(mode, expected):
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand([1, 4, 4, 3], generator=generator), torch.rand([1, 4, 4, 3], generator=generator)
    out = _pixels(ImageBlend(image1=Image(a), image2=Image(b), blend_factor=0.3, blend_mode=mode))
    want = np.clip(a.numpy() * 0.7 + expected(a.numpy(), b.numpy()) * 0.3, 0, 1)
    assert np.allclose(out.numpy(), want, atol=1e-6)


def test_blend_resizes_the_second_image_to_the_first():
    out = _pixels(ImageBlend(image1=Image(torch.zeros([1, 8, 6, 3])), image2=Image(torch.ones([1, 4, 4, 3])),
                             blend_factor=0.5, blend_mode="normal"))
    assert out.shape == (1, 8, 6, 3) and torch.allclose(out, torch.full_like(out, 0.5))


def test_blur_and_sharpen_keep_flat_images_and_spread_or_sharpen_a_point():
    flat = torch.full([1, 9, 9, 3], 0.4)
    assert torch.allclose(_pixels(ImageBlur(image=Image(flat), blur_radius=2, sigma=1.0)), flat, atol=1e-6)
    assert torch.allclose(_pixels(ImageSharpen(image=Image(flat), sharpen_radius=2, sigma=1.0, alpha=1.0)), flat,
                          atol=1e-6)
    point = torch.zeros([1, 9, 9, 1])
    point[0, 4, 4] = 1.0
    blurred = _pixels(ImageBlur(image=Image(point), blur_radius=1, sigma=1.0))[0, 3:6, 3:6, 0]
    # ComfyUI's kernel spans [-1, 1] whatever the radius: weights e^(-d²/2) at d = 0, 1, √2
    weights = torch.exp(-torch.tensor([[2.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 2.0]]) / 2)
    assert torch.allclose(blurred, weights / weights.sum(), atol=1e-6)
    assert float(_pixels(ImageBlur(image=Image(point), blur_radius=1, sigma=1.0)).sum()) == pytest.approx(1.0)
    grey = torch.full([1, 9, 9, 1], 0.5)
    grey[0, 4, 4] = 0.6
    sharpened = _pixels(ImageSharpen(image=Image(grey), sharpen_radius=1, sigma=1.0, alpha=0.5))
    assert sharpened[0, 4, 4, 0] > 0.6 and sharpened[0, 3, 4, 0] < 0.5  # the bump grows, its ring dips
    same = _pixels(ImageSharpen(image=Image(grey), sharpen_radius=1, sigma=1.0, alpha=0.0))
    assert torch.allclose(same, grey, atol=1e-6)


def test_image_composite_masked_pastes_through_the_mask_and_drops_what_falls_outside():
    destination, source = torch.zeros([1, 6, 8, 3]), torch.ones([1, 4, 4, 3])
    out = _pixels(ImageCompositeMasked(destination=Image(destination), source=Image(source), x=6, y=1,
                                       resize_source=False, mask=None))
    assert out[0, 1:5, 6:8].eq(1).all() and out.sum() == 4 * 2 * 3 and destination.sum() == 0
    half = torch.zeros([1, 4, 4])
    half[:, :, :2] = 1.0
    out = _pixels(ImageCompositeMasked(destination=Image(destination), source=Image(source), x=0, y=0,
                                       resize_source=False, mask=Mask(half)))
    assert out[0, :4, :2].eq(1).all() and out[0, :4, 2:].eq(0).all()
    out = _pixels(ImageCompositeMasked(destination=Image(destination), source=Image(source), x=3, y=3,
                                       resize_source=True, mask=None))
    assert out[0, 3:, 3:].eq(1).all() and out[0, :3].eq(0).all()  # resized to the destination, still offset


def test_latent_composite_masked_takes_x_and_y_in_pixels():
    destination = Latent(torch.zeros([2, 4, 8, 8]), noise_mask=torch.ones([1, 1, 8, 8]))
    source = Latent(torch.ones([1, 4, 2, 2]))
    out = LatentCompositeMasked(destination=destination, source=source, x=16, y=40, resize_source=False,
                                mask=None).execute(None).LATENT
    assert out.samples[:, :, 5:7, 2:4].eq(1).all() and out.samples.sum() == 2 * 4 * 4
    assert out.noise_mask is destination.noise_mask


def test_empty_image_colour():
    out = _pixels(EmptyImage(width=3, height=2, batch_size=2, color=0xFF8000))
    assert out.shape == (2, 2, 3, 3)
    assert out[0, 0, 0].tolist() == pytest.approx([1.0, 128 / 255, 0.0])


def test_get_image_size_feeds_other_nodes(tmp_path):
    from PIL import Image as PILImage

    PILImage.new("RGB", (40, 24), (10, 20, 30)).save(tmp_path / "in.png")
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
             "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
             "3": {"class_type": "EmptyImage", "inputs": {"width": ["2", 1], "height": ["2", 0], "batch_size": ["2", 2],
                                                          "color": 0x00FF00}},
             "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}
    result = Session(settings=Settings(input_dir=tmp_path, output_dir=tmp_path / "out", models_dir=tmp_path)).execute(graph)
    assert result.status == "ok", result.errors
    with PILImage.open(result.files[0]) as image:
        assert image.size == (24, 40) and image.getpixel((0, 0)) == (0, 255, 0)


def test_image_color_to_mask_matches_exact_8_bit_colours():
    from nodes.core.image_ops import ImageColorToMask

    pixels = torch.zeros([1, 2, 2, 3])
    pixels[0, 0, 0] = torch.tensor([255, 128, 0]) / 255.0
    pixels[0, 1, 1] = torch.tensor([255, 129, 0]) / 255.0
    mask = ImageColorToMask(image=Image(pixels), color=0xFF8000).execute(None).MASK.mask
    assert mask.tolist() == [[[1.0, 0.0], [0.0, 0.0]]]
