"""RSS growth of one process over a 100-job seed sweep, after warm-up: the default (byte-bounded)
output cache against an unbounded one, side by side, each in a fresh process.

    python benchmarks/sweep_memory.py [--models DIR] [--size 256] [--jobs 100]

Warm-up runs jobs until the bounded cache is full (its steady state), or 300 jobs at most; the
unbounded side runs the same warm-up. Without --models the tiny models are built in a temporary
folder. Both sides use a fresh disk cache. Goal: growth < 50 MB for the default.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS (Linux only)")


def measure(models: str, size: int, jobs: int, unbounded: bool, warmup: int | None) -> dict:
    import torch

    from engine import Session, Settings
    from tests.kolors_graphs import txt2img

    torch.set_num_threads(1)
    scratch = tempfile.mkdtemp()
    session = Session(settings=Settings(models_dir=models, output_dir=scratch + "/out", cache_dir=scratch + "/cache",
                                        device="cpu"), memory_cache_bytes=2**62 if unbounded else None)
    seed = 0

    def job() -> None:
        nonlocal seed
        assert session.execute(txt2img(steps=1, size=size, seed=seed)).status == "ok"
        seed += 1

    started = time.perf_counter()
    if warmup is None:  # until the bounded cache is full
        while seed < 300 and session.cache.bytes < 0.95 * session.cache.max_bytes:
            job()
    else:
        for _ in range(warmup):
            job()
    gc.collect()
    before, warmed = rss_bytes(), seed
    for _ in range(jobs):
        job()
    gc.collect()
    return {"warmup_jobs": warmed, "rss_before_mb": before / 1e6, "rss_growth_mb": (rss_bytes() - before) / 1e6,
            "cache_mb": session.cache.bytes / 1e6, "cache_limit_mb": session.cache.max_bytes / 1e6,
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--child", choices=["bounded", "unbounded"], help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(str(args.models), args.size, args.jobs, args.child == "unbounded", args.warmup)))
        return
    models = args.models
    if models is None:
        from nodes.kolors.tiny import make_tiny_models

        models = make_tiny_models(Path(tempfile.mkdtemp()) / "models")

    def child(kind: str, warmup: int | None) -> dict:
        command = [sys.executable, __file__, "--child", kind, "--models", str(models), "--size", str(args.size),
                   "--jobs", str(args.jobs)] + ([] if warmup is None else ["--warmup", str(warmup)])
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{kind} side failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout)

    bounded = child("bounded", None)
    unbounded = child("unbounded", bounded["warmup_jobs"])
    print(json.dumps({
        "size": args.size, "jobs": args.jobs, "bounded": bounded, "unbounded": unbounded,
        "growth_ratio_bounded_over_unbounded": round(bounded["rss_growth_mb"] / max(unbounded["rss_growth_mb"], 1e-9), 4),
        "goal_bounded_growth_mb": "< 50",
    }, indent=2))


if __name__ == "__main__":
    main()
