"""`make-tiny-models DIR`: random-weight Kolors models in exactly the real on-disk layout.

The same builder writes the full-size set for GPU benchmarks (`full_size.py`): every part is
built on the meta device and materialised, already fp16, on the device that draws its weights.

    DIR/diffusers/Kolors/model_index.json
    DIR/diffusers/Kolors/scheduler/scheduler_config.json
    DIR/diffusers/Kolors/unet/{config.json, diffusion_pytorch_model.fp16.safetensors}
    DIR/diffusers/Kolors/text_encoder/{config.json, pytorch_model-0000k-of-00002.bin,
                                       pytorch_model.bin.index.json, tokenizer.model, tokenizer_config.json}
    DIR/vae/sdxl.vae.safetensors            (single file, LDM keys, like the sdxl-vae-fp16-fix file)
    DIR/loras/                               (empty; LoRA files go here)

The architectures are the real classes (diffusers UNet2DConditionModel and AutoencoderKL, the
ChatGLM3 model diffusers ships) at small sizes, keeping the Kolors specifics: text_proj encoder
projection, text_time addition embedding with 6 time ids, 1100-step scheduler, and the UNet block
topology (three levels, two layers per block, attention where Kolors has it). Deterministic from
the seed.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..core.ldm_keys import diffusers_vae_to_ldm
from ..core.random_weights import fan_in_init_, materialized
from .constants import KOLORS_SCHEDULER_CONFIG, VAE_SCALING_FACTOR

TEXT_HIDDEN = 32
UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel", "sample_size": 8, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [32, 64, 64], "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 2], "attention_head_dim": [2, 4, 4],
    "cross_attention_dim": 64, "use_linear_projection": True, "norm_num_groups": 32,
    "encoder_hid_dim": TEXT_HIDDEN, "encoder_hid_dim_type": "text_proj",
    "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": TEXT_HIDDEN + 6 * 8,
}
TEXT_ENCODER_CONFIG = {
    "architectures": ["ChatGLMModel"], "model_type": "chatglm", "num_layers": 2,
    "padded_vocab_size": 256, "hidden_size": TEXT_HIDDEN, "ffn_hidden_size": 64,
    "kv_channels": 8, "num_attention_heads": 4, "seq_length": 256, "hidden_dropout": 0.0,
    "attention_dropout": 0.0, "layernorm_epsilon": 1e-5, "rmsnorm": True,
    "apply_residual_connection_post_layernorm": False, "post_layer_norm": True,
    "add_bias_linear": False, "add_qkv_bias": True, "bias_dropout_fusion": True,
    "multi_query_attention": True, "multi_query_group_num": 2, "apply_query_key_layer_scaling": True,
    "attention_softmax_in_fp32": True, "fp32_residual_connection": False, "quantization_bit": 0,
    "original_rope": True, "torch_dtype": "float16",
}
VAE_CONFIG = {
    "_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "norm_num_groups": 32,
    "sample_size": 64, "scaling_factor": VAE_SCALING_FACTOR, "force_upcast": True,
}
TOKENIZER_CONFIG = {"tokenizer_class": "ChatGLMTokenizer", "remove_space": False,
                    "do_lower_case": False, "padding_side": "left"}
# Text the tiny SentencePiece model learns its pieces from: the shared workflows' prompts and more.
_CORPUS = """cinematic photograph of an astronaut riding a horse in space
illustration of a cat wearing a top hat and a scarf
photograph of a goldfish in a bowl
anime screencap of a red haired girl
二次元，长发，少女，白色背景
a watercolor painting of a lighthouse at dawn, soft light, high detail
portrait of an old sailor, dramatic lighting, oil on canvas
a bowl of ramen on a wooden table, steam, photorealistic
"""


@dataclass(frozen=True)
class ModelSizes:
    """Configs of the three parts, and how to draw the UNet's weights: N(0, unet_std) for every
    parameter (the tiny UNet needs that to give outputs that are not ~0 everywhere), or, when
    None, N(0, 1/fan_in) for matrices with norms 1 and biases 0 (full size: stays finite in fp16)."""

    unet: dict
    text_encoder: dict
    vae: dict
    unet_std: float | None
    text_encoder_shards: int


TINY = ModelSizes(UNET_CONFIG, TEXT_ENCODER_CONFIG, VAE_CONFIG, unet_std=0.05, text_encoder_shards=2)


def _text_encoder_init_(model, generator) -> None:
    """Every parameter from `generator`: ChatGLM leaves its weights uninitialised (RMSNorm uses
    torch.empty). Built on the meta device, its RoPE buffer is recomputed here too."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.dim() == 1:
                param.fill_(1.0)  # norms
            else:
                param.copy_(torch.randn(param.shape, generator=generator, device=param.device) * 0.02)
        rope = model.rotary_pos_emb
        dim = rope.dim
        exponent = torch.arange(0, dim, 2, device=rope.inv_freq.device, dtype=torch.float32) / dim
        rope.inv_freq.copy_(1.0 / (10000 ** exponent))


def _unet_init_(unet, generator, std: float | None) -> None:
    import torch

    if std is None:
        return fan_in_init_(unet, generator)
    with torch.no_grad():
        for param in unet.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, device=param.device) * std)


def _build_tokenizer(folder: Path) -> None:
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text(_CORPUS * 4, encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(Path(tmp) / "tok"), vocab_size=200, model_type="bpe",
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0,
            normalization_rule_name="identity", minloglevel=2, num_threads=1)
        (folder / "tokenizer.model").write_bytes((Path(tmp) / "tok.model").read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2))


def _write_text_encoder(folder: Path, config: dict, shards: int, generator, device: str) -> None:
    import torch
    from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig, ChatGLMModel

    folder.mkdir(parents=True, exist_ok=True)
    model = materialized(lambda: ChatGLMModel(ChatGLMConfig(**config)), device)
    _text_encoder_init_(model, generator)
    # Real chatglm3 checkpoints are sharded .bin files whose keys carry a "transformer." prefix.
    keys = sorted(model.state_dict())
    per_shard = -(-len(keys) // shards)
    weight_map, total = {}, 0
    for index in range(shards):
        name = f"pytorch_model-{index + 1:05d}-of-{shards:05d}.bin"
        shard = {f"transformer.{k}": model.state_dict()[k].to("cpu", torch.float16).contiguous()
                 for k in keys[index * per_shard:(index + 1) * per_shard]}
        torch.save(shard, folder / name)
        weight_map.update({k: name for k in shard})
        total += sum(t.numel() * t.element_size() for t in shard.values())
    (folder / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    _build_tokenizer(folder)


def _write_unet(root: Path, config: dict, std: float | None, generator, device: str) -> None:
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in config.items() if not k.startswith("_")}
    unet = materialized(lambda: UNet2DConditionModel(**config), device)
    _unet_init_(unet, generator, std)
    unet.to("cpu").save_pretrained(root / "unet", variant="fp16")  # the real repo's variant file is fp16


def _write_vae(path: Path, config: dict, generator, device: str) -> None:
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    config = {k: v for k, v in config.items() if not k.startswith("_")}
    vae = materialized(lambda: AutoencoderKL(**config), device)
    fan_in_init_(vae, generator)
    path.parent.mkdir(parents=True, exist_ok=True)
    # fp16 on disk, like the sdxl-vae-fp16-fix file the Kolors workflows use.
    state = {k: v.to("cpu", torch.float16) for k, v in diffusers_vae_to_ldm(vae.state_dict()).items()}
    save_file(state, str(path))


def write_kolors_models(root: Path, sizes: ModelSizes, seed: int = 0, device: str = "cpu") -> Path:
    """Random-weight Kolors models of `sizes` in the real layout under `root`, drawn on `device`
    from `seed` (the same seed gives the same files on the same kind of device)."""
    import torch
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # fp16 casts of the tiny UNet warn about nothing real
    root = Path(root)
    kolors = root / "diffusers" / "Kolors"
    generator = torch.Generator(device).manual_seed(seed)
    _write_unet(kolors, sizes.unet, sizes.unet_std, generator, device)
    _write_text_encoder(kolors / "text_encoder", sizes.text_encoder, sizes.text_encoder_shards, generator, device)
    (kolors / "scheduler").mkdir(parents=True, exist_ok=True)
    (kolors / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "EulerDiscreteScheduler", **KOLORS_SCHEDULER_CONFIG}, indent=2))
    (kolors / "model_index.json").write_text(json.dumps({
        "_class_name": "KolorsPipeline", "force_zeros_for_empty_prompt": False,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["kolors", "ChatGLMModel"],
        "tokenizer": ["kolors", "ChatGLMTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]}, indent=2))
    _write_vae(root / "vae" / "sdxl.vae.safetensors", sizes.vae, generator, device)
    (root / "loras").mkdir(exist_ok=True)
    return root


def write_chatglm_checkpoints(root: Path) -> None:
    """The Kolors text encoder again as single files in `<root>/LLM/checkpoints`, as
    Kijai/ChatGLM3-safetensors ships ChatGLM3: fp16 (ChatGLMModel's keys, no "transformer."
    prefix), and quantized to 8 and 4 bits in ChatGLM's stored form, read by LoadChatGLM3."""
    import torch
    from safetensors.torch import save_file

    from .chatglm_file import load_chatglm_file
    from .quant import quantize_chatglm_

    folder = Path(root) / "LLM" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for shard in sorted((Path(root) / "diffusers" / "Kolors" / "text_encoder").glob("pytorch_model-*.bin")):
        state.update(torch.load(shard, map_location="cpu", weights_only=True))
    fp16 = folder / "chatglm3-fp16.safetensors"
    save_file({k.removeprefix("transformer."): v for k, v in state.items()}, str(fp16))
    for bits in (8, 4):
        model = quantize_chatglm_(load_chatglm_file(str(fp16), torch.float16, "cpu"), bits)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(folder / f"chatglm3-{bits}bit.safetensors"))


def make_tiny_models(root: Path, seed: int = 0) -> Path:
    """The tiny set the tests and the README's first command use, built on the CPU."""
    write_kolors_models(root, TINY, seed, "cpu")
    write_chatglm_checkpoints(root)
    return Path(root)
