"""T2I-Adapters through ControlNetLoader: TencentARC's and diffusers' files, the full, light and
SDXL kinds, and the maps added where ComfyUI adds them (after each level's last input block,
into the skip connection; SDXL adapters' last map after the middle block)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from nodes.sd.t2i_adapter import (T2IAdapterHandle, adding_to_input_blocks, input_block_of_level,
                                  input_block_modules, t2i_adapter_handle)

KINDS = {"full_adapter": dict(in_channels=1, channels=[32, 64, 128, 128], num_res_blocks=2, downscale_factor=8),
         "light_adapter": dict(in_channels=3, channels=[32, 64, 128], num_res_blocks=4, downscale_factor=8),
         "full_adapter_xl": dict(in_channels=3, channels=[32, 64, 128, 128], num_res_blocks=2, downscale_factor=16)}


def _adapter(kind: str, seed: int = 0):
    from diffusers import T2IAdapter

    from nodes.core.random_weights import fan_in_init_

    adapter = T2IAdapter(adapter_type=kind, **KINDS[kind])
    fan_in_init_(adapter, torch.Generator().manual_seed(seed))
    return adapter


def _original_names(state: dict, kind: str) -> dict:
    """diffusers' names back to TencentARC's (what ComfyUI reads), written out independently."""
    out = {}
    for name, value in state.items():
        name = name.removeprefix("adapter.")
        if kind == "light_adapter":
            name = re.sub(r"^body\.(\d+)\.resnets\.(\d+)\.", r"body.\1.body.\2.", name)
        else:
            name = re.sub(r"^body\.(\d+)\.resnets\.(\d+)\.", lambda m: f"body.{int(m[1]) * 2 + int(m[2])}.", name)
            name = re.sub(r"^body\.(\d+)\.in_conv\.", lambda m: f"body.{int(m[1]) * 2}.in_conv.", name)
        out[name] = value
    return out


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("names", ["original", "diffusers"])
def test_adapter_files_are_read_in_either_naming(kind, names, tmp_path):
    from safetensors.torch import save_file

    adapter = _adapter(kind)
    state = adapter.state_dict()
    written = _original_names(state, kind) if names == "original" else state
    save_file({k: v.contiguous() for k, v in written.items()}, str(tmp_path / "adapter.safetensors"))
    handle = t2i_adapter_handle(tmp_path / "adapter.safetensors", "cpu")
    assert (handle.kind, handle.original_names, handle.in_channels) == (kind, names == "original",
                                                                        KINDS[kind]["in_channels"])
    assert handle.channels == (32, 64, 128, 128) and handle.num_res_blocks == KINDS[kind]["num_res_blocks"]
    loaded = handle.load().state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def _sd_unet(all_cross_attention: bool, context: int = 32):
    """SD1.5's topology at small widths: 4 levels of 2 blocks, so input blocks 2, 5, 8, 11 close
    the levels. With cross-attention on every level diffusers' own adapter path adds where
    ComfyUI does, which the next test uses."""
    from diffusers import UNet2DConditionModel

    down = ["CrossAttnDownBlock2D"] * (4 if all_cross_attention else 3) + ([] if all_cross_attention else ["DownBlock2D"])
    up = ([] if all_cross_attention else ["UpBlock2D"]) + ["CrossAttnUpBlock2D"] * (4 if all_cross_attention else 3)
    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, block_out_channels=[32, 64, 128, 128], layers_per_block=2,
                                down_block_types=down, up_block_types=up, cross_attention_dim=context,
                                attention_head_dim=8).eval()


def test_maps_land_where_diffusers_own_adapter_path_puts_them_on_cross_attention_levels():
    unet = _sd_unet(all_cross_attention=True)
    maps = [m * 0.7 for m in _adapter("full_adapter")(torch.rand([1, 1, 64, 64]))]
    inputs = dict(sample=torch.randn([1, 4, 8, 8]), timestep=torch.tensor([500.0]),
                  encoder_hidden_states=torch.randn([1, 77, 32]), return_dict=False)
    with torch.no_grad():
        theirs = unet(**inputs, down_intrablock_additional_residuals=list(maps))[0]
        blocks = dict(zip(input_block_of_level(unet.config, xl=False), maps))
        assert list(blocks) == [2, 5, 8, 11]
        with adding_to_input_blocks(unet, blocks):
            ours = unet(**inputs)[0]
        plain = unet(**inputs)[0]
    assert torch.equal(ours, theirs) and (ours - plain).abs().max() > 1e-3


def test_sdxl_adapter_maps_go_after_blocks_3_5_8_and_the_middle():
    """SDXL's 9 input blocks; the XL adapter's maps are at ½, ½, ¼ and ¼ of the latent."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(sample_size=8, block_out_channels=[32, 64, 128], layers_per_block=2,
                                down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                                up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                                cross_attention_dim=32, attention_head_dim=[1, 2, 4],
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=32 + 6 * 8).eval()
    assert len(input_block_modules(unet)) == 9
    maps = _adapter("full_adapter_xl")(torch.rand([1, 3, 64, 64]))
    assert [tuple(m.shape[1:]) for m in maps] == [(32, 4, 4), (64, 4, 4), (128, 2, 2), (128, 2, 2)]
    seen = {}
    modules = input_block_modules(unet)
    for index in (3, 5, 8):
        modules[index].register_forward_hook(lambda m, a, out, i=index: seen.setdefault(i, out))
    inputs = dict(sample=torch.randn([1, 4, 8, 8]), timestep=torch.tensor([500.0]),
                  encoder_hidden_states=torch.randn([1, 77, 32]), return_dict=False,
                  added_cond_kwargs={"text_embeds": torch.randn([1, 32]), "time_ids": torch.ones([1, 6])})
    with torch.no_grad():
        with adding_to_input_blocks(unet, dict(zip([3, 5, 8], maps[:3])), middle=maps[3]):
            unet(**inputs)
    assert [tuple((seen[i][0] if isinstance(seen[i], tuple) else seen[i]).shape[1:]) for i in (3, 5, 8)] == \
        [(32, 4, 4), (64, 4, 4), (128, 2, 2)]


def test_a_t2i_adapter_guides_a_workflow_through_controlnet_loader(tmp_path):
    """An SD1.5-topology checkpoint and a TencentARC-named depth adapter (1 hint channel: the
    hint's channels are averaged): the image changes, strength 0 leaves it as it was, and an
    adapter of other widths is refused on the loader."""
    from PIL import Image
    from safetensors.torch import save_file

    from engine import Session, Settings
    from engine.errors import NodeExecutionError
    from nodes.core.ldm_keys import to_ldm, unet_ldm_names
    from nodes.core.random_weights import fan_in_init_
    from nodes.sd.tiny import CLIP_L, _clip, _save, _vae

    from .test_controlnet import _controlled

    generator = torch.Generator().manual_seed(11)
    unet = _sd_unet(all_cross_attention=False, context=CLIP_L["hidden_size"])
    fan_in_init_(unet, generator)
    state = {"model.diffusion_model." + k: v for k, v in to_ldm(unet.state_dict(), unet_ldm_names(unet.config)).items()}
    state |= {"cond_stage_model.transformer." + k: v for k, v in _clip(CLIP_L, generator, False).items()}
    state |= {"first_stage_model." + k: v for k, v in _vae(generator).items()}
    models = tmp_path / "models"
    _save(models / "checkpoints" / "tiny_sd15.safetensors", state)
    (models / "t2i_adapter").mkdir()
    save_file({k: v.contiguous() for k, v in _original_names(_adapter("full_adapter").state_dict(),
                                                             "full_adapter").items()},
              str(models / "t2i_adapter" / "t2iadapter_depth.safetensors"))
    save_file({k: v.contiguous() for k, v in _original_names(_adapter("full_adapter_xl").state_dict(),
                                                             "full_adapter_xl").items()},
              str(models / "t2i_adapter" / "t2iadapter_xl.safetensors"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(inputs / "hint.png")
    session = Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", input_dir=inputs, device="cpu"))

    def pixels(graph):
        result = session.execute(graph)
        assert result.status == "ok", result.errors
        return np.asarray(Image.open(result.files[0])).astype(int)

    guided = pixels(_controlled("sd15", control_net="t2iadapter_depth.safetensors", strength=1.0))
    unguided = pixels(_controlled("sd15", control_net="t2iadapter_depth.safetensors", strength=0.0))
    assert np.abs(guided - unguided).max() > 10
    assert isinstance(t2i_adapter_handle(models / "t2i_adapter" / "t2iadapter_depth.safetensors", "cpu"),
                      T2IAdapterHandle)
    with pytest.raises(NodeExecutionError, match="T2I-Adapter with levels") as misfit:
        session.execute(_controlled("sd15", control_net="t2iadapter_xl.safetensors"))
    assert misfit.value.error.node_type == "ControlNetLoader"
