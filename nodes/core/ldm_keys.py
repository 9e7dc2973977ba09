"""Names of the same weights in diffusers and in the original LDM/SGM checkpoints.

`unet_ldm_names(config)` maps every diffusers UNet module path to its LDM path; LoRA files
name UNet weights either way (kohya SD1.5 uses diffusers paths, kohya SDXL LDM ones), and the
tiny checkpoints are written through it. diffusers' own converters read checkpoints; this
module is independent of them, so the round trip checks both. The tiny models are written
through it.
"""
from __future__ import annotations

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def unet_ldm_names(config: dict) -> dict[str, str]:
    """diffusers module path -> LDM module path (no `.weight`/`.bias`), for a UNet2DConditionModel
    config. Transformer internals keep their names, so attention blocks map by prefix."""
    per_level = config["layers_per_block"]
    levels = len(config["block_out_channels"])
    names = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
             "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
             "add_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0", "conv_out": "out.2",
             "mid_block.attentions.0": "middle_block.1"}
    for j in range(2):
        for ours, theirs in _RESNET.items():
            names[f"mid_block.resnets.{j}.{ours}"] = f"middle_block.{2 * j}.{theirs}"
    for i in range(levels):
        has_attention = config["down_block_types"][i].startswith("CrossAttn")
        for j in range(per_level):
            block = 1 + (per_level + 1) * i + j
            for ours, theirs in _RESNET.items():
                names[f"down_blocks.{i}.resnets.{j}.{ours}"] = f"input_blocks.{block}.0.{theirs}"
            if has_attention:
                names[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{block}.1"
        if i < levels - 1:
            names[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{(per_level + 1) * (i + 1)}.0.op"
        up_attention = config["up_block_types"][i].startswith("CrossAttn")
        for j in range(per_level + 1):
            block = (per_level + 1) * i + j
            for ours, theirs in _RESNET.items():
                names[f"up_blocks.{i}.resnets.{j}.{ours}"] = f"output_blocks.{block}.0.{theirs}"
            if up_attention:
                names[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{block}.1"
        if i < levels - 1:
            names[f"up_blocks.{i}.upsamplers.0.conv"] = \
                f"output_blocks.{(per_level + 1) * i + per_level}.{2 if up_attention else 1}.conv"
    return names


def controlnet_ldm_names(config: dict, hint_blocks: int = 6) -> dict[str, str]:
    """diffusers ControlNetModel module path -> LDM path (ControlNet's `cldm` names): the UNet's
    encoder half, the hint encoder (convs at the even places of `input_hint_block`, SiLUs between),
    and the zero convolutions after each input block and after the middle block."""
    levels = len(config["block_out_channels"])
    encoder_half = unet_ldm_names({**config, "up_block_types": ["UpBlock2D"] * levels})
    names = {ours: theirs for ours, theirs in encoder_half.items()
             if not ours.startswith(("up_blocks.", "conv_norm_out", "conv_out"))}
    names["controlnet_cond_embedding.conv_in"] = "input_hint_block.0"
    for k in range(hint_blocks):
        names[f"controlnet_cond_embedding.blocks.{k}"] = f"input_hint_block.{2 * (k + 1)}"
    names["controlnet_cond_embedding.conv_out"] = f"input_hint_block.{2 * (hint_blocks + 1)}"
    for i in range(levels * (config["layers_per_block"] + 1)):
        names[f"controlnet_down_blocks.{i}"] = f"zero_convs.{i}.0"
    names["controlnet_mid_block"] = "middle_block_out.0"
    return names


def to_ldm(state: dict, names: dict[str, str]) -> dict:
    """Rename diffusers keys by the longest matching module-path prefix."""
    ordered = sorted(names, key=len, reverse=True)
    out = {}
    for key, value in state.items():
        prefix = next((p for p in ordered if key.startswith(p + ".")), None)
        if prefix is None:
            raise KeyError(f"no LDM name for {key}")
        out[names[prefix] + key[len(prefix):]] = value
    return out


def diffusers_vae_to_ldm(state: dict) -> dict:
    """diffusers AutoencoderKL keys → the original LDM keys that single-file VAEs use.

    The loader goes the other way with diffusers' own `convert_ldm_vae_checkpoint`, so a tiny
    file written here exercises exactly the conversion a real sdxl.vae.safetensors goes through.
    """
    n_up = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("decoder.up_blocks."))
    out = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        new = new.replace(".downsamplers.0.", ".downsample.").replace(".upsamplers.0.", ".upsample.")
        parts = new.split(".")
        if parts[1] == "down_blocks":
            parts[1] = "down"
        elif parts[1] == "up_blocks":
            parts[1], parts[2] = "up", str(n_up - 1 - int(parts[2]))  # LDM counts up blocks upwards
        elif parts[1] == "mid_block":
            if parts[2] == "resnets":
                parts[1:4] = ["mid", f"block_{int(parts[3]) + 1}"]
            else:  # attentions.0.<name>
                name = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}[parts[4]]
                parts = [parts[0], "mid", "attn_1", name, parts[-1]]
                if value.dim() == 2:
                    value = value[:, :, None, None]  # LDM attention projections are 1x1 convs
        if len(parts) > 3 and parts[1] in ("down", "up") and parts[3] == "resnets":
            parts[3] = "block"
        out[".".join(parts)] = value.contiguous()
    return out


# transformers CLIP names -> OpenCLIP names, per encoder layer and for the rest of the tower
_OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                    "self_attn.out_proj": "attn.out_proj"}
_OPEN_CLIP_TOWER = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
                    "text_model.embeddings.position_embedding.weight": "positional_embedding",
                    "text_model.final_layer_norm.weight": "ln_final.weight",
                    "text_model.final_layer_norm.bias": "ln_final.bias"}


def hf_clip_to_open_clip(state: dict) -> dict:
    """transformers CLIPTextModel(WithProjection) weights -> OpenCLIP text-tower names, as SD2 and
    SDXL checkpoints store them (q/k/v fused into `in_proj`, `text_projection` as a matrix)."""
    import torch

    out = {theirs: state[ours] for ours, theirs in _OPEN_CLIP_TOWER.items()}
    if "text_projection.weight" in state:
        out["text_projection"] = state["text_projection.weight"].T.contiguous()
    layers = {int(k.split(".")[3]) for k in state if k.startswith("text_model.encoder.layers.")}
    for n in range(len(layers)):
        hf, oc = f"text_model.encoder.layers.{n}.", f"transformer.resblocks.{n}."
        for kind in ("weight", "bias"):
            out[f"{oc}attn.in_proj_{kind}"] = torch.cat([state[f"{hf}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for ours, theirs in _OPEN_CLIP_LAYER.items():
                out[f"{oc}{theirs}.{kind}"] = state[f"{hf}{ours}.{kind}"]
    return out


def open_clip_to_hf_clip(state: dict) -> dict:
    """The other way: OpenCLIP text-tower weights (a checkpoint's SD2/SDXL towers) -> the names
    transformers' CLIPTextModelWithProjection loads."""
    out = {ours: state[theirs] for ours, theirs in _OPEN_CLIP_TOWER.items()}
    if "text_projection" in state:
        out["text_projection.weight"] = state["text_projection"].T.contiguous()
    layers = {int(k.split(".")[2]) for k in state if k.startswith("transformer.resblocks.")}
    for n in layers:
        oc, hf = f"transformer.resblocks.{n}.", f"text_model.encoder.layers.{n}."
        for kind in ("weight", "bias"):
            for name, chunk in zip("qkv", state[f"{oc}attn.in_proj_{kind}"].chunk(3)):
                out[f"{hf}self_attn.{name}_proj.{kind}"] = chunk
            for ours, theirs in _OPEN_CLIP_LAYER.items():
                out[f"{hf}{ours}.{kind}"] = state[f"{oc}{theirs}.{kind}"]
    return out
