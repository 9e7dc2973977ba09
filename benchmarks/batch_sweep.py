"""A 16-job seed sweep in one process vs 16 separate `run-graph` processes, and the share of a
warm batch's wall time spent outside node execution.

    python benchmarks/batch_sweep.py [--models DIR] [--size 256] [--steps 10] [--jobs 16]

Without --models it builds the tiny models in a temporary folder. Both sides share one warm disk
cache (the prompt's embeddings are already there), so the comparison is what a batch saves:
process start, imports and model loads. Every side samples seeds no other side used, so no
sampled latent or decoded image comes from the cache. Target: the overhead share <= 5%.
"""
from __future__ import annotations

import argparse
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

from engine import Session, Settings  # noqa: E402
from nodes.kolors.tiny import make_tiny_models  # noqa: E402
from tests.kolors_graphs import txt2img  # noqa: E402


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "engine.cli", *args, "-q"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=16)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    models = args.models or make_tiny_models(work / "models")
    workflow = work / "wf.json"
    workflow.write_text(json.dumps(txt2img("a lighthouse at dawn", steps=args.steps, size=args.size,
                                           precision="fp16")))
    common = ["--models-dir", str(models), "--cache-dir", str(work / "cache")]
    cli(str(workflow), *common, "--output-dir", str(work / "warmup"), "--set", "14.seed=0")

    start = time.perf_counter()
    for seed in range(1, args.jobs + 1):
        cli(str(workflow), *common, "--output-dir", str(work / "separate"), "--set", f"14.seed={seed}")
    separate = time.perf_counter() - start
    start = time.perf_counter()
    # New seeds: nothing of the sampler or the decoder is in the cache for them either.
    cli(str(workflow), *common, "--output-dir", str(work / "batch"), "--sweep", f"14.seed=1001..{1000 + args.jobs}")
    batch = time.perf_counter() - start
    print(f"{args.jobs}-job seed sweep, txt2img {args.size}px, {args.steps} steps (warm disk cache):")
    print(f"  {args.jobs} separate processes  {separate:7.2f} s  {args.jobs / separate:6.2f} images/s")
    print(f"  one batch process      {batch:7.2f} s  {args.jobs / batch:6.2f} images/s")
    print(f"  ratio batch/separate images per second = {separate / batch:.2f}")

    session = Session(settings=Settings(models_dir=models, output_dir=work / "inproc", cache_dir=work / "cache"))
    session.execute(workflow, overrides={"14.seed": 0})  # models loaded, embeddings cached
    start = time.perf_counter()
    outcomes = list(session.execute_many(workflow, sweep={"14.seed": f"101..{100 + args.jobs}"}, manifest=True))
    wall = time.perf_counter() - start
    in_nodes = sum(r.seconds for o in outcomes for r in o.result.nodes.values())
    print(f"in one warm session: {wall:.3f} s for {len(outcomes)} jobs, {in_nodes:.3f} s inside nodes; "
          f"outside node execution {100 * (1 - in_nodes / wall):.1f}% (target <= 5%)")


if __name__ == "__main__":
    main()
