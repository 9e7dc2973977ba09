"""Batches on a local Ray cluster (two CPU workers, one thread each, loopback only): the same
pixels and manifest as a local batch, a worker killed mid-batch, a driver killed and rerun."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
from ray._private import ray_constants  # noqa: E402

# conftest sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray is imported; otherwise Ray would look
# for its services on the machine's own address and hang there.
assert not ray_constants.ENABLE_RAY_CLUSTER, "Ray was imported before the loopback setting"

from engine import Session, Settings  # noqa: E402
from engine.batch.cluster import LOOPBACK_ENV, ClusterOptions, assign  # noqa: E402

from .kolors_graphs import txt2img  # noqa: E402

SEEDS = "1..6"


@pytest.fixture(scope="module")
def ray_address():
    env = {**os.environ, **LOOPBACK_ENV}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run(["ray", "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                    "--include-dashboard=false", "--disable-usage-stats"], env=env, check=True, capture_output=True)
    yield f"127.0.0.1:{port}"
    subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True)


@pytest.fixture
def workflows(tmp_path):
    """Two workflows whose loaders differ (UNet precision fp32 / fp16), 6 seeds each: 12 jobs."""
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(txt2img("a red fox", steps=2)))
    (folder / "b.json").write_text(json.dumps(txt2img("a house", steps=2, precision="fp16")))
    return folder


def _settings(models: Path, tmp_path: Path, name: str) -> Settings:
    return Settings(models_dir=models, output_dir=tmp_path / name, cache_dir=tmp_path / f"{name}-cache", device="cpu")


def _by_job(folder: Path) -> dict[str, dict]:
    lines = [json.loads(x) for x in (folder / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == len({x["job"] for x in lines})  # nothing twice
    return {x["job"]: x for x in lines}


def _comparable(line: dict) -> dict:
    """A manifest line without what depends on timing, scheduling or the folder."""
    files = [(f["bytes"], f["sha256"]) for f in line["files"]]
    return {k: v for k, v in line.items() if k not in ("seconds", "finished", "worker", "files", "nodes")} | {"files": files}


def test_jobs_go_to_workers_by_model_group_split_past_a_fair_share():
    from engine.batch.jobs import Job

    jobs = [(i, Job(i, "x", None, [], group=(g,))) for i, g in enumerate("aaaaaabbcd")]
    queues = assign(jobs, 2)
    # fair share 5: the six a's split 5 + 1; the small groups fill the lighter queue, in order
    assert [[j.group[0] for _, j in q] for q in queues] == [["a"] * 5, ["a", "b", "b", "c", "d"]]


def test_a_ray_batch_gives_the_local_batchs_pixels_and_manifest(tiny_models, workflows, tmp_path, ray_address):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker runs: bit-identical images need the same thread count
    try:
        local = list(Session(settings=_settings(tiny_models, tmp_path, "local")).execute_many(
            [workflows], sweep={"14.seed": SEEDS}, manifest=True))
    finally:
        torch.set_num_threads(threads)
    events = []
    on_ray = Session(settings=_settings(tiny_models, tmp_path, "ray"), on_event=lambda k, d: events.append((k, d)))
    remote = list(on_ray.execute_many([workflows], sweep={"14.seed": SEEDS}, manifest=True,
                                      cluster=ClusterOptions(address=ray_address)))
    assert len(local) == len(remote) == 12 and {r.status for r in local + remote} == {"ok"}
    expected, got = _by_job(tmp_path / "local"), _by_job(tmp_path / "ray")
    assert expected.keys() == got.keys()
    assert {j: _comparable(x) for j, x in got.items()} == {j: _comparable(x) for j, x in expected.items()}
    workers = {x["worker"].split()[0] for x in got.values()}
    assert workers == {"w0", "w1"} and all(re.search(r"\(pid \d+ on ", x["worker"]) for x in got.values())
    assert len(list((tmp_path / "ray" / "previews").glob("*.png"))) == 12
    assert {d.get("worker", "").split()[0] for k, d in events if k == "job_end"} == {"w0", "w1"}
    # each model group stayed on one worker: every worker loaded each model it used once
    assert len({(x["worker"].split()[0], x["source"]) for x in got.values()}) == 2


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(tiny_models, workflows, tmp_path,
                                                                        ray_address):
    killed = []

    def kill_one_worker(kind, data):
        if kind == "job_end" and not killed and data.get("worker"):
            pid = int(re.search(r"pid (\d+)", data["worker"]).group(1))
            os.kill(pid, signal.SIGKILL)
            killed.append(data["worker"])

    session = Session(settings=_settings(tiny_models, tmp_path, "out"), on_event=kill_one_worker)
    outcomes = list(session.execute_many([workflows], sweep={"14.seed": SEEDS}, manifest=True,
                                         cluster=ClusterOptions(address=ray_address, in_flight_per_worker=2)))
    assert killed and [o.status for o in outcomes] == ["ok"] * 12
    lines = _by_job(tmp_path / "out")
    assert len(lines) == 12 and all(x["status"] == "ok" for x in lines.values())
    assert any(x["worker"].startswith("w2 ") for x in lines.values())  # a replacement took the dead one's jobs
    output = tmp_path / "out"
    assert len(list((output / "previews").glob("*.png"))) == 12 and not list(output.rglob(".tmp-*"))


def _cli(models: Path, workflows: Path, out: Path, address: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", str(workflows), "--models-dir", str(models), "--output-dir", str(out),
            "--cache-dir", str(out.parent / "cli-cache"), "--device", "cpu", "--sweep", f"14.seed={SEEDS}",
            "--ray", address, "--json", "-q"]


def test_a_driver_killed_mid_batch_resumes_with_only_the_unfinished_jobs(tiny_models, workflows, tmp_path,
                                                                         ray_address):
    out = tmp_path / "out"
    env = {**os.environ, **LOOPBACK_ENV}
    driver = subprocess.Popen(_cli(tiny_models, workflows, out, ray_address), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not manifest.exists() or len(manifest.read_text().splitlines()) < 4):
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = _by_job(out)
    assert 4 <= len(before) < 12
    rerun = subprocess.run(_cli(tiny_models, workflows, out, ray_address), env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    reports = [json.loads(x) for x in rerun.stdout.splitlines()]
    assert sorted(r["job"] for r in reports if r["status"] == "done") == sorted(before)
    assert len([r for r in reports if r["status"] == "ok"]) == 12 - len(before)
    after = _by_job(out)
    assert len(after) == 12 and all(after[job] == line for job, line in before.items())
    assert not list(out.rglob(".tmp-*"))


def test_an_unreachable_cluster_is_one_line_and_exit_2(workflows, tmp_path, monkeypatch, caplog):
    import ray

    from engine.cli import main

    def refuse(**kwargs):
        raise ConnectionError(f"Could not find any running Ray instance at {kwargs.get('address')}")

    monkeypatch.setattr(ray, "init", refuse)
    code = main([str(workflows), "--output-dir", str(tmp_path / "out"), "--ray", "10.9.9.9:6379", "-q"])
    assert code == 2 and "cannot reach a Ray cluster at '10.9.9.9:6379'" in caplog.text
    assert "internal error" not in caplog.text
