"""Batches: many workflows, PNGs, sweeps and repeats in one process; manifest, resume after a
kill, provenance, failures that do not stop the rest, progress events."""
import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import Session, Settings, load_workflow
from engine.batch import repeat_overrides
from engine.cli import main
from engine.sweep import SweepError, build_sweep

from .kolors_graphs import txt2img
from .test_kolors_lora import diffsynth_keys, load_unet, trained_adapter

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SMALL = ["14.width=64", "14.height=64", "14.steps=2"]


@pytest.fixture(scope="module")
def batch_models(tiny_models, tmp_path_factory):
    models = tmp_path_factory.mktemp("batch") / "models"
    shutil.copytree(tiny_models, models)
    import torch

    torch.save(diffsynth_keys(trained_adapter(load_unet(models), seed=0)), models / "loras" / "epoch=0-step=500.ckpt")
    return models


@pytest.fixture
def runs(batch_models, tmp_path):
    """A folder with 3 different workflows (API txt2img, the saved LoRA UI workflow, img2img) and
    2 PNGs written by an earlier run."""
    folder = tmp_path / "runs"
    folder.mkdir()
    (tmp_path / "input").mkdir()
    pixels = (np.indices((64, 64)).sum(0) * 3 % 256).astype(np.uint8)
    Image.fromarray(np.stack([pixels, pixels.T, pixels[::-1]], -1)).save(tmp_path / "input" / "init.png")
    (folder / "a_txt2img.json").write_text(json.dumps(txt2img("a red fox", steps=1)))
    shutil.copy(EXAMPLES / "kolors_lora.json", folder / "b_lora.json")
    (folder / "c_img2img.json").write_text(json.dumps(txt2img("a house", steps=2, image="init.png", strength=0.5)))
    earlier = Session(settings=Settings(models_dir=batch_models, output_dir=tmp_path / "earlier", device="cpu"))
    for seed, prompt in ((5, "a blue bird"), (6, "a green frog")):
        [png] = earlier.execute(txt2img(prompt, steps=1, seed=seed)).files
        shutil.copy(png, folder / f"d_{seed}.png")
    return folder


def settings(models: Path, tmp_path: Path, out: str = "out") -> Settings:
    return Settings(models_dir=models, output_dir=tmp_path / out, input_dir=tmp_path / "input", device="cpu")


def test_folder_of_workflows_and_pngs_with_a_2x3_sweep_runs_in_one_process(batch_models, runs, tmp_path):
    session = Session(settings=settings(batch_models, tmp_path))
    sweep = build_sweep(["14.seed=[1,2]", "14.cfg=[3,4,5]"])
    outcomes = list(session.execute_many([runs], sweep=sweep, overrides=SMALL, manifest=True))
    assert len(outcomes) == 5 * 6
    assert {o.status for o in outcomes} == {"ok"}, [e.describe() for o in outcomes for e in o.result.errors]
    assert set(session.models.load_counts.values()) == {1}  # every model file loaded once
    lines = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 30 and len({x["job"] for x in lines}) == 30
    assert {(x["overrides"]["14.seed"], x["overrides"]["14.cfg"]) for x in lines} == {(s, c) for s in (1, 2) for c in (3, 4, 5)}
    assert [x for x in lines if x["seeds"]["14.seed"] != x["overrides"]["14.seed"] or not x["files"]] == []
    # jobs that load the same models ran together: each model set is one contiguous run of jobs
    groups = [o.job.group for o in outcomes]
    for group in set(groups):
        where = [i for i, g in enumerate(groups) if g == group]
        assert where == list(range(where[0], where[-1] + 1))
    sources = [Path(o.job.source).name for o in outcomes][::6]  # fp32 txt2img-like first, then the LoRA one
    assert sources == ["a_txt2img.json", "c_img2img.json", "d_5.png", "d_6.png", "b_lora.json"]
    assert Counter(o.job.source for o in outcomes) == Counter({str(p): 6 for p in sorted(runs.iterdir())})


def test_an_image_written_by_a_batch_reproduces_itself_byte_for_byte(batch_models, runs, tmp_path, capsys):
    code = main([str(runs / "b_lora.json"), "--models-dir", str(batch_models), "--output-dir", str(tmp_path / "out"),
                 "--sweep", "14.seed=[11,12]", "-q", *sum((["--set", s] for s in SMALL), [])])
    assert code == 0
    written = sorted((tmp_path / "out" / "previews").glob("*.png"))[-1]
    with Image.open(written) as image:
        chunks = dict(image.text)
    provenance = json.loads(chunks["run-graph"])
    assert provenance["seeds"] == {"14.seed": 12} and provenance["engine"].startswith("run-graph ")
    lora = batch_models / "loras" / "epoch=0-step=500.ckpt"
    import hashlib

    assert provenance["models"]["16"]["sha256"] == hashlib.sha256(lora.read_bytes()).hexdigest()
    assert "diffusion_pytorch_model.fp16.safetensors" in provenance["models"]["6"]["sha256"]
    ui_sampler = next(n for n in json.loads(chunks["workflow"])["nodes"] if n["id"] == 14)
    assert ui_sampler["widgets_values"][:3] == [64, 64, 12]  # the UI workflow shows what ran
    code = main([str(written), "--models-dir", str(batch_models), "--output-dir", str(tmp_path / "replay"),
                 "--no-cache", "-q"])  # recomputed from scratch, not read back from the cache
    [replayed] = (tmp_path / "replay" / "previews").glob("*.png")
    assert code == 0 and replayed.read_bytes() == written.read_bytes()


def _batch_command(models: Path, runs: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "engine.cli", str(runs / "a_txt2img.json"), str(runs / "c_img2img.json"),
            "--models-dir", str(models), "--output-dir", str(out), "--input-dir", str(out.parent / "input"),
            "--sweep", "14.seed=1..6", "--no-cache", "-q", *sum((["--set", s] for s in SMALL), [])]


def test_killed_batch_resumes_without_redoing_finished_jobs_or_leaving_partial_files(batch_models, runs, tmp_path):
    out = tmp_path / "out"
    manifest = out / "manifest.jsonl"
    proc = subprocess.Popen(_batch_command(batch_models, runs, out), stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not manifest.exists() or len(manifest.read_text().splitlines()) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    assert 3 <= len(before) < 12
    stamps = {f["path"]: Path(f["path"]).stat().st_mtime_ns for line in before for f in line["files"]}
    subprocess.run(_batch_command(batch_models, runs, out), check=True, stderr=subprocess.DEVNULL)
    after = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    assert len(after) == 12 and len({x["job"] for x in after}) == 12 and after[:len(before)] == before
    assert all(Path(p).stat().st_mtime_ns == t for p, t in stamps.items())  # finished jobs not redone
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    assert len(list((out / "previews").glob("*.png"))) == 12


def test_a_bad_workflow_does_not_stop_the_batch_unless_fail_fast(batch_models, runs, tmp_path, capsys):
    bad = txt2img(steps=1)
    bad["14"]["inputs"]["steps"] = 0
    (runs / "0_bad.json").write_text(json.dumps(bad))
    common = [str(runs / "0_bad.json"), str(runs / "a_txt2img.json"), "--models-dir", str(batch_models), "--json", "-q"]
    code = main([*common, "--output-dir", str(tmp_path / "o1")])
    reports = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 2 and [r["status"] for r in reports] == ["invalid", "ok"]
    assert (reports[0]["errors"][0]["node_id"], reports[0]["errors"][0]["input"]) == ("14", "steps")
    assert "0_bad.json" in reports[0]["file"] and len(reports[1]["files"]) == 1
    code = main([*common, "--output-dir", str(tmp_path / "o2"), "--fail-fast"])
    assert code == 2 and len(capsys.readouterr().out.splitlines()) == 1


def _seeds(graph, registry, repeats):
    return [dict(((n, i), v) for n, i, v in run).get(("14", "seed")) for run in repeat_overrides(graph, registry, repeats, "x")]


def test_repeat_follows_control_after_generate_as_the_frontend_does(batch_models):
    graph = load_workflow(EXAMPLES / "kolors_lora.json")
    registry = Session().registry
    assert graph.controls[("14", "seed")] == "fixed" and _seeds(graph, registry, 3) == [None, None, None]
    graph.nodes["14"].inputs["seed"] = 100
    for mode, expected in (("increment", [None, 101, 102, 103]), ("decrement", [None, 99, 98, 97])):
        graph.controls[("14", "seed")] = mode
        assert _seeds(graph, registry, 4) == expected
    # The frontend clamps to [min, max], max capped at 2^50 for JavaScript: it never wraps.
    graph.nodes["14"].inputs["seed"] = 1
    graph.controls[("14", "seed")] = "decrement"
    assert _seeds(graph, registry, 4) == [None, 0, 0, 0]
    cap = 1125899906842624
    graph.nodes["14"].inputs["seed"] = cap - 1
    graph.controls[("14", "seed")] = "increment"
    assert _seeds(graph, registry, 4) == [None, cap, cap, cap]
    graph.nodes["14"].inputs["seed"] = 2**60  # saved above the cap: the first change pulls it in
    graph.controls[("14", "seed")] = "decrement"
    assert _seeds(graph, registry, 3) == [None, cap, cap - 1]
    graph.controls[("14", "seed")] = "randomize"
    drawn = _seeds(graph, registry, 50)[1:]
    assert drawn == _seeds(graph, registry, 50)[1:] and len(set(drawn)) == 49
    assert all(0 <= seed <= cap for seed in drawn) and max(drawn) > cap // 4  # the whole capped range
    api = load_workflow(txt2img(seed=7))
    assert _seeds(api, registry, 3) == [None, 8, 9]  # no saved mode: increment


def test_randomize_draws_whole_steps_from_the_minimum_inside_the_caps():
    from engine.batch.seeds import FRONTEND_LIMIT, next_value

    import random

    rng = random.Random(0)
    values = [next_value(0, "randomize", -FRONTEND_LIMIT, 10**6, 5, rng) for _ in range(200)]
    assert all((v + FRONTEND_LIMIT) % 5 == 0 and -FRONTEND_LIMIT <= v <= 10**6 for v in values)
    assert next_value(5, "increment", 0, 8, 5, rng) == 8 and next_value(5, "fixed", 0, 8, 5, rng) == 5


def test_a_png_replayed_with_repeat_follows_the_modes_in_its_workflow_chunk(batch_models, tmp_path):
    session = Session(settings=settings(batch_models, tmp_path))
    graph = load_workflow(EXAMPLES / "kolors_lora.json")
    [png] = session.execute(graph, overrides=SMALL + ["14.seed=5"]).files
    replay = load_workflow(png)
    assert replay.controls[("14", "seed")] == "fixed"
    with Image.open(png) as image:
        chunks = dict(image.text)
    workflow = json.loads(chunks["workflow"])
    next(n for n in workflow["nodes"] if n["id"] == 14)["widgets_values"][3] = "increment"
    fresh = Image.new("RGB", (8, 8))
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("prompt", chunks["prompt"])
    info.add_text("workflow", json.dumps(workflow))
    fresh.save(tmp_path / "increment.png", pnginfo=info)
    outcomes = list(session.execute_many([tmp_path / "increment.png"], repeat=3))
    assert [o.result.provenance["seeds"]["14.seed"] for o in outcomes] == [5, 6, 7]
    # seed 5 ran just before; 6 and 7 are new images, not cache hits of the saved seed
    assert [bool(o.result.executed) for o in outcomes] == [False, True, True]
    assert len({f for o in outcomes for f in o.result.output_files}) == 3


def test_repeat_records_the_seeds_used_and_events_stream_as_ndjson(batch_models, runs, tmp_path, capsys):
    code = main([str(runs / "a_txt2img.json"), "--models-dir", str(batch_models), "--output-dir", str(tmp_path / "o"),
                 "--repeat", "3", "--events", "ndjson", "-q", *sum((["--set", s] for s in SMALL), [])])
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    kinds = {e["event"] for e in events}
    assert code == 0 and {"job_start", "node_start", "progress", "node_end", "file", "job_end", "job_report"} <= kinds
    lines = [json.loads(x) for x in (tmp_path / "o" / "manifest.jsonl").read_text().splitlines()]
    assert [x["seeds"]["14.seed"] for x in lines] == [42, 43, 44]


def test_sweep_values_files_and_errors(tmp_path):
    (tmp_path / "prompts.txt").write_text("a cat\n\na dog, red\n")
    (tmp_path / "sweep.yaml").write_text("product:\n  14.seed: 1..3\nzip:\n  12.prompt: '@prompts.txt'\n"
                                         "  Kolors Sampler.cfg: [4, 5]\n")
    combos = build_sweep(file=tmp_path / "sweep.yaml").combinations()
    assert len(combos) == 6 and combos[1] == [("14", "seed", 1), ("12", "prompt", "a dog, red"), ("Kolors Sampler", "cfg", 5)]
    with pytest.raises(SweepError, match="differ in length"):
        build_sweep(zipped=["12.prompt=[1,2]", "14.cfg=[1]"]).combinations()
    assert main(["x.json", "--sweep", "14.seed=@missing.txt"]) == 2


def test_manifest_skips_a_torn_last_line_and_trusts_only_files_that_match_their_stamps(tmp_path):
    import os

    from engine.batch import Manifest
    from engine.file_hashes import stamp_file

    def entry(path):
        size, mtime_ns, digest = stamp_file(path)
        return {"path": str(path), "bytes": size, "mtime_ns": mtime_ns, "sha256": digest}

    for name in ("a.png", "b.png", "d.png"):
        (tmp_path / name).write_bytes(b"x" * 10)
    manifest = Manifest(tmp_path / "manifest.jsonl")
    manifest.append({"job": "a", "status": "ok", "files": [entry(tmp_path / "a.png")]})
    with open(manifest.path, "ab") as handle:
        handle.write(b'{"job": "b", "sta')  # killed while writing
    manifest.append({"job": "c", "status": "ok", "files": []})
    manifest.append({"job": "d", "status": "ok", "files": [entry(tmp_path / "d.png")]})
    manifest.append({"job": "e", "status": "ok", "files": [{"path": str(tmp_path / "b.png")}]})  # no stamp
    assert set(manifest.finished()) == {"a", "c", "d"}
    assert manifest.path.read_bytes().count(b"\n") == 5
    (tmp_path / "d.png").write_bytes(b"y" * 10)  # same size, other bytes
    stat = os.stat(tmp_path / "a.png")
    os.utime(tmp_path / "a.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, same bytes
    assert set(manifest.finished()) == {"a", "c"}
