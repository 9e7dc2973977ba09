"""Concurrent clients against a running `run-graph serve`: used by the load test and by
benchmarks/server_load.py, which prints the latency figures."""
from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .sd_graphs import sd15_txt2img


async def _client(url: str, index: int, prompts: int, latencies: list, ids: list) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for k in range(prompts):
            body = {"prompt": sd15_txt2img(seed=1000 * index + k, steps=1, prefix=f"load_{index}"),
                    "client_id": f"load-{index}"}
            start = time.perf_counter()
            async with http.post(f"{url}/prompt", json=body) as answer:
                assert answer.status == 200, await answer.text()
                ids.append((await answer.json())["prompt_id"])
            latencies.append(time.perf_counter() - start)
            await asyncio.sleep(0.01 * (index % 3))  # clients out of step with each other


async def _wait_for_history(url: str, ids: list, deadline: float) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"{url}/history") as answer:
                history = await answer.json()
            if all(i in history for i in ids):
                return history
            await asyncio.sleep(0.25)
    raise TimeoutError(f"{sum(i not in history for i in ids)} of {len(ids)} prompts unfinished")


def run_load(url: str, clients: int = 10, prompts: int = 5, timeout: float = 300.0) -> dict:
    """`clients` concurrent clients each POST `prompts` prompts (bounded in count and time), then
    wait for every one in the history. Returns the POST latencies and the history."""
    latencies: list[float] = []
    ids: list[str] = []

    async def main():
        await asyncio.gather(*(_client(url, i, prompts, latencies, ids) for i in range(clients)))
        return await _wait_for_history(url, ids, time.monotonic() + timeout)

    history = asyncio.run(main())
    ordered = sorted(latencies)
    return {"ids": ids, "history": history, "latencies": latencies,
            "p50": statistics.median(ordered), "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}




def serve_process(models: Path, out: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """`run-graph serve` on a free loopback port in a child process, once it answers."""
    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main(sys.argv[1:]))",
               "serve", "--port", str(port), "--models-dir", str(models), "--output-dir", str(out),
               "--input-dir", str(out.parent / "in"), "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/queue", timeout=5):
                return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not come up: " + process.stderr.read().decode()[-2000:])
