"""Full-size Kolors on one GPU: run-graph against diffusers' KolorsPipeline on the same weights.

    python benchmarks/gpu_kolors.py [--models-dir DIR] [--compile] [--out FILE]
    python benchmarks/gpu_kolors.py --tiny          # the same code on the CPU at small sizes (CI)

It builds random-weight models from the real configs (UNet 2.6 B parameters, ChatGLM3-6B, SDXL
VAE), fp16, in the real folder layout, deterministic from --seed, on the meta device and then on
the GPU; a folder built before for the same sizes and seed is reused. Then, on those weights:

- the txt2img workflow at 1024², 25 steps, batch 1 and 4, through run-graph (cold: loads included;
  warm: a new seed) and through KolorsPipeline (eager, the diffusers default: SDPA attention);
  UNet it/s, end-to-end wall time, peak VRAM, and each one's ratio to diffusers;
- the same with the encoder leaving the GPU after encoding (a VRAM budget that holds the UNet and
  VAE only), fp16 and quant8 ChatGLM: the peak VRAM a 16 GB card sees;
- ChatGLM at fp16 / quant8 / quant4: weights on the GPU and encode time;
- the FLOPs of one CFG step (torch.utils.flop_counter) and the TFLOP/s achieved;
- with --compile, torch.compile of the UNet: the first run's compile cost and the warm speed-up.

Everything is printed as one JSON object (and written to --out). Goals: sampler it/s >= diffusers
eager, >= 1.3x with --compile; peak VRAM <= 13 GB with fp16 ChatGLM offloaded, <= 9 GB with quant8.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from engine import Session, Settings  # noqa: E402
from nodes.kolors.constants import KOLORS_SCHEDULER_CONFIG  # noqa: E402
from nodes.kolors.full_size import FULL  # noqa: E402
from nodes.kolors.tiny import TINY, write_kolors_models  # noqa: E402
from tests.kolors_graphs import txt2img  # noqa: E402

PROMPT = "a watercolor painting of a lighthouse at dawn, soft light, high detail"
PEAK_DENSE_FP16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0}  # spec sheets
MARKER = ".random-kolors.json"


class Clock:
    """Wall time, with the GPU's queue drained at both ends."""

    def __init__(self, device: str):
        self.device = device

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def now(self) -> float:
        self.sync()
        return time.perf_counter()


def vram_peak_gb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else None


def reset_peak(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def ensure_models(folder: Path, sizes, seed: int, device: str) -> float:
    """Build the models unless this folder already holds the same sizes and seed; seconds spent."""
    wanted = {"unet": sizes.unet, "text_encoder": sizes.text_encoder, "vae": sizes.vae, "seed": seed}
    marker = folder / MARKER
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return 0.0
    started = time.perf_counter()
    write_kolors_models(folder, sizes, seed, device)
    marker.write_text(json.dumps(wanted))
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return time.perf_counter() - started


def workflow(batch: int, size: int, steps: int, seed: int, chatglm: str = "fp16") -> dict:
    graph = txt2img(PROMPT, steps=steps, size=size, precision="fp16", seed=seed)
    graph["12"]["inputs"]["num_images_per_prompt"] = batch
    graph["13"]["inputs"]["precision"] = chatglm
    return graph


def run_graph(models: Path, device: str, batch: int, size: int, steps: int, *, compile_unet: bool = False,
              vram_budget: int | None = None, chatglm: str = "fp16") -> dict:
    """Cold run (models load) and warm run (new seed) in one session; no output cache."""
    clock, step_times = Clock(device), []

    def on_event(kind: str, data: dict) -> None:
        if kind == "progress" and data["node_id"] == "14":
            step_times.append(clock.now())

    settings = Settings(models_dir=models, output_dir=Path(tempfile.mkdtemp()), device=device, cache_dir=None,
                        compile=compile_unet, vram_budget=vram_budget)
    session = Session(settings=settings, cache=False, on_event=on_event)
    runs = {}
    for label, seed in (("cold", 1), ("warm", 2)):
        reset_peak(device)
        step_times.clear()
        started = clock.now()
        result = session.execute(workflow(batch, size, steps, seed, chatglm))
        wall = clock.now() - started
        runs[label] = {"wall_s": round(wall, 3), "unet_it_s": round(_it_per_s(step_times), 3),
                       "peak_vram_gb": vram_peak_gb(device),
                       "node_s": {n: round(r.seconds, 3) for n, r in result.nodes.items() if r.seconds}}
    session.models.clear()
    return runs


def _it_per_s(stamps: list[float]) -> float:
    # The first step's stamp ends it; the steps after it are timed between stamps.
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")


def diffusers_parts(models: Path, sizes) -> dict:
    from diffusers import EulerDiscreteScheduler

    from tests.kolors_reference import reference_parts

    parts = reference_parts(models, Path(tempfile.mkdtemp()), sizes.vae, torch.float16)
    return {**parts, "scheduler": EulerDiscreteScheduler.from_config(
        {**KOLORS_SCHEDULER_CONFIG, "interpolation_type": "linear"})}


def run_diffusers(models: Path, sizes, device: str, batch: int, size: int, steps: int) -> dict:
    """KolorsPipeline as its model card runs it: fp16, everything on the GPU, eager."""
    from diffusers import KolorsPipeline

    clock = Clock(device)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    reset_peak(device)
    started = clock.now()
    pipe = KolorsPipeline(**diffusers_parts(models, sizes), force_zeros_for_empty_prompt=False)
    pipe = pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    runs = {}
    for label, seed in (("cold", 1), ("warm", 2)):
        stamps: list[float] = []

        def on_step(pipeline, step, timestep, kwargs):
            stamps.append(clock.now())
            return kwargs

        if label == "warm":
            reset_peak(device)
            started = clock.now()
        pipe(prompt=PROMPT, num_images_per_prompt=batch, num_inference_steps=steps, guidance_scale=5.0,
             height=size, width=size, generator=torch.Generator(device).manual_seed(seed), output_type="pil",
             callback_on_step_end=on_step)
        runs[label] = {"wall_s": round(clock.now() - started, 3), "unet_it_s": round(_it_per_s(stamps), 3),
                       "peak_vram_gb": vram_peak_gb(device)}
    del pipe
    return runs


def chatglm_table(models: Path, device: str, batch: int) -> dict:
    """Weights held on the device and warm encode time of prompt + negative, per precision."""
    from nodes.kolors.models import ChatGLM3
    from nodes.kolors.text_encode import encode_texts

    folder = models / "diffusers" / "Kolors" / "text_encoder"
    clock, table = Clock(device), {}
    for precision in ("fp16", "quant8", "quant4"):
        reset_peak(device)
        before = torch.cuda.memory_allocated() if device.startswith("cuda") else 0
        model, tokenizer = ChatGLM3(str(folder), precision, device).load()
        held = (torch.cuda.memory_allocated() - before) / 1e9 if device.startswith("cuda") else None
        encode_texts(model, tokenizer, [PROMPT] * batch, device)  # warm-up
        started = clock.now()
        encode_texts(model, tokenizer, [PROMPT] * batch + [""] * batch, device)
        table[precision] = {"weights_vram_gb": held, "encode_s": round(clock.now() - started, 4),
                            "peak_vram_gb": vram_peak_gb(device)}
        del model, tokenizer
    return table


def cfg_step_flops(models: Path, device: str, batch: int, size: int) -> float:
    """FLOPs of one UNet call on a CFG batch (negative + positive) at `size`."""
    from torch.utils.flop_counter import FlopCounterMode

    from nodes.kolors.models import KolorsModel

    unet = KolorsModel(str(models / "diffusers" / "Kolors"), "fp16", device).load()
    hidden = unet.config.encoder_hid_dim
    dtype = unet.dtype
    n = 2 * batch
    latents = torch.randn(n, 4, size // 8, size // 8, device=device, dtype=dtype)
    added = {"text_embeds": torch.randn(n, hidden, device=device, dtype=dtype),
             "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * n, device=device, dtype=dtype)}
    context = torch.randn(n, 256, hidden, device=device, dtype=dtype)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        unet(latents, torch.tensor(999, device=device), encoder_hidden_states=context, added_cond_kwargs=added)
    del unet
    return float(counter.get_total_flops())


def card_peak(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops for key, tflops in PEAK_DENSE_FP16_TFLOPS.items() if key in name), None)


def ratio(ours: float, theirs: float) -> float:
    return round(ours / theirs, 3) if theirs else float("nan")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=Path("models-full-random"))
    parser.add_argument("--tiny", action="store_true", help="tiny models, small sizes, on the CPU")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile of the UNet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if not args.tiny and device == "cpu":
        parser.error("full size needs a CUDA GPU; use --tiny on the CPU")
    sizes, size, steps, batches = (TINY, 128, 4, (1, 2)) if args.tiny else (FULL, 1024, 25, (1, 4))
    report: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                    "torch": torch.__version__, "size": size, "steps": steps, "tiny": args.tiny}
    report["build_s"] = round(ensure_models(args.models_dir, sizes, args.seed, device), 1)

    unet_bytes = sum(f.stat().st_size for f in (args.models_dir / "diffusers" / "Kolors" / "unet").glob("*.safetensors"))
    vae_bytes = (args.models_dir / "vae" / "sdxl.vae.safetensors").stat().st_size * 2  # bf16/fp32 at run time
    lean_budget = unet_bytes + vae_bytes + 2**28  # the encoder must leave once it has encoded
    for batch in batches:
        ours = run_graph(args.models_dir, device, batch, size, steps)
        theirs = run_diffusers(args.models_dir, sizes, device, batch, size, steps)
        entry = {"run_graph": ours, "diffusers": theirs,
                 "ratio_unet_it_s": ratio(ours["warm"]["unet_it_s"], theirs["warm"]["unet_it_s"]),
                 "ratio_wall_warm": ratio(ours["warm"]["wall_s"], theirs["warm"]["wall_s"]),
                 "ratio_wall_cold": ratio(ours["cold"]["wall_s"], theirs["cold"]["wall_s"])}
        if device == "cuda":
            entry["ratio_peak_vram"] = ratio(ours["warm"]["peak_vram_gb"], theirs["warm"]["peak_vram_gb"])
        report[f"batch_{batch}"] = entry
    if device == "cuda":
        report["encoder_offloaded_peak_vram_gb"] = {
            chatglm: run_graph(args.models_dir, device, 1, size, steps, vram_budget=lean_budget,
                               chatglm=chatglm)["warm"]["peak_vram_gb"] for chatglm in ("fp16", "quant8")}
    report["chatglm"] = chatglm_table(args.models_dir, device, batches[0])
    flops = cfg_step_flops(args.models_dir, device, batches[0], size)
    it_s = report[f"batch_{batches[0]}"]["run_graph"]["warm"]["unet_it_s"]
    report["cfg_step"] = {"gflops_per_step": round(flops / 1e9, 3), "achieved_tflop_s": round(flops * it_s / 1e12, 4),
                          "card_peak_fp16_tflop_s": card_peak(device)}
    if args.compile:
        compiled = run_graph(args.models_dir, device, batches[0], size, steps, compile_unet=True)
        eager = report[f"batch_{batches[0]}"]
        report["compile"] = {
            "first_run_wall_s": compiled["cold"]["wall_s"], "warm": compiled["warm"],
            "compile_cost_s": round(compiled["cold"]["wall_s"] - eager["run_graph"]["cold"]["wall_s"], 2),
            "speedup_unet_it_s_vs_eager": ratio(compiled["warm"]["unet_it_s"], eager["run_graph"]["warm"]["unet_it_s"]),
            "ratio_unet_it_s_vs_diffusers": ratio(compiled["warm"]["unet_it_s"], eager["diffusers"]["warm"]["unet_it_s"]),
        }
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text)
    return report


if __name__ == "__main__":
    main()
