"""Cold vs warm runs of the Kolors txt2img workflow, and what the disk cache costs.

    python benchmarks/cache_runs.py [--models DIR] [--size 256] [--steps 10]

Without --models it builds the tiny models in a temporary folder. Each case runs `run-graph` as
its own process against one cache folder, as a user would, and prints wall times (process start
included) and the engine's own run time, as ratios of the cold run:
  cold                 empty cache
  warm, new process    same workflow again: no node executes
  warm, same process   a second execute() in one Session (memory cache)
  seed change          new process, new seed: the text encoder neither loads nor runs
Then the text-encoder output: write + read through the disk cache vs recomputing it, for the
tiny model and for embeddings of the real size (4 prompts x 256 tokens x 4096, fp32).
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

import torch  # noqa: E402

from engine import Session, Settings  # noqa: E402
from engine.disk_cache import DiskCache  # noqa: E402
from nodes.kolors.models import KolorsEmbeds  # noqa: E402
from nodes.kolors.text_encode import KolorsEmbedsOut  # noqa: E402
from nodes.kolors.tiny import make_tiny_models  # noqa: E402
from tests.kolors_graphs import txt2img  # noqa: E402


def run_process(graph: dict, work: Path, models: Path) -> tuple[float, dict]:
    path = work / f"graph-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(graph))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "engine.cli", str(path), "--models-dir", str(models),
                           "--output-dir", str(work / "out"), "--cache-dir", str(work / "cache"), "--json", "-q"],
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - start, json.loads(proc.stdout)


def round_trip_seconds(disk: DiskCache, output) -> tuple[float, float, int]:
    """(write, read, bytes); the best of three, so the first call's imports do not count."""
    writes, reads = [], []
    for attempt in range(3):
        signature = f"bench-{attempt}-{time.monotonic_ns()}"
        start = time.perf_counter()
        written = disk.put(signature, output)
        middle = time.perf_counter()
        assert disk.get(signature) is not None
        writes.append(middle - start)
        reads.append(time.perf_counter() - middle)
    return min(writes), min(reads), written


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    models = args.models or make_tiny_models(work / "models")
    graph = txt2img("a cat|a dog", steps=args.steps, size=args.size, precision="fp16")
    reseeded = txt2img("a cat|a dog", steps=args.steps, size=args.size, precision="fp16", seed=7)

    cold_wall, cold = run_process(graph, work, models)
    warm_wall, warm = run_process(graph, work, models)
    seed_wall, seed = run_process(reseeded, work, models)
    session = Session(settings=Settings(models_dir=models, output_dir=work / "same", cache_dir=work / "cache2"))
    session.execute(graph)
    same = session.execute(graph).to_report()

    def executed(report):
        return ",".join(n for n, r in report["nodes"].items() if r["status"] == "executed") or "none"

    print(f"txt2img {args.size}px, {args.steps} steps, batch 2 (wall = whole process; run = engine only):")
    print(f"  cold                 wall {cold_wall:6.2f} s  run {cold['seconds']:7.3f} s  executed {executed(cold)}")
    for name, wall, report in (("warm, new process", warm_wall, warm), ("warm, same process", None, same),
                               ("seed change", seed_wall, seed)):
        walls = f"wall {wall:6.2f} s (x{wall / cold_wall:.3f})" if wall else " " * 23
        print(f"  {name:20s} {walls}  run {report['seconds']:7.3f} s (x{report['seconds'] / cold['seconds']:.4f})"
              f"  executed {executed(report)}")

    disk = DiskCache(work / "bench-cache", 2**34, lambda: "cpu")
    encode_s = cold["nodes"]["12"]["seconds"] + cold["nodes"]["13"]["seconds"]
    tiny_embeds = Session(settings=Settings(models_dir=models, output_dir=work / "o", cache_dir=None)).execute(
        graph).outputs["12"]
    write_s, read_s, size = round_trip_seconds(disk, tiny_embeds)
    print("text-encoder output through the disk cache vs recomputing it (cold: load + encode):")
    print(f"  tiny     {size / 1e6:8.3f} MB  write {write_s * 1e3:7.2f} ms  read {read_s * 1e3:7.2f} ms  "
          f"recompute {encode_s * 1e3:8.1f} ms  ratio (write+read)/recompute {(write_s + read_s) / encode_s:.3f}")
    full = KolorsEmbedsOut(KolorsEmbeds(*(torch.randn(4, 256, 4096) for _ in range(2)),
                                        *(torch.randn(4, 4096) for _ in range(2))))
    write_s, read_s, size = round_trip_seconds(disk, full)
    print(f"  real-size {size / 1e6:7.1f} MB  write {write_s * 1e3:7.2f} ms  read {read_s * 1e3:7.2f} ms  "
          f"(ChatGLM3-6B fp16 must load ~12.5 GB before it can encode)")


if __name__ == "__main__":
    main()
