"""The real Kolors sizes, for random-weight models that load, run and cost what the real ones do:
the UNet (2,579,458,820 parameters), ChatGLM3-6B and the SDXL VAE. The numbers are those of the
Kwai-Kolors/Kolors configs and the wrapper's bundled text-encoder config."""
from __future__ import annotations

import json
from pathlib import Path

from .tiny import TEXT_ENCODER_CONFIG, UNET_CONFIG, ModelSizes

KOLORS_UNET_CONFIG = {
    **UNET_CONFIG, "sample_size": 128, "block_out_channels": [320, 640, 1280], "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10], "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048, "encoder_hid_dim": 4096, "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 4096 + 6 * 256,
}
CHATGLM3_6B_CONFIG = {
    **TEXT_ENCODER_CONFIG, "num_layers": 28, "hidden_size": 4096, "ffn_hidden_size": 13696,
    "kv_channels": 128, "num_attention_heads": 32, "multi_query_group_num": 2,
    "padded_vocab_size": 65024, "seq_length": 32768,
}
SDXL_VAE_CONFIG = json.loads((Path(__file__).parent.parent / "core" / "configs" / "sdxl_vae.json").read_text())
UNET_PARAMETERS = 2_579_458_820

FULL = ModelSizes(KOLORS_UNET_CONFIG, CHATGLM3_6B_CONFIG, SDXL_VAE_CONFIG, unet_std=None, text_encoder_shards=7)
