"""Applying and removing a Kolors LoRA vs reloading the base UNet from disk.

    python benchmarks/lora_apply.py [--models DIR --lora FILE] [--divisor 4] [--rank 16] [--device cpu]

Without --models it writes, in a temporary folder, a UNet with the real Kolors topology (the same
70 transformer blocks, so the same 560 adapted Linears as a DiffSynth LoRA) at 1/divisor of the
channel widths, and a rank-16 DiffSynth checkpoint for it. Prints medians side by side and the
ratio (read + apply + remove) / reload: removing the LoRA node must not cost a reload.
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
from diffusers import UNet2DConditionModel  # noqa: E402

from nodes.kolors.lora import _read_lora_version as read_file  # noqa: E402
from nodes.kolors.lora import lora_applied  # noqa: E402
from nodes.kolors.models import KolorsModel, LoraSpec  # noqa: E402
from nodes.kolors.tiny import UNET_CONFIG  # noqa: E402
from tests.test_kolors_lora import diffsynth_keys  # noqa: E402


def kolors_shaped_unet(folder: Path, divisor: int) -> None:
    """The real Kolors UNet block structure at 1/divisor width, fp16 variant, random weights."""
    width = [320 // divisor, 640 // divisor, 1280 // divisor]
    text = 4096 // divisor
    config = dict(UNET_CONFIG, sample_size=128, block_out_channels=width, transformer_layers_per_block=[1, 2, 10],
                  attention_head_dim=[5, 10, 20], cross_attention_dim=2048 // divisor, norm_num_groups=16,
                  encoder_hid_dim=text, addition_time_embed_dim=256, projection_class_embeddings_input_dim=text + 6 * 256)
    config.pop("_class_name")
    unet = UNet2DConditionModel(**config).half()
    unet.save_pretrained(folder / "unet", variant="fp16")


def random_diffsynth_lora(unet, path: Path, rank: int) -> int:
    generator = torch.Generator().manual_seed(0)
    adapter = {}
    for name, module in unet.named_modules():
        if ".attentions." in name and name.endswith(("to_q", "to_k", "to_v", "to_out.0")):
            adapter[f"{name}.lora_A.default.weight"] = torch.randn(rank, module.in_features, generator=generator)
            adapter[f"{name}.lora_B.default.weight"] = torch.randn(module.out_features, rank, generator=generator)
    torch.save(diffsynth_keys(adapter), path)
    return len(adapter) // 2


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_seconds(action, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path, help="a folder with diffusers/Kolors/unet (needs --lora)")
    parser.add_argument("--lora", type=Path)
    parser.add_argument("--divisor", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.models:
        folder, lora = args.models / "diffusers" / "Kolors", args.lora
    else:
        folder = Path(tempfile.mkdtemp()) / "Kolors"
        kolors_shaped_unet(folder, args.divisor)
        lora = folder / "lora.ckpt"
    handle = KolorsModel(str(folder), "fp16", args.device)
    unet = handle.load()
    layers = random_diffsynth_lora(unet, lora, args.rank) if not args.models else "?"
    spec = (LoraSpec(str(lora), alpha=2.0),)
    params = sum(p.numel() for p in unet.parameters())

    reload_s = median_seconds(handle.load, args.repeat)
    stat = lora.stat()
    read_s = median_seconds(lambda: read_file.__wrapped__(str(lora), stat.st_size, stat.st_mtime_ns), args.repeat)
    applies = []
    for _ in range(args.repeat):  # apply alone, then remove alone, timed separately
        context = lora_applied(unet, spec)
        start = time.perf_counter()
        context.__enter__()
        sync()
        middle = time.perf_counter()
        context.__exit__(None, None, None)
        sync()
        applies.append((middle - start, time.perf_counter() - middle))
    apply_only = statistics.median(a for a, _ in applies)
    remove_only = statistics.median(r for _, r in applies)
    print(f"UNet {params / 1e6:.0f}M params fp16 on {args.device}; LoRA: {layers} layers, rank {args.rank}")
    print(f"  reload the base UNet from disk  median {reload_s:.3f} s")
    print(f"  read the LoRA file (once; kept) median {read_s:.3f} s")
    print(f"  apply the LoRA (merge)          median {apply_only:.3f} s")
    print(f"  remove it (restore saved)       median {remove_only:.3f} s")
    print(f"  ratio (read + apply + remove) / reload = {(read_s + apply_only + remove_only) / reload_s:.3f}")


if __name__ == "__main__":
    main()
