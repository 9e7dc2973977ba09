"""Tiny random-weight SD1.5 and SDXL checkpoints in the original single-file layout.

The files hold exactly what real ones hold (LDM/SGM names, the VAE under `first_stage_model.`,
CLIP-L under `cond_stage_model.transformer.`, OpenCLIP-bigG under `conditioner.embedders.1.model.`)
with small widths; the CLIP vocabulary is the real one. Written through our own diffusers→LDM
name maps and read back through diffusers' converters, so a checkpoint that loads here went
through the real conversion code.
"""
from __future__ import annotations

from pathlib import Path

from ..core.ldm_keys import controlnet_ldm_names, diffusers_vae_to_ldm, hf_clip_to_open_clip, to_ldm, unet_ldm_names
from ..core.random_weights import fan_in_init_

VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "down_block_types": ["DownEncoderBlock2D"] * 4,
       "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [32, 32, 64, 64], "layers_per_block": 1,
       "norm_num_groups": 32}
CLIP_L = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 1,
          "hidden_act": "quick_gelu", "pad_token_id": 49407}
CLIP_G = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 3, "num_attention_heads": 2,
          "hidden_act": "gelu", "projection_dim": 128, "pad_token_id": 0}
SD15_UNET = {"sample_size": 8, "block_out_channels": [32, 64], "layers_per_block": 1,
             "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 64,
             "attention_head_dim": 8}
SDXL_UNET = {"sample_size": 8, "block_out_channels": [64, 128], "layers_per_block": 1,
             "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
             "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "cross_attention_dim": 192,
             "attention_head_dim": [1, 2], "transformer_layers_per_block": [1, 2], "use_linear_projection": True,
             "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
             "projection_class_embeddings_input_dim": 128 + 6 * 256}

# SD2's depth (4 levels × 2 blocks) so output_blocks.11 exists: ComfyUI tells v-prediction from
# the spread of that block's norm1 bias
SD2_UNET = {"sample_size": 8, "block_out_channels": [32, 32, 64, 64], "layers_per_block": 2,
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "cross_attention_dim": 64,
            "attention_head_dim": [1, 1, 1, 1], "use_linear_projection": True}
CLIP_H = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 1,
          "hidden_act": "gelu", "projection_dim": 64, "pad_token_id": 0}
REFINER_UNET = {"sample_size": 8, "block_out_channels": [64, 128], "layers_per_block": 1,
                "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "cross_attention_dim": 128,
                "attention_head_dim": [1, 2], "transformer_layers_per_block": [1, 1], "use_linear_projection": True,
                "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
                "projection_class_embeddings_input_dim": 128 + 5 * 256}


def _seeded(generator, build):
    """Build a module whose own init draws from the global RNG, seeded from `generator`,
    without disturbing the caller's global RNG."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2 ** 31, [1], generator=generator)))
        return build()


def _clip(config: dict, generator, projected: bool):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    full = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                          **config)
    model = _seeded(generator, lambda: (CLIPTextModelWithProjection if projected else CLIPTextModel)(full))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embedding" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    # checkpoints name CLIP-L weights as transformers 4 did, under `text_model.`
    return {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
            for k, v in model.state_dict().items()}


def _unet(config: dict, generator) -> dict:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**config)
    # fan-in scaled weights keep every path alive: the prediction then depends on the prompt and
    # the timestep as a real model's does, so tests can tell a wrong CFG or σ from a right one
    fan_in_init_(unet, generator)
    return to_ldm(unet.state_dict(), unet_ldm_names(unet.config))


def _vae(generator) -> dict:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**VAE)
    fan_in_init_(vae, generator)
    return diffusers_vae_to_ldm(vae.state_dict())


def _prefixed(prefix: str, state: dict) -> dict:
    return {prefix + k: v for k, v in state.items()}


def _save(path: Path, state: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    # fp16 on disk as published checkpoints are; position ids stay integers
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}, str(path))


def write_sd15(path: Path, seed: int = 0, in_channels: int = 4) -> Path:
    """`in_channels` 8 makes an InstructPix2Pix checkpoint, 9 an inpainting one."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    state = _prefixed("model.diffusion_model.", _unet({**SD15_UNET, "in_channels": in_channels}, generator))
    state |= _prefixed("cond_stage_model.transformer.", _clip(CLIP_L, generator, projected=False))
    state |= _prefixed("first_stage_model.", _vae(generator))
    _save(path, state)
    return path


def write_sdxl(path: Path, seed: int = 0) -> Path:
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    state = _prefixed("model.diffusion_model.", _unet(SDXL_UNET, generator))
    state |= _prefixed("conditioner.embedders.0.transformer.", _clip(CLIP_L, generator, projected=False))
    bigg = hf_clip_to_open_clip(_clip(CLIP_G, generator, projected=True))
    state |= _prefixed("conditioner.embedders.1.model.", bigg)
    state |= _prefixed("first_stage_model.", _vae(generator))
    _save(path, state)
    return path


def write_sdxl_refiner(path: Path, seed: int = 0) -> Path:
    import torch

    generator = torch.Generator().manual_seed(seed + 2)
    state = _prefixed("model.diffusion_model.", _unet(REFINER_UNET, generator))
    bigg = hf_clip_to_open_clip(_clip(CLIP_G, generator, projected=True))
    state |= _prefixed("conditioner.embedders.0.model.", bigg)
    state |= _prefixed("first_stage_model.", _vae(generator))
    _save(path, state)
    return path


def write_sd2(path: Path, seed: int = 0, v_prediction: bool = True) -> Path:
    import torch

    generator = torch.Generator().manual_seed(seed + 5)
    unet = _unet(SD2_UNET, generator)
    bias = "output_blocks.11.1.transformer_blocks.0.norm1.bias"
    unet[bias] = torch.randn(unet[bias].shape, generator=generator) * (0.2 if v_prediction else 0.01)
    state = _prefixed("model.diffusion_model.", unet)
    state |= _prefixed("cond_stage_model.model.", hf_clip_to_open_clip(_clip(CLIP_H, generator, projected=True)))
    state |= _prefixed("first_stage_model.", _vae(generator))
    _save(path, state)
    return path


def make_tiny_checkpoints(models: Path, seed: int = 0) -> None:
    checkpoints = Path(models) / "checkpoints"
    write_sd15(checkpoints / "tiny_sd15.safetensors", seed)
    write_sdxl(checkpoints / "tiny_sdxl.safetensors", seed)
    write_sdxl_refiner(checkpoints / "tiny_sdxl_refiner.safetensors", seed)
    write_sd2(checkpoints / "tiny_sd2_v.safetensors", seed)
    write_sdxl_parts(checkpoints / "tiny_sdxl.safetensors", models)
    write_tiny_loras(models, seed)
    write_tiny_embeddings(models, seed)
    write_tiny_controlnets(models, seed)
    write_tiny_clip_vision(models, seed)
    write_tiny_gligen(models, seed)


def _lora_pairs(prefix: str, weight_shape, rank: int, generator, alpha: float | None) -> dict:
    import torch

    out_features, in_features = weight_shape[0], weight_shape[1]
    kernel = tuple(weight_shape[2:])
    down = torch.randn((rank, in_features, *kernel), generator=generator) * 0.3
    up = torch.randn((out_features, rank, *([1] * len(kernel))), generator=generator) * 0.3
    pairs = {f"{prefix}.lora_down.weight": down, f"{prefix}.lora_up.weight": up}
    if alpha is not None:
        pairs[f"{prefix}.alpha"] = torch.tensor(alpha)
    return pairs


def write_tiny_loras(models: Path, seed: int = 0) -> None:
    """A kohya SD1.5 LoRA (UNet attention and resnet convs in kohya's diffusers-style flat names,
    text encoder as lora_te_), and a LyCORIS SDXL file with LoHa and LoKr layers in SGM names."""
    import torch
    from diffusers import UNet2DConditionModel

    generator = torch.Generator().manual_seed(seed + 3)
    loras = Path(models) / "loras"
    sd15 = UNet2DConditionModel(**SD15_UNET)
    state = {}
    for name, module in sd15.named_modules():
        if name.endswith(("attn1.to_q", "attn2.to_k", "attn2.to_v", "proj_in")) or name.endswith("resnets.0.conv1"):
            state |= _lora_pairs("lora_unet_" + name.replace(".", "_"), module.weight.shape, 4, generator, 2.0)
    for layer in range(CLIP_L["num_hidden_layers"]):
        for part in ("self_attn_q_proj", "self_attn_v_proj", "mlp_fc1"):
            shape = (CLIP_L["intermediate_size"] if part == "mlp_fc1" else CLIP_L["hidden_size"], CLIP_L["hidden_size"])
            state |= _lora_pairs(f"lora_te_text_model_encoder_layers_{layer}_{part}", shape, 4, generator, None)
    _save(loras / "tiny_sd15_kohya.safetensors", state)

    sdxl = UNet2DConditionModel(**SDXL_UNET)
    names = unet_ldm_names(sdxl.config)
    ordered = sorted(names, key=len, reverse=True)
    state = {}
    for name, module in sdxl.named_modules():
        if not name.endswith(("attn1.to_q", "attn2.to_v", "ff.net.2")):
            continue
        prefix = next(p for p in ordered if name.startswith(p + "."))
        flat = "lora_unet_" + (names[prefix] + name[len(prefix):]).replace(".", "_")
        out_features, in_features = module.weight.shape
        if name.endswith("ff.net.2"):  # LoKr: kron(w1, w2_a @ w2_b)
            state |= {f"{flat}.lokr_w1": torch.randn((2, 2), generator=generator),
                      f"{flat}.lokr_w2_a": torch.randn((out_features // 2, 2), generator=generator) * 0.2,
                      f"{flat}.lokr_w2_b": torch.randn((2, in_features // 2), generator=generator) * 0.2,
                      f"{flat}.alpha": torch.tensor(1.0)}
        else:  # LoHa
            state |= {f"{flat}.hada_w1_a": torch.randn((out_features, 4), generator=generator) * 0.3,
                      f"{flat}.hada_w1_b": torch.randn((4, in_features), generator=generator) * 0.3,
                      f"{flat}.hada_w2_a": torch.randn((out_features, 4), generator=generator) * 0.3,
                      f"{flat}.hada_w2_b": torch.randn((4, in_features), generator=generator) * 0.3,
                      f"{flat}.alpha": torch.tensor(4.0)}
    _save(loras / "tiny_sdxl_lycoris.safetensors", state)


def write_tiny_embeddings(models: Path, seed: int = 0) -> None:
    """Textual inversions: an A1111 .pt for SD1.5 (CLIP-L width) and an SDXL safetensors with
    clip_l and clip_g vectors."""
    import torch

    generator = torch.Generator().manual_seed(seed + 4)
    folder = Path(models) / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"string_to_param": {"*": torch.randn((2, CLIP_L["hidden_size"]), generator=generator)}, "name": "tiny"},
               folder / "tiny_style.pt")
    _save(folder / "tiny_sdxl_style.safetensors",
          {"clip_l": torch.randn((3, CLIP_L["hidden_size"]), generator=generator),
           "clip_g": torch.randn((3, CLIP_G["hidden_size"]), generator=generator)})


def write_sdxl_parts(checkpoint: Path, models: Path) -> None:
    """The SDXL checkpoint's parts as separate files, as they are shared for UNETLoader,
    DualCLIPLoader and VAELoader: a bare LDM UNet, CLIP-L and bigG in transformers' names (bigG
    with its projection), and the VAE in LDM names."""
    from ..core.state_files import CheckpointFile
    from ..core.ldm_keys import open_clip_to_hf_clip

    file = CheckpointFile(checkpoint)
    models = Path(models)
    _save(models / "diffusion_models" / "tiny_sdxl_unet.safetensors", file.tensors("model.diffusion_model."))
    _save(models / "text_encoders" / "tiny_clip_l.safetensors", file.tensors("conditioner.embedders.0.transformer."))
    _save(models / "text_encoders" / "tiny_clip_g.safetensors",
          open_clip_to_hf_clip(file.tensors("conditioner.embedders.1.model.")))
    _save(models / "vae" / "tiny_sdxl_vae.safetensors", file.tensors("first_stage_model."))


def _controlnet(unet_config: dict, generator):
    from diffusers import ControlNetModel

    config = {k: v for k, v in unet_config.items() if k not in ("up_block_types", "sample_size")}
    net = ControlNetModel(**config, conditioning_embedding_out_channels=(8, 8, 16, 16))
    fan_in_init_(net, generator)  # trained zero convolutions are not zero; these must not be either
    return net


def write_tiny_controlnets(models: Path, seed: int = 0) -> None:
    """An SD1.5 ControlNet in the original layout (`control_model.` + cldm names, as the v1.0/1.1
    files are) and an SDXL one in diffusers' (`diffusion_pytorch_model.safetensors`, as SDXL
    ControlNets are mostly published)."""
    import torch

    generator = torch.Generator().manual_seed(seed + 6)
    folder = Path(models) / "controlnet"
    sd15 = _controlnet(SD15_UNET, generator)
    _save(folder / "tiny_sd15_controlnet.safetensors",
          _prefixed("control_model.", to_ldm(sd15.state_dict(), controlnet_ldm_names(sd15.config))))
    _save(folder / "tiny_sdxl_controlnet" / "diffusion_pytorch_model.safetensors",
          _controlnet(SDXL_UNET, generator).state_dict())


def write_tiny_clip_vision(models: Path, seed: int = 0) -> None:
    """A CLIP vision tower in transformers' names, as clip_vision_g.safetensors is published; its
    projection is as wide as the tiny SDXL's pooled text, which revision replaces with it."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    generator = torch.Generator().manual_seed(seed + 7)
    config = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                              image_size=224, patch_size=14, projection_dim=CLIP_G["projection_dim"],
                              hidden_act="gelu", layer_norm_eps=1e-5)
    model = _seeded(generator, lambda: CLIPVisionModelWithProjection(config))
    _save(Path(models) / "clip_vision" / "tiny_clip_vision_g.safetensors", model.state_dict())


def write_tiny_gligen(models: Path, seed: int = 0) -> None:
    """A GLIGEN text-box model for the tiny SD1.5 in the layout ComfyUI reads (a fuser under each
    transformer block's LDM name, `position_net.`): diffusers' gated attention and position net,
    renamed through our UNet name map. Its gates are open (tanh 0.46) so its boxes show."""
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention import GatedSelfAttentionDense
    from diffusers.models.embeddings import GLIGENTextBoundingboxProjection

    generator = torch.Generator().manual_seed(seed + 8)
    unet = UNet2DConditionModel(**SD15_UNET)
    text_width = CLIP_L["hidden_size"]
    state = {}
    for name, module in unet.named_modules():
        if name.count(".") > 1 and name.rsplit(".", 2)[-2] == "transformer_blocks":
            fuser = GatedSelfAttentionDense(module.attn1.query_dim, text_width, 1, module.attn1.query_dim)
            fan_in_init_(fuser, generator)
            with torch.no_grad():
                fuser.alpha_attn.fill_(0.5)
                fuser.alpha_dense.fill_(0.5)
            state |= {f"{name}.fuser.{k}": v for k, v in fuser.state_dict().items()}
    state = to_ldm(state, unet_ldm_names(unet.config))
    position = GLIGENTextBoundingboxProjection(positive_len=text_width, out_dim=text_width)
    fan_in_init_(position, generator)
    state |= {f"position_net.{k}": v for k, v in position.state_dict().items()}
    _save(Path(models) / "gligen" / "tiny_gligen_sd15.safetensors", state)
