"""The disk cache: across processes, damaged and killed writes, size limit, safe format, keys."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from engine import Session, Settings
from engine.cli import main
from engine.disk_cache import DiskCache, _checksum
from nodes.types import Latent

from . import toy_nodes as t
from .kolors_graphs import txt2img
from .test_cache import CHAIN


def fresh(session: Session) -> Session:
    """Another session on the same settings: what a second process sees (memory empty)."""
    return Session(session.registry, session.settings)


def entry_files(settings: Settings) -> list[Path]:
    return sorted((settings.cache_dir / "outputs").rglob("*.safetensors"))


def test_a_second_session_takes_every_output_from_disk(toy_session):
    first = toy_session.execute(CHAIN)
    second = fresh(toy_session).execute(CHAIN)
    assert first.executed == ["1", "2", "3", "4", "5"]
    assert second.executed == [] and second.from_disk == ["5"] and second.nodes["5"].bytes > 0
    changed = fresh(toy_session).execute({**CHAIN, "4": {"class_type": "Scale", "inputs": {
        "x": ["3", 0], "factor": 7, "seed": 0, "mode": "mul"}}})
    assert changed.executed == ["4", "5"] and changed.from_disk == ["3"]
    assert t.Record.RESULTS[-1] == (2 + 3) * 7 + 0.5


def test_an_entry_evicted_by_another_process_while_being_read_is_a_miss_not_damage(tmp_path, monkeypatch, caplog):
    import engine.disk_cache as disk_cache

    disk = DiskCache(tmp_path, 2**30, lambda: "cpu")
    latent = Latent(torch.zeros(1, 4, 2, 2))
    from nodes.core.latent import LatentOut

    disk.put("early", LatentOut(latent))
    disk.put("late", LatentOut(latent))
    import safetensors

    real_safe_open = safetensors.safe_open

    def evicted_first(path, *args, **kwargs):
        Path(path).unlink()  # the other process's eviction lands between lookup and read
        return real_safe_open(path, *args, **kwargs)

    monkeypatch.setattr(safetensors, "safe_open", evicted_first)
    assert disk.get("early") is None
    monkeypatch.undo()

    def evicted_after_read(path, *args, **kwargs):
        Path(path).unlink()
        raise FileNotFoundError(path)

    monkeypatch.setattr(disk_cache.os, "utime", evicted_after_read)
    entry = disk.get("late")  # read whole, gone before its timestamp moved: still a hit
    assert entry is not None and torch.equal(entry.output.LATENT.samples, latent.samples)
    assert "damaged" not in caplog.text


def test_tensors_round_trip_exactly_and_entries_are_safetensors_not_pickles(tmp_path):
    disk = DiskCache(tmp_path, 2**30, lambda: "cpu")
    latent = Latent(torch.randn(2, 4, 8, 8).to(torch.bfloat16))
    from nodes.core.latent import LatentOut

    records = {"seed": 3, "choices": [("a", 1.5)], "nan": float("nan")}
    assert disk.put("sig", LatentOut(latent), records) > 0
    entry = disk.get("sig")
    assert torch.equal(entry.output.LATENT.samples, latent.samples)
    assert entry.output.LATENT.samples.dtype == torch.bfloat16 and type(entry.output) is LatentOut
    assert entry.records["choices"] == [("a", 1.5)] and entry.records["seed"] == 3
    [path] = entry_files(Settings(cache_dir=tmp_path))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        assert json.loads(handle.metadata()["structure"])["output"]["$type"].endswith(":LatentOut")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # one bit of the tensor data: the checksum catches it
    path.write_bytes(bytes(data))
    assert disk.get("sig") is None and not path.exists()


@pytest.mark.parametrize("damage", ["truncate", "foreign_type"])
def test_a_damaged_entry_is_recomputed_without_error(toy_session, damage, caplog):
    toy_session.execute(CHAIN)
    for path in entry_files(toy_session.settings):
        data = bytearray(path.read_bytes())
        if damage == "truncate":
            data = data[: len(data) // 2]
        else:  # a well-formed entry with a valid checksum that names a type outside the whitelist
            from safetensors import safe_open
            from safetensors.torch import save_file

            with safe_open(str(path), "pt") as handle:
                meta, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
            meta["structure"] = re.sub(r'"\$type": "[^"]+"', '"$type": "os:system"', meta["structure"], count=1)
            meta["checksum"] = _checksum(meta["structure"], tensors)
            save_file(tensors, str(path), metadata=meta)
            continue
        path.write_bytes(bytes(data))
    result = fresh(toy_session).execute(CHAIN, raise_on_error=False)
    assert result.status == "ok" and result.executed == ["1", "2", "3", "4", "5"]
    assert t.Record.RESULTS[-1] == (2 + 3) * 10 + 0.5 and "damaged" in caplog.text


KILLER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    import engine.atomic
    from engine import Session, Settings
    from tests import toy_nodes
    from tests.test_cache import CHAIN

    real_replace = os.replace
    def die_while_writing(src, dst):
        if "/outputs/" in str(dst) and {after!r} in toy_nodes.CALLS:
            with open(src, "r+b") as handle:
                handle.truncate(10)  # half-written temp file
            os._exit(9)
        real_replace(src, dst)
    engine.atomic.os.replace = die_while_writing
    Session(toy_nodes.registry(), Settings(cache_dir={cache!r}, output_dir={out!r})).execute(CHAIN)
""")


def test_a_process_killed_while_writing_leaves_the_cache_usable(toy_session):
    settings = toy_session.settings
    script = KILLER.format(root=str(Path(__file__).resolve().parent.parent), after="Scale",
                           cache=str(settings.cache_dir), out=str(settings.output_dir))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    leftovers = [p for p in (settings.cache_dir / "outputs").rglob("*") if p.is_file()]
    assert any(p.name.startswith(".tmp-") for p in leftovers)
    result = fresh(toy_session).execute(CHAIN)
    # 1, 2, 3 were stored before the kill; 4 (Scale) was being written and is recomputed
    assert result.status == "ok" and result.executed == ["4", "5"] and result.from_disk == ["3"]


def test_size_limit_evicts_least_recently_used_entries(toy_session):
    settings = Settings(cache_dir=toy_session.settings.cache_dir, output_dir=toy_session.settings.output_dir,
                        cache_size="20KB")
    session = Session(toy_session.registry, settings)
    for value in range(40):
        session.execute({**CHAIN, "1": {"class_type": "Constant", "inputs": {"value": value}}})
    disk = session.cache.disk
    entries, size = disk.size()
    assert 0 < size <= 20 * 1024 and entries < 40 * 3
    # The newest run's entries survived; the oldest went.
    newest = fresh(session).execute({**CHAIN, "1": {"class_type": "Constant", "inputs": {"value": 39}}})
    oldest = fresh(session).execute({**CHAIN, "1": {"class_type": "Constant", "inputs": {"value": 0}}})
    assert newest.executed == [] and oldest.executed == ["1", "3", "4", "5"]


def test_library_versions_and_device_are_part_of_the_key(tmp_path, monkeypatch):
    from nodes.core.primitives import IntOut

    DiskCache(tmp_path, 2**30, lambda: "cpu").put("sig", IntOut(3))
    assert DiskCache(tmp_path, 2**30, lambda: "cpu").get("sig").output.INT == 3
    assert DiskCache(tmp_path, 2**30, lambda: "mps").get("sig") is None
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda p: "9.9" if p == "torch" else real(p))
    assert DiskCache(tmp_path, 2**30, lambda: "cpu").get("sig") is None


def test_cache_info_and_clear(toy_session, capsys):
    toy_session.execute(CHAIN)
    cache = str(toy_session.settings.cache_dir)
    assert main(["--cache-info", "--cache-dir", cache, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entries"] == 5 and info["bytes"] > 0
    assert main(["--clear-cache", "--cache-dir", cache, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["removed"] == 5 and info["entries"] == 0
    assert fresh(toy_session).execute(CHAIN).executed == ["1", "2", "3", "4", "5"]


def _run_cli(graph: dict, models: Path, tmp_path: Path, name: str) -> dict:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(graph))
    proc = subprocess.run([sys.executable, "-m", "engine.cli", str(path), "--models-dir", str(models),
                           "--output-dir", str(tmp_path / "out"), "--device", "cpu", "--json", "-q"],
                          capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_kolors_in_separate_processes_second_run_executes_nothing_and_new_seed_skips_the_text_encoder(
        tiny_models, tmp_path):
    first = _run_cli(txt2img(steps=2), tiny_models, tmp_path, "a")
    assert all(n["status"] == "executed" for n in first["nodes"].values())
    second = _run_cli(txt2img(steps=2), tiny_models, tmp_path, "a")
    assert [n for n, r in second["nodes"].items() if r["status"] == "executed"] == []
    assert second["nodes"]["3"]["status"] == "disk" and all(f["reused"] for f in second["files"])
    assert [f["path"] for f in second["files"]] == [f["path"] for f in first["files"]]
    for entry in first["files"]:
        Path(entry["path"]).unlink()
    rewritten = _run_cli(txt2img(steps=2), tiny_models, tmp_path, "a")  # only the output node runs
    assert [n for n, r in rewritten["nodes"].items() if r["status"] == "executed"] == ["3"]
    assert rewritten["nodes"]["10"]["status"] == "disk" and len(rewritten["files"]) == 2
    reseeded = _run_cli(txt2img(steps=2, seed=9), tiny_models, tmp_path, "b")
    status = {n: r["status"] for n, r in reseeded["nodes"].items()}
    assert status["13"] == "skipped" and status["12"] == "disk" and reseeded["nodes"]["12"]["bytes"] > 0
    assert status["14"] == status["10"] == status["3"] == "executed" and len(reseeded["files"]) == 2
    # the loaders' outputs are handles: never written to disk, recreated (cheaply) when needed
    assert status["6"] == status["11"] == "executed" and reseeded["nodes"]["6"]["bytes"] == 0


def test_new_model_weights_invalidate_what_was_computed_from_them(tiny_models, tmp_path):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    settings = Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu")
    Session(settings=settings).execute(txt2img(steps=1))
    vae = models / "vae" / "sdxl.vae.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(vae)
    save_file({k: v * 1.01 if k.startswith("decoder.") else v for k, v in state.items()}, vae)
    result = Session(settings=settings).execute(txt2img(steps=1))
    assert result.executed == ["3", "10", "11"] and "14" in result.from_disk


WORKER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from engine import Session, Settings
    from tests import toy_nodes
    from tests.test_cache import CHAIN

    session = Session(toy_nodes.registry(), Settings(cache_dir={cache!r}, output_dir={out!r}))
    for value in range({runs}):
        # one file per value: a file shared by all values would be rewritten by each, and a
        # cached result whose file changed since is rightly run again
        graph = dict(CHAIN, **{{"1": {{"class_type": "Constant", "inputs": {{"value": value % 7}}}},
                                "5": {{"class_type": "Record", "inputs": {{"x": ["4", 0], "name": f"r{{value % 7}}"}}}}}})
        assert session.execute(graph).status == "ok"
        session.cache.clear()  # memory only: each run goes to the shared folder
""")


def _worker(toy_session, runs: int) -> subprocess.Popen:
    settings = toy_session.settings
    script = WORKER.format(root=str(Path(__file__).resolve().parent.parent), cache=str(settings.cache_dir),
                           out=str(settings.output_dir), runs=runs)
    return subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)


def test_concurrent_processes_share_the_folder_and_a_killed_one_does_no_harm(toy_session):
    import signal
    import time

    victim = _worker(toy_session, 10_000)
    workers = [_worker(toy_session, 30) for _ in range(2)]
    assert all(w.wait(timeout=120) == 0 for w in workers), [w.stderr.read() for w in workers]
    time.sleep(0.5)
    victim.send_signal(signal.SIGKILL)  # somewhere in the middle of its runs and writes
    victim.wait(timeout=30)
    for value in range(7):
        graph = {**CHAIN, "1": {"class_type": "Constant", "inputs": {"value": value}},
                 "5": {"class_type": "Record", "inputs": {"x": ["4", 0], "name": f"r{value}"}}}
        result = fresh(toy_session).execute(graph, raise_on_error=False)
        assert result.status == "ok" and result.executed == [] and result.from_disk == ["5"]
