"""`run-graph serve` under load: 10 concurrent clients POST 50 prompts (tiny SD1.5, 64², one
step) to a server process while its worker runs them; prints POST /prompt latency (target p99 < 50 ms) and checks
that every prompt has exactly one history entry.

    python benchmarks/server_load.py [--models DIR] [--clients 10] [--prompts 5]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodes.tiny_models import make_tiny_models  # noqa: E402
from tests.server_load import run_load, serve_process  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    models = args.models or make_tiny_models(work / "models")
    # The server in a process of its own, as clients meet it: they do not share its GIL
    server, url = serve_process(models, work / "out")
    try:
        result = run_load(url, clients=args.clients, prompts=args.prompts)
    finally:
        server.kill()
        server.wait(30)
    done = sum(1 for i in result["ids"] if i in result["history"])
    print(f"{args.clients} clients x {args.prompts} prompts: {done}/{len(result['ids'])} in the history")
    print(f"POST /prompt while jobs run: p50 {1000 * result['p50']:.1f} ms, p99 {1000 * result['p99']:.1f} ms "
          f"(target p99 < 50 ms)")


if __name__ == "__main__":
    main()
