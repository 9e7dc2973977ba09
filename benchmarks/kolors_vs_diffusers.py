"""Engine vs diffusers KolorsPipeline on the same models and settings, and text-encoder memory.

    python benchmarks/kolors_vs_diffusers.py [--models DIR] [--size 256] [--steps 10] [--device cpu]

Without --models it builds the tiny models in a temporary folder. Prints wall times side by side
(target ratio engine/diffusers <= 1.05) and the text encoder's weight bytes at fp16 / quant8 /
quant4 (ratios to fp16), measured in one process.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
from diffusers import KolorsPipeline, UNet2DConditionModel  # noqa: E402
from diffusers.pipelines.kolors import ChatGLMModel, ChatGLMTokenizer  # noqa: E402

from engine import Session, Settings  # noqa: E402
from nodes.core.vae import VAE  # noqa: E402
from nodes.kolors.models import compute_dtype  # noqa: E402
from nodes.kolors.quant import quantize_chatglm_  # noqa: E402
from nodes.kolors.sampler import make_scheduler  # noqa: E402
from nodes.kolors.tiny import make_tiny_models  # noqa: E402
from tests.kolors_graphs import txt2img  # noqa: E402

PROMPT = "a cat|a dog"


def tensor_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    models = args.models or make_tiny_models(Path(tempfile.mkdtemp()) / "models")
    kolors = models / "diffusers" / "Kolors"
    device, precision = args.device, "fp16"
    dtype = compute_dtype(precision, device)

    # Both sides reuse loaded models: this measures the per-image path, not disk loading.
    session = Session(settings=Settings(models_dir=models, output_dir=Path(tempfile.mkdtemp()), device=device),
                      cache=False)
    graph = txt2img(PROMPT, steps=args.steps, size=args.size, precision=precision)
    session.execute(graph)  # warm-up: loads models

    te = ChatGLMModel.from_pretrained(kolors / "text_encoder", dtype=dtype).to(device)
    pipe = KolorsPipeline(
        vae=VAE(str(models / "vae" / "sdxl.vae.safetensors"), device).load(), text_encoder=te,
        tokenizer=ChatGLMTokenizer.from_pretrained(kolors / "text_encoder"),
        unet=UNet2DConditionModel.from_pretrained(kolors, subfolder="unet", variant="fp16", dtype=dtype).to(device),
        scheduler=make_scheduler("EulerDiscreteScheduler"), force_zeros_for_empty_prompt=False)
    pipe.set_progress_bar_config(disable=True)

    def run_pipeline():
        pipe(prompt=PROMPT.split("|"), negative_prompt=["", ""], height=args.size, width=args.size,
             num_inference_steps=args.steps, guidance_scale=5.0,
             generator=torch.Generator("cpu").manual_seed(42), output_type="pt")

    run_pipeline()
    engine_s, diffusers_s = [], []
    for _ in range(args.repeat):  # interleaved, so both see the same machine state
        start = time.perf_counter()
        session.execute(graph)
        engine_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        run_pipeline()
        diffusers_s.append(time.perf_counter() - start)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    e, d = statistics.median(engine_s), statistics.median(diffusers_s)
    print(f"txt2img {args.size}px, {args.steps} Euler steps, batch 2, CFG 5, {device}, {dtype}:")
    print(f"  engine (encode + sample + decode + PNG write) median {e:.3f} s")
    print(f"  diffusers KolorsPipeline (output_type='pt')    median {d:.3f} s")
    print(f"  ratio engine/diffusers = {e / d:.3f} (target <= 1.05)")

    print("text encoder weights held in memory (quantized Linears: int8, or int4 packed in pairs):")
    tiny = {}
    for name, bits in (("fp16", None), ("quant8", 8), ("quant4", 4)):
        model = ChatGLMModel.from_pretrained(kolors / "text_encoder", dtype=torch.float16)
        tiny[name] = tensor_bytes(quantize_chatglm_(model, bits) if bits else model)
    full = full_size_bytes()
    for name in tiny:
        print(f"  {name:7s} tiny {tiny[name] / 1e6:7.3f} MB (x{tiny[name] / tiny['fp16']:.3f})   "
              f"ChatGLM3-6B {full[name] / 1e9:6.2f} GB (x{full[name] / full['fp16']:.3f})")


def full_size_bytes() -> dict[str, int]:
    """Bytes of the real 28-layer ChatGLM3-6B at each precision, from its config on the meta device."""
    from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig

    from nodes.kolors.quant import BLOCK_LINEARS

    config = ChatGLMConfig(num_layers=28, padded_vocab_size=65024, hidden_size=4096, ffn_hidden_size=13696,
                           kv_channels=128, num_attention_heads=32, seq_length=32768, add_qkv_bias=True,
                           multi_query_attention=True, multi_query_group_num=2, original_rope=True,
                           rmsnorm=True, post_layer_norm=True)
    with torch.device("meta"):
        model = ChatGLMModel(config)
    quantized = {f"{path}.weight" for path in BLOCK_LINEARS}
    out = {}
    for name, bits in (("fp16", 16), ("quant8", 8), ("quant4", 4)):
        total = 0
        for key, tensor in model.state_dict().items():
            if bits < 16 and key.startswith("encoder.layers.") and key.split(".", 3)[3] in quantized:
                total += tensor.numel() * bits // 8 + tensor.shape[0] * 2  # codes + fp16 row scales
            else:
                total += tensor.numel() * 2
        out[name] = total
    return out

if __name__ == "__main__":
    main()
