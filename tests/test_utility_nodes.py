"""String utilities, alpha compositing, attention multiply and AddNoise."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nodes.core.alpha import JoinImageWithAlpha, PorterDuffImageComposite, SplitImageWithAlpha, porter_duff
from nodes.core.strings import (CaseConverter, RegexExtract, RegexMatch, RegexReplace, StringCompare,
                                StringConcatenate, StringContains, StringLength, StringReplace, StringSubstring,
                                StringTrim)
from nodes.types import Image, Mask

from .test_model_patches import _graph, _pixels


def test_string_nodes():
    assert StringConcatenate(string_a="a", string_b="b", delimiter=", ").execute(None).STRING == "a, b"
    assert StringSubstring(string="landscape", start=1, end=-2).execute(None).STRING == "andsca"
    assert StringLength(string="héllo").execute(None).INT == 5
    assert CaseConverter(string="a red CAT", mode="Title Case").execute(None).STRING == "A Red Cat"
    assert CaseConverter(string="a red CAT", mode="Capitalize").execute(None).STRING == "A red cat"
    assert StringTrim(string="  x \n", mode="Left").execute(None).STRING == "x \n"
    assert StringReplace(string="a cat, a cat", find="cat", replace="dog").execute(None).STRING == "a dog, a dog"
    assert StringContains(string="A Red Cat", substring="red", case_sensitive=False).execute(None).BOOLEAN
    assert not StringContains(string="A Red Cat", substring="red", case_sensitive=True).execute(None).BOOLEAN
    assert StringCompare(string_a="photo.png", string_b=".PNG", mode="Ends With",
                         case_sensitive=False).execute(None).BOOLEAN
    assert RegexMatch(string="seed 42", regex_pattern=r"\d+", case_insensitive=True, multiline=False,
                      dotall=False).execute(None).BOOLEAN
    assert not RegexMatch(string="x", regex_pattern="(", case_insensitive=True, multiline=False,
                          dotall=False).execute(None).BOOLEAN  # an invalid pattern matches nothing

    def extract(mode, pattern=r"(\w)(\d)", group=1):
        return RegexExtract(string="a1 b2 c3", regex_pattern=pattern, mode=mode, case_insensitive=True,
                            multiline=False, dotall=False, group_index=group).execute(None).STRING

    assert extract("First Match") == "a1" and extract("All Matches") == "a\nb\nc"
    assert extract("First Group", group=2) == "1" and extract("All Groups", group=2) == "1\n2\n3"
    assert extract("All Groups", pattern=r"\w\d", group=0) == ""  # no groups: nothing, as in ComfyUI
    assert extract("First Group", pattern=r"\w\d", group=0) == "a1"
    assert RegexReplace(string="a1 b2", regex_pattern=r"\d", replace="#", case_insensitive=True, multiline=False,
                        dotall=False, count=1).execute(None).STRING == "a# b2"


def test_porter_duff_modes_on_opaque_and_transparent_pixels():
    src, dst = torch.tensor([[[0.8, 0.2, 0.1]]]), torch.tensor([[[0.1, 0.5, 0.9]]])
    opaque, clear = torch.zeros(1, 1, 1), torch.ones(1, 1, 1)  # ComfyUI masks: 1 − alpha
    image, mask = porter_duff(src, opaque, dst, opaque, "SRC_OVER")
    assert torch.allclose(image, src) and float(mask) == 0.0
    image, mask = porter_duff(src, clear, dst, opaque, "SRC_OVER")  # a transparent source shows the destination
    assert torch.allclose(image, dst) and float(mask) == 0.0
    image, mask = porter_duff(src, opaque, dst, opaque, "MULTIPLY")
    assert torch.allclose(image, src * dst)
    image, mask = porter_duff(src, opaque, dst, clear, "DST_IN")
    assert torch.equal(image, torch.zeros_like(image)) and float(mask) == 1.0
    half = torch.full((1, 1, 1), 0.5)
    image, mask = porter_duff(src, half, dst, opaque, "SRC_OVER")
    assert torch.allclose(image, 0.5 * src + 0.5 * dst) and float(mask) == 0.0


def test_alpha_split_join_and_composite_nodes():
    pixels = torch.rand(2, 8, 8, 3)
    alpha = torch.zeros(1, 4, 4)
    alpha[:, :2] = 1.0  # the top half transparent
    joined = JoinImageWithAlpha(image=Image(pixels), alpha=Mask(alpha)).execute(None).IMAGE.pixels
    assert joined.shape == (2, 8, 8, 4) and torch.equal(joined[..., :3], pixels)
    assert float(joined[0, 0, 0, 3]) == 0.0 and float(joined[1, 7, 7, 3]) == 1.0
    split = SplitImageWithAlpha(image=Image(joined)).execute(None)
    assert torch.equal(split.IMAGE.pixels, pixels) and torch.allclose(split.MASK.mask, 1.0 - joined[..., 3])
    assert torch.equal(SplitImageWithAlpha(image=Image(pixels)).execute(None).MASK.mask, torch.zeros(2, 8, 8))
    background = torch.zeros(1, 8, 8, 3)
    out = PorterDuffImageComposite(source=Image(pixels[:1]), source_alpha=Mask(split.MASK.mask[:1]),
                                   destination=Image(background), destination_alpha=Mask(torch.zeros(1, 8, 8)),
                                   mode="SRC_OVER").execute(None)
    assert torch.allclose(out.IMAGE.pixels[0, 6:], pixels[0, 6:], atol=1e-6)  # opaque source rows
    assert torch.allclose(out.IMAGE.pixels[0, :2], background[0, :2])  # transparent rows show the background


def test_attention_multiply_scales_the_projections(tiny_models, tmp_path):
    checkpoint = "tiny_sd15.safetensors"
    base = _pixels(tiny_models, tmp_path, _graph(checkpoint, None))
    neutral = {"class_type": "UNetSelfAttentionMultiply", "inputs": {"q": 1.0, "k": 1.0, "v": 1.0, "out": 1.0}}
    assert np.array_equal(_pixels(tiny_models, tmp_path, _graph(checkpoint, neutral)), base)
    for node in ("UNetSelfAttentionMultiply", "UNetCrossAttentionMultiply"):
        louder = {"class_type": node, "inputs": {"q": 1.0, "k": 1.0, "v": 1.0, "out": 2.5}}
        assert np.abs(_pixels(tiny_models, tmp_path, _graph(checkpoint, louder)) - base).max() > 5


def test_attention_multiply_patches_only_its_projections(tiny_models):
    from types import SimpleNamespace

    from engine.model_store import ModelStore
    from nodes.core.attention_multiply import projections
    from nodes.sd.lora import patched, unet_changes
    from tests.test_sd_models import _handle

    handle = _handle(tiny_models / "checkpoints" / "tiny_sd15.safetensors")
    ctx = SimpleNamespace(models=ModelStore())
    unet = ctx.models.get(handle)
    before = {k: v.detach().clone() for k, v in unet.named_parameters()}
    with patched(unet, unet_changes(ctx, unet, (projections("attn2", 1.0, 0.5, 1.0, 3.0),))):
        for name, value in unet.named_parameters():
            factor = 0.5 if name.endswith(("attn2.to_k.weight", "attn2.to_k.bias")) else \
                3.0 if ".attn2.to_out.0." in name else 1.0
            assert torch.allclose(value, before[name] * factor), name
    assert all(torch.equal(v, before[k]) for k, v in unet.named_parameters())


def test_add_noise_adds_the_seeds_noise_at_the_schedules_span(tiny_models):
    from nodes.core.custom_sampling import AddNoise, Noise, Sigmas
    from nodes.sampling.noise import initial_noise
    from nodes.types import Latent
    from tests.test_sd_models import _handle

    model = _handle(tiny_models / "checkpoints" / "tiny_sd15.safetensors")
    latent = Latent(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
    sigmas = Sigmas(torch.tensor([10.0, 4.0, 0.5]))
    out = AddNoise(model=model, noise=Noise(3), sigmas=sigmas, latent_image=latent).execute(None).LATENT.samples
    expected = (initial_noise(latent.samples.shape, 3) * 9.5 + latent.samples * 0.18215) / 0.18215
    assert torch.allclose(out, expected, atol=1e-5)
    empty = Latent(torch.zeros(1, 4, 8, 8))
    quiet = AddNoise(model=model, noise=Noise(None), sigmas=sigmas, latent_image=empty).execute(None).LATENT.samples
    assert torch.equal(quiet, torch.zeros(1, 4, 8, 8))
    assert AddNoise(model=model, noise=Noise(3), sigmas=Sigmas(torch.zeros(0)),
                    latent_image=latent).execute(None).LATENT is latent


def test_image_stitch_resize_and_pad_and_add_noise():
    from nodes.core.image_filters import ImageAddNoise
    from nodes.core.image_layout import ImageStitch, ResizeAndPadImage

    first, second = torch.rand(2, 8, 12, 3), torch.rand(1, 4, 4, 3)

    def stitch(**inputs):
        node = ImageStitch(image1=Image(first), image2=Image(second), **{
            "direction": "right", "match_image_size": True, "spacing_width": 0, "spacing_color": "white", **inputs})
        return node.execute(None).IMAGE.pixels

    right = stitch()
    assert right.shape == (2, 8, 20, 3) and torch.equal(right[:, :, :12], first)
    assert torch.equal(right[0, :, 12:], right[1, :, 12:])  # the shorter batch repeats its last image
    left = stitch(direction="left", spacing_width=3, spacing_color="red")
    assert left.shape == (2, 8, 24, 3) and torch.equal(left[:, :, 12:], first)  # the gap rounds up to 4
    assert left[0, 0, 8:12].tolist() == [[1.0, 0.0, 0.0]] * 4
    down = stitch(direction="down", match_image_size=False, spacing_color="black")
    assert down.shape == (2, 12, 12, 3) and torch.equal(down[:, 8:, 4:8], second.expand(2, -1, -1, -1))
    assert float(down[:, 8:, :4].abs().max()) == 0.0  # centred, padded black
    assert torch.equal(ImageStitch(image1=Image(first), direction="up", match_image_size=True, spacing_width=0,
                                   spacing_color="white").execute(None).IMAGE.pixels, first)

    padded = ResizeAndPadImage(image=Image(torch.zeros(1, 4, 8, 3)), target_width=16, target_height=16,
                               padding_color="white", interpolation="area").execute(None).IMAGE.pixels
    assert padded.shape == (1, 16, 16, 3) and float(padded[0, 4:12].max()) == 0.0
    assert float(padded[0, :4].min()) == 1.0 and float(padded[0, 12:].min()) == 1.0

    image = torch.full((1, 4, 4, 3), 0.5)
    noisy = ImageAddNoise(image=Image(image), seed=9, strength=0.2).execute(None).IMAGE.pixels
    expected = torch.clip(image + 0.2 * torch.randn(image.shape, generator=torch.manual_seed(9)), 0.0, 1.0)
    assert torch.equal(noisy, expected)


@pytest.mark.parametrize("node", ["SaveAnimatedPNG", "SaveAnimatedWEBP"])
def test_animated_saves_hold_every_frame_and_the_prompt(node, tiny_models, tmp_path):
    from PIL import Image as PILImage

    from engine import Session, Settings

    inputs = {"filename_prefix": "anim/clip", "fps": 4.0}
    inputs |= {"compress_level": 4} if node == "SaveAnimatedPNG" else {"lossless": True, "quality": 80,
                                                                         "method": "default"}
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 3, "color": 0}},
             "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": 1, "strength": 0.5}},
             "3": {"class_type": node, "inputs": {"images": ["2", 0], **inputs}}}
    session = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path, device="cpu"), cache=False)
    first = session.execute(graph).files
    second = session.execute(graph).files
    suffix = ".png" if node == "SaveAnimatedPNG" else ".webp"
    assert first == [str(tmp_path / "anim" / f"clip_00001_{suffix}")]
    assert second == [str(tmp_path / "anim" / f"clip_00002_{suffix}")]
    frames = torch.clip(0.5 * torch.randn((3, 8, 16, 3), generator=torch.manual_seed(1)), 0.0, 1.0)
    with PILImage.open(first[0]) as picture:
        picture.seek(1)
        picture.load()
        assert picture.n_frames == 3 and picture.info.get("duration") == 250
        expected = np.clip(frames[1].numpy() * 255.0, 0, 255).astype(np.uint8)
        assert np.array_equal(np.asarray(picture.convert("RGB")), expected)
    data = open(first[0], "rb").read()
    assert (b"comf" in data and b'prompt\x00{"1"' in data) if suffix == ".png" else b'prompt:{"1"' in data


def test_image_morphology_is_max_and_min_over_the_window():
    from nodes.core.image_filters import ImageMorphology

    pixels = torch.rand(1, 9, 7, 3, generator=torch.Generator().manual_seed(2))
    x = pixels.movedim(-1, 1)
    pooled_max = torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1)  # -inf padding: the border ignored
    pooled_min = -torch.nn.functional.max_pool2d(-x, 3, stride=1, padding=1)

    def run(operation, size=3):
        return ImageMorphology(image=Image(pixels), operation=operation, kernel_size=size).execute(None) \
            .IMAGE.pixels.movedim(-1, 1)

    assert torch.equal(run("dilate"), pooled_max) and torch.equal(run("erode"), pooled_min)
    assert torch.equal(run("gradient"), pooled_max - pooled_min)
    opened = torch.nn.functional.max_pool2d(pooled_min, 3, stride=1, padding=1)
    assert torch.equal(run("open"), opened) and torch.equal(run("top_hat"), x - opened)
    spot = torch.zeros(1, 6, 6, 1)
    spot[0, 2, 3] = 1.0
    even = ImageMorphology(image=Image(spot), operation="dilate", kernel_size=4).execute(None).IMAGE.pixels[0, ..., 0]
    assert even.nonzero().tolist() == [[r, c] for r in range(1, 5) for c in range(2, 6)]  # origin at 4 // 2


def test_image_quantize_keeps_to_the_palette():
    from nodes.core.image_filters import ImageQuantize

    gradient = torch.linspace(0, 1, 32).reshape(1, 1, 32, 1).expand(1, 16, 32, 3).contiguous()

    def quantize(dither, colors=4, image=gradient):
        return ImageQuantize(image=Image(image), colors=colors, dither=dither).execute(None).IMAGE.pixels

    plain = quantize("none")
    assert len(torch.unique(plain[..., 0])) <= 4 and torch.equal(plain[0, 0], plain[0, 15])  # rows alike
    for dither in ("floyd-steinberg", "bayer-4"):
        dithered = quantize(dither)
        assert set(torch.unique(dithered[..., 0]).tolist()) <= set(torch.unique(plain[..., 0]).tolist())
        assert not torch.equal(dithered, plain)
    two = torch.zeros(1, 4, 4, 3)
    two[:, :2] = 1.0
    assert torch.equal(quantize("none", colors=2, image=two), two)  # already two colours: unchanged


def test_scale_to_max_dimension_yuv_round_trip_and_mask_preview(tmp_path):
    from PIL import Image as PILImage

    from engine import Session, Settings
    from nodes.core.color_spaces import ImageRGBToYUV, ImageYUVToRGB
    from nodes.core.image_ops import ImageScaleToMaxDimension

    def scaled(height, width):
        return ImageScaleToMaxDimension(image=Image(torch.rand(1, height, width, 3)), upscale_method="area",
                                        largest_size=64).execute(None).IMAGE.pixels.shape[1:3]

    assert (scaled(30, 60), scaled(60, 45), scaled(10, 10)) == ((32, 64), (64, 48), (64, 64))

    pixels = torch.rand(2, 5, 6, 3, generator=torch.Generator().manual_seed(7))
    split = ImageRGBToYUV(image=Image(pixels)).execute(None)
    y, u, v = split.Y, split.U, split.V
    assert torch.allclose(y.pixels[..., 0], pixels @ torch.tensor([0.299, 0.587, 0.114]))
    assert torch.equal(y.pixels[..., 0], y.pixels[..., 2])  # grey images
    grey = torch.full((1, 2, 2, 3), 0.4)  # no colour: both chroma channels at the centre
    assert torch.allclose(ImageRGBToYUV(image=Image(grey)).execute(None).U.pixels, torch.full((1, 2, 2, 3), 0.5))
    back = ImageYUVToRGB(Y=y, U=u, V=v).execute(None).IMAGE.pixels
    assert torch.allclose(back, pixels, atol=2e-3)  # kornia's rounded BT.601 constants

    graph = {"1": {"class_type": "SolidMask", "inputs": {"value": 0.25, "width": 8, "height": 4}},
             "2": {"class_type": "MaskPreview", "inputs": {"mask": ["1", 0]}}}
    [path] = Session(settings=Settings(output_dir=tmp_path, models_dir=tmp_path)).execute(graph).files
    preview = np.asarray(PILImage.open(path))
    assert preview.shape == (4, 8, 3) and np.all(preview == 63)  # 0.25 × 255, truncated as SaveImage does


def test_images_named_as_the_web_ui_names_them_load_from_the_output_folder(tmp_path):
    from PIL import Image as PILImage

    from types import SimpleNamespace

    from engine import Session, Settings
    from nodes.core.image import output_images

    settings = Settings(output_dir=tmp_path / "out", input_dir=tmp_path / "in", models_dir=tmp_path)
    (tmp_path / "out" / "run").mkdir(parents=True)
    (tmp_path / "in").mkdir()
    PILImage.new("RGB", (4, 2), (255, 0, 0)).save(tmp_path / "out" / "run" / "red.png")
    PILImage.new("RGB", (4, 2), (0, 0, 255)).save(tmp_path / "in" / "red.png")  # same name, other folder
    session = Session(settings=settings, cache=False)

    def red_of(node, name):
        graph = {"1": {"class_type": node, "inputs": {"image": name}},
                 "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
        result = session.execute(graph, raise_on_error=False)
        return result.status if result.status != "ok" else int(np.asarray(PILImage.open(result.files[0]))[0, 0, 0])

    assert red_of("LoadImage", "run/red.png [output]") == 255
    assert red_of("LoadImage", "run/red.png") == "invalid"  # a plain name is the input folder's
    assert red_of("LoadImage", "red.png [input]") == red_of("LoadImage", "red.png") == 0
    assert red_of("LoadImageOutput", "run/red.png [output]") == red_of("LoadImageOutput", "run/red.png") == 255
    assert red_of("LoadImage", "../in/red.png [output]") == "invalid"
    assert "run/red.png [output]" in output_images(SimpleNamespace(settings=settings))


def test_preview_any_converts_as_comfyui_does():
    from nodes.core.preview_any import as_text
    from nodes.types import Latent

    assert [as_text(v) for v in ("a b", 3, 2.5, True, None, [1, "x"])] == ["a b", "3", "2.5", "True", "None",
                                                                           '[1, "x"]']
    assert as_text(Image(torch.zeros(1))) == str(torch.zeros(1))
    assert as_text(Latent(torch.zeros(1))) == str({"samples": torch.zeros(1)})
