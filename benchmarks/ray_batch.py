"""A seed sweep on the tiny models: the local batch against Ray with 1 and 2 workers.

    python benchmarks/ray_batch.py [--models DIR] [--size 256] [--steps 10] [--jobs 16]

Every side runs the same sweep with a fresh disk cache, on one CPU thread per worker (the local
batch too), on a Ray cluster started here on loopback. Printed: jobs per second, counted from the
first result to the last (so worker start-up and model loads are not counted per job), each
side's whole wall time, and the time per job that Ray adds over the local batch with one
worker. Goal: that overhead < 5% of a job's time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# Before Ray is imported: keep the cluster on 127.0.0.1, and without token auth (loopback only).
os.environ.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"})
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine import Session, Settings  # noqa: E402
from engine.batch.cluster import ClusterOptions  # noqa: E402
from nodes.kolors.tiny import make_tiny_models  # noqa: E402
from tests.kolors_graphs import txt2img  # noqa: E402


def sweep(models: Path, args: argparse.Namespace, cluster: ClusterOptions | None) -> dict:
    work = Path(tempfile.mkdtemp())
    session = Session(settings=Settings(models_dir=models, output_dir=work / "out", cache_dir=work / "cache",
                                        device="cpu"))
    graph = txt2img("a watercolor lighthouse", steps=args.steps, size=args.size)
    started, stamps = time.perf_counter(), []
    for outcome in session.execute_many([graph], sweep={"14.seed": f"1..{args.jobs}"}, manifest=True,
                                        cluster=cluster):
        assert outcome.status == "ok", outcome.result.errors
        stamps.append(time.perf_counter())
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return {"jobs_per_s": round(steady, 3), "seconds_per_job": round(1 / steady, 4),
            "wall_s": round(stamps[-1] - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=16)
    args = parser.parse_args()
    models = args.models or make_tiny_models(Path(tempfile.mkdtemp()) / "models")
    torch.set_num_threads(1)  # what each Ray worker gets
    local = sweep(models, args, None)
    ray_1 = sweep(models, args, ClusterOptions(address="local", workers=1))
    ray_2 = sweep(models, args, ClusterOptions(address="local", workers=2))
    overhead = ray_1["seconds_per_job"] - local["seconds_per_job"]
    print(json.dumps({
        "size": args.size, "steps": args.steps, "jobs": args.jobs,
        "local": local, "ray_1_worker": ray_1, "ray_2_workers": ray_2,
        "ray_overhead_s_per_job": round(overhead, 4),
        "ray_overhead_share_of_job": round(overhead / local["seconds_per_job"], 4),
        "speedup_2_workers_vs_local": round(ray_2["jobs_per_s"] / local["jobs_per_s"], 3),
        "goal_overhead_share": "< 0.05",
    }, indent=2))


if __name__ == "__main__":
    main()
