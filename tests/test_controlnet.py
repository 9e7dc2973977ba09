"""ControlNets (ControlNetLoader, ControlNetApplyAdvanced, the old ControlNetApply) and Canny.

The tiny ControlNets are written by make-tiny-models: SD1.5's in the original `control_model.`
cldm layout, SDXL's in diffusers' layout. Their zero convolutions are random, so a ControlNet
that is not applied, or applied wrongly, shows in the image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine import Session, Settings
from engine.errors import NodeExecutionError
from nodes.core.canny import canny_edges
from nodes.sd.controlnet import ControlLink, _broadcast, control_residuals, controlnet_handle

from .test_sd_models import _dpmpp_2m_karras, _graph, _pipeline_parts

CONTROLNETS = {"sd15": "tiny_sd15_controlnet.safetensors",
               "sdxl": "tiny_sdxl_controlnet/diffusion_pytorch_model.safetensors"}


@pytest.fixture
def hint_dir(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pixels = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "hint.png")
    return folder


def _controlled(family: str, *, control_net=None, strength=0.8, start=0.0, end=1.0, old_node=False, **sampling):
    graph = _graph(f"tiny_{family}.safetensors", sampling.get("sampler", "dpmpp_2m"),
                   sampling.get("scheduler", "karras"), sampling.get("cfg", 7.0))
    graph["20"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": control_net or CONTROLNETS[family]}}
    graph["21"] = {"class_type": "LoadImage", "inputs": {"image": "hint.png"}}
    if old_node:
        graph["22"] = {"class_type": "ControlNetApply", "inputs": {
            "conditioning": ["6", 0], "control_net": ["20", 0], "image": ["21", 0], "strength": strength}}
        graph["3"]["inputs"]["positive"] = ["22", 0]
    else:
        graph["22"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["6", 0], "negative": ["7", 0], "control_net": ["20", 0], "image": ["21", 0],
            "strength": strength, "start_percent": start, "end_percent": end}}
        graph["3"]["inputs"]["positive"] = ["22", 0]
        graph["3"]["inputs"]["negative"] = ["22", 1]
    return graph


def _image(tiny_models, tmp_path, inputs, graph) -> np.ndarray:
    settings = Settings(models_dir=tiny_models, output_dir=tmp_path / "out", input_dir=inputs, device="cpu")
    result = Session(settings=settings).execute(graph)
    assert result.status == "ok", result.errors
    return np.asarray(Image.open(result.files[0])).astype(int)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_controlnet_files_load_bit_for_bit_through_diffusers(family, tiny_models):
    """The original layout goes through diffusers' converter (plus the SDXL size embedding its
    table lacks); the diffusers file loads as it is. Both give the network that was written."""
    from nodes.sd.tiny import SD15_UNET, SDXL_UNET, _controlnet

    handle = controlnet_handle(tiny_models / "controlnet" / CONTROLNETS[family], "cpu")
    assert handle.family_name == ("sd1" if family == "sd15" else "sdxl")
    assert handle.layout == ("ldm" if family == "sd15" else "diffusers")
    loaded = handle.load().state_dict()
    generator = torch.Generator().manual_seed(6)
    written = _controlnet(SD15_UNET, generator)
    if family == "sdxl":
        written = _controlnet(SDXL_UNET, generator)
    expected = written.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k].half().float()) for k in expected)


def test_an_sdxl_controlnet_in_the_original_layout_keeps_its_size_embedding(tiny_models, tmp_path):
    from safetensors.torch import save_file

    from nodes.core.ldm_keys import controlnet_ldm_names, to_ldm

    diffusers_file = tiny_models / "controlnet" / CONTROLNETS["sdxl"]
    net = controlnet_handle(diffusers_file, "cpu").load()
    original = to_ldm(net.state_dict(), controlnet_ldm_names(net.config))
    assert "label_emb.0.0.weight" in original
    save_file({k: v.contiguous() for k, v in original.items()}, str(tmp_path / "sdxl_cldm.safetensors"))
    handle = controlnet_handle(tmp_path / "sdxl_cldm.safetensors", "cpu")
    assert (handle.layout, handle.prefix, handle.family_name) == ("ldm", "", "sdxl")
    again = handle.load().state_dict()
    assert all(torch.equal(again[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_controlnet_txt2img_matches_the_diffusers_controlnet_pipeline(family, tiny_models, tmp_path, hint_dir):
    from diffusers import StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline

    from nodes.sampling.noise import initial_noise
    from nodes.sd.clip_text import clip_tokenizer

    ours = _image(tiny_models, tmp_path, hint_dir, _controlled(family, strength=0.8))
    plain = _image(tiny_models, tmp_path, hint_dir, _graph(f"tiny_{family}.safetensors", "dpmpp_2m", "karras", 7.0))
    assert np.abs(ours - plain).max() > 50  # the ControlNet acts

    path = tiny_models / "checkpoints" / f"tiny_{family}.safetensors"
    unet, towers, vae = _pipeline_parts(path, "sd1" if family == "sd15" else "sdxl")
    net = controlnet_handle(tiny_models / "controlnet" / CONTROLNETS[family], "cpu").load()
    tokenizer = clip_tokenizer()
    if family == "sd15":
        pipe = StableDiffusionControlNetPipeline(
            vae=vae, text_encoder=towers[0], tokenizer=tokenizer, unet=unet, controlnet=net,
            scheduler=_dpmpp_2m_karras(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        import copy

        tokenizer_2 = copy.deepcopy(tokenizer)
        tokenizer_2.pad_token = "!"
        pipe = StableDiffusionXLControlNetPipeline(
            vae=vae, text_encoder=towers[0], text_encoder_2=towers[1], tokenizer=tokenizer, tokenizer_2=tokenizer_2,
            unet=unet, controlnet=net, scheduler=_dpmpp_2m_karras(), force_zeros_for_empty_prompt=False)
    vae.config.scaling_factor = 0.18215 if family == "sd15" else 0.13025
    hint = torch.from_numpy(np.array(Image.open(hint_dir / "hint.png"))).float().div(255).permute(2, 0, 1)[None]
    image = pipe("a photo of a red cat", image=hint, negative_prompt="blurry", num_inference_steps=6,
                 guidance_scale=7.0, height=64, width=64, latents=initial_noise([1, 4, 8, 8], 42), output_type="np",
                 controlnet_conditioning_scale=0.8).images[0]
    theirs = np.clip(255.0 * image, 0, 255).astype(int)
    assert np.abs(ours - theirs).max() <= 1


def test_the_old_node_lends_its_controlnet_to_the_negative(tiny_models, tmp_path, hint_dir):
    """ControlNetApply sets the positive only; ComfyUI gives the ControlNet to the negative's
    whole-image entry while sampling, so the image is the advanced node's on both sides."""
    both = _image(tiny_models, tmp_path, hint_dir, _controlled("sd15", strength=0.7))
    old = _image(tiny_models, tmp_path, hint_dir, _controlled("sd15", strength=0.7, old_node=True))
    assert np.array_equal(both, old)


def test_strength_zero_or_an_empty_window_leaves_the_image_as_without(tiny_models, tmp_path, hint_dir):
    plain = _image(tiny_models, tmp_path, hint_dir, _graph("tiny_sd15.safetensors", "dpmpp_2m", "karras", 7.0))
    for graph in (_controlled("sd15", strength=0.0), _controlled("sd15", start=0.0, end=0.0)):
        assert np.array_equal(_image(tiny_models, tmp_path, hint_dir, graph), plain)
    late = _image(tiny_models, tmp_path, hint_dir, _controlled("sd15", start=0.5, end=1.0))
    whole = _image(tiny_models, tmp_path, hint_dir, _controlled("sd15"))
    assert not np.array_equal(late, plain) and not np.array_equal(late, whole)


def test_a_link_acts_between_its_start_and_end_sigmas():
    from nodes.sampling.model_sampling import DiscreteSampling

    ms = DiscreteSampling()
    link = ControlLink(net=None, hint=None, strength=1.0, start_percent=0.25, end_percent=0.75)
    start, end = ms.percent_to_sigma(0.25), ms.percent_to_sigma(0.75)
    assert not link.active(start * 1.01, ms.percent_to_sigma)
    assert link.active(start, ms.percent_to_sigma) and link.active(end, ms.percent_to_sigma)
    assert not link.active(end * 0.99, ms.percent_to_sigma)
    assert ControlLink(None, None, 1.0).active(1e6, ms.percent_to_sigma)


def test_chained_controlnets_add_their_scaled_residuals(tiny_models):
    handle = controlnet_handle(tiny_models / "controlnet" / CONTROLNETS["sd15"], "cpu")
    nets = {handle: handle.load()}
    generator = torch.Generator().manual_seed(1)
    x, context = torch.randn([2, 4, 8, 8], generator=generator), torch.randn([2, 77, 64], generator=generator)
    timesteps = torch.tensor([500, 500])
    first = ControlLink(handle, torch.rand([1, 3, 64, 64], generator=generator), 0.5)
    second = ControlLink(handle, torch.rand([1, 3, 32, 32], generator=generator), 1.5, previous=first)

    def residuals(*links):
        out = control_residuals(list(links), nets, x, timesteps, context, {}, batched_number=2, unet_config={})
        assert out.blocks == {}  # ControlNets add to skip connections, not to input blocks
        return out.skips, out.middle

    (down_1, mid_1), (down_2, mid_2) = residuals(first), residuals(second)
    down, mid = residuals(*second.chain())
    assert second.chain() == [first, second]
    assert torch.allclose(mid, mid_1 + mid_2) and all(torch.allclose(d, a + b) for d, a, b in zip(down, down_1, down_2))
    half, _ = residuals(ControlLink(handle, first.hint, 1.0))
    assert torch.allclose(down_1[0], 0.5 * half[0])


def test_a_hint_batch_is_spread_over_each_conditionings_images():
    hints = torch.arange(3.0).reshape(3, 1, 1, 1)
    assert _broadcast(hints[:1], 4, 2).shape[0] == 1  # one hint: broadcast by the network
    assert _broadcast(hints[:2], 4, 2).flatten().tolist() == [0, 1, 0, 1]
    assert _broadcast(hints, 4, 2).flatten().tolist() == [0, 1, 0, 1]  # more hints than images: the first
    assert _broadcast(hints[:2], 6, 2).flatten().tolist() == [0, 1, 0, 0, 1, 0]


def test_wrong_files_are_refused_naming_the_loader(tiny_models, tmp_path, hint_dir):
    import os
    import shutil

    from safetensors.torch import save_file

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models, copy_function=os.link)
    save_file({"lora_controlnet": torch.zeros(1), "input_hint_block.0.weight": torch.zeros(2, 2, 3, 3)},
              str(models / "controlnet" / "control_lora.safetensors"))
    save_file({"conv_in.weight": torch.zeros(2, 64, 3, 3), "body.0.block1.weight": torch.zeros(2, 2, 3, 3),
               "body.2.down_opt.op.weight": torch.zeros(2, 2, 3, 3)}, str(models / "controlnet" / "t2i_conv.safetensors"))
    save_file({"something.else": torch.zeros(2)}, str(models / "controlnet" / "unknown.safetensors"))
    session = Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", input_dir=hint_dir,
                                        device="cpu"))
    for name, message in (("control_lora.safetensors", "is a Control-LoRA"),
                          ("t2i_conv.safetensors", "downsamples with convolutions"),
                          ("unknown.safetensors", "is not a ControlNet or T2I-Adapter")):
        with pytest.raises(NodeExecutionError, match=message) as refused:
            session.execute(_controlled("sd15", control_net=name))
        assert refused.value.error.node_type == "ControlNetLoader"
    with pytest.raises(NodeExecutionError, match="for sdxl models; the model sampled is sd1") as mismatch:
        session.execute(_controlled("sd15", control_net=CONTROLNETS["sdxl"]))
    assert (mismatch.value.error.node_id, mismatch.value.error.input) == ("20", "control_net_name")
    assert not list((tmp_path / "out").rglob("*.png"))


def test_canny_finds_a_squares_outline_and_its_thresholds_and_hysteresis_act():
    image = torch.zeros(1, 3, 48, 48)
    image[:, :, 12:36, 12:36] = 1.0
    edges = canny_edges(image, 0.4, 0.8)[0, 0]
    assert set(edges.unique().tolist()) <= {0.0, 1.0}
    ys, xs = torch.nonzero(edges, as_tuple=True)
    near_border = torch.minimum(torch.minimum((ys - 11.5).abs(), (ys - 35.5).abs()),
                                torch.minimum((xs - 11.5).abs(), (xs - 35.5).abs()))
    assert len(ys) > 40 and near_border.max() <= 1.5  # every edge pixel on the outline
    # a faint line (gradient 0.91 at its centre column, weak everywhere for a high threshold of
    # 0.95) disappears unless it touches a strong edge, which hysteresis then follows
    faint = torch.zeros(1, 3, 48, 48)
    faint[..., 25:], faint[..., 24] = 0.35, 0.175
    assert canny_edges(faint, 0.5, 0.95).sum() == 0
    assert canny_edges(faint, 0.5, 0.85)[0, 0, :, 24].sum() == 48
    joined = faint.clone()
    joined[:, :, :6, 25:], joined[:, :, :6, 24] = 1.0, 0.5  # strong at the top of the same line
    followed = canny_edges(joined, 0.5, 0.95)[0, 0]
    assert followed[10:40, 24].sum() == 30 and followed[10:40].sum() == 30


def test_the_canny_node_gives_a_grey_edge_image(tiny_models, tmp_path, hint_dir):
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "hint.png"}},
             "2": {"class_type": "Canny", "inputs": {"image": ["1", 0], "low_threshold": 0.2, "high_threshold": 0.5}},
             "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    pixels = _image(tiny_models, tmp_path, hint_dir, graph)
    assert pixels.shape == (64, 64, 3) and set(np.unique(pixels)) == {0, 255}
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_a_diff_controlnet_is_added_to_the_models_unet(tiny_models, tmp_path, hint_dir):
    """A diff ControlNet stores its weights minus the UNet's. DiffControlNetLoader adds the
    model's back, giving the full ControlNet's image; ControlNetLoader refuses it by name."""
    import os
    import shutil

    from safetensors.torch import load_file, save_file

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models, copy_function=os.link)
    full = load_file(str(tiny_models / "controlnet" / CONTROLNETS["sd15"]))
    unet = load_file(str(tiny_models / "checkpoints" / "tiny_sd15.safetensors"))
    diff = {k: (v.float() - unet[k.replace("control_model.", "model.diffusion_model.")].float())
            if k.replace("control_model.", "model.diffusion_model.") in unet else v.float() for k, v in full.items()}
    assert sum(k.replace("control_model.", "model.diffusion_model.") in unet for k in full) > 50
    save_file(diff | {"difference": torch.tensor([])}, str(models / "controlnet" / "diff_sd15.safetensors"))
    session = Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", input_dir=hint_dir,
                                        device="cpu"))

    def pixels(graph):
        result = session.execute(graph)
        assert result.status == "ok", result.errors
        return np.asarray(Image.open(result.files[0])).astype(int)

    expected = pixels(_controlled("sd15"))
    graph = _controlled("sd15", control_net="diff_sd15.safetensors")
    graph["20"] = {"class_type": "DiffControlNetLoader", "inputs": {"model": ["4", 0],
                                                                    "control_net_name": "diff_sd15.safetensors"}}
    assert np.abs(pixels(graph) - expected).max() <= 1
    with pytest.raises(NodeExecutionError, match="load it with DiffControlNetLoader"):
        session.execute(_controlled("sd15", control_net="diff_sd15.safetensors"))
