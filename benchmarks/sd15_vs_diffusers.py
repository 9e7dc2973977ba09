"""SD1.5 txt2img: run-graph's KSampler against diffusers' StableDiffusionPipeline on the same
weights, and the engine's own share of the sampling loop.

    python benchmarks/sd15_vs_diffusers.py [--models DIR] [--size 512] [--steps 20] [--repeat 5]

Both sides run euler with the `normal` schedule's grid (diffusers: EulerDiscreteScheduler with
linspace spacing), cfg 8, the same prompt, size and modules, models already loaded; medians of
interleaved runs. Prints the wall-time ratio (target <= 1.05) and the time outside the UNet calls
as a share of KSampler's loop (target <= 3%).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline  # noqa: E402

from engine import Session, Settings  # noqa: E402
from nodes.sd.clip_text import clip_tokenizer  # noqa: E402
from nodes.sd.loaders import load_checkpoint  # noqa: E402
from nodes.tiny_models import make_tiny_models  # noqa: E402

PROMPT, NEGATIVE = "beautiful scenery nature glass bottle landscape, purple galaxy bottle", "text, watermark"


def graph(size: int, steps: int, seed: int) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "seed": seed, "steps": steps, "cfg": 8.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                                                   "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }


class UNetClock:
    """Time spent inside the UNet's forward, summed."""

    def __init__(self, unet):
        self.seconds, self._start = 0.0, 0.0
        unet.register_forward_pre_hook(self._begin)
        unet.register_forward_hook(self._end)

    def _begin(self, *_):
        self._start = time.perf_counter()

    def _end(self, *_):
        self.seconds += time.perf_counter() - self._start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    models = args.models or make_tiny_models(Path(tempfile.mkdtemp()) / "models")

    session = Session(settings=Settings(models_dir=models, output_dir=Path(tempfile.mkdtemp()), device=args.device),
                      cache=False)
    session.execute(graph(args.size, args.steps, 0))  # loads the models
    # the same handles the loader node makes: the store hands back the modules the run used
    parts = load_checkpoint(SimpleNamespace(settings=session.settings, device=args.device), "tiny_sd15.safetensors")
    unet, vae = session.models.get(parts.MODEL), session.models.get(parts.VAE)
    text_encoder = session.models.get(parts.CLIP.towers[0])
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       timestep_spacing="linspace", steps_offset=1)
    vae.config.scaling_factor = 0.18215
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    clock = UNetClock(unet)

    ours, theirs, shares = [], [], []
    for seed in range(1, args.repeat + 1):
        clock.seconds = 0.0
        start = time.perf_counter()
        result = session.execute(graph(args.size, args.steps, seed))
        ours.append(time.perf_counter() - start)
        loop = result.nodes["3"].seconds
        shares.append((loop - clock.seconds) / loop)
        start = time.perf_counter()
        with torch.inference_mode():
            pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=args.steps, guidance_scale=8.0,
                 height=args.size, width=args.size, generator=torch.Generator().manual_seed(seed), output_type="np")
        theirs.append(time.perf_counter() - start)

    run_graph, diffusers = statistics.median(ours), statistics.median(theirs)
    print(f"SD1.5 txt2img {args.size}x{args.size}, {args.steps} steps, euler/normal, cfg 8, device {args.device}, "
          f"median of {args.repeat}")
    print(f"  run-graph: {run_graph:.3f} s   diffusers StableDiffusionPipeline: {diffusers:.3f} s   "
          f"ratio {run_graph / diffusers:.3f} (target <= 1.05)")
    print(f"  engine time outside the UNet in KSampler's loop: {100 * statistics.median(shares):.2f}% "
          f"(target <= 3%)")


if __name__ == "__main__":
    main()
