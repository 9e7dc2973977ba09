"""The `run-graph` command: exit codes, JSON Lines, overrides, PNG round trips."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli import main

COPY = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}, "_meta": {"title": "Load"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "copy"},
              "_meta": {"title": "Save"}}}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "input").mkdir()
    pixels = (np.arange(8 * 8 * 3) % 251).astype(np.uint8).reshape(8, 8, 3)
    Image.fromarray(pixels).save(tmp_path / "input" / "in.png")
    (tmp_path / "copy.json").write_text(json.dumps(COPY))
    return tmp_path


def run_json(capsys, *args):
    code = main([*args, "--json", "-q"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return code, lines


def test_run_writes_png_with_prompt_chunk_and_reports_json_lines(workdir, capsys):
    code, [report] = run_json(capsys, "copy.json")
    assert code == 0 and report["status"] == "ok" and report["errors"] == []
    assert report["nodes"]["1"]["status"] == "executed" and report["nodes"]["2"]["type"] == "SaveImage"
    [entry] = report["files"]
    written = entry["path"]
    assert written.endswith("output/copy_00001_.png") and not entry["reused"]
    assert entry["bytes"] == Path(written).stat().st_size
    assert entry["sha256"] == hashlib.sha256(Path(written).read_bytes()).hexdigest()
    with Image.open(written) as img:
        assert json.loads(img.text["prompt"])["2"]["class_type"] == "SaveImage"
        assert np.array_equal(np.asarray(img), np.asarray(Image.open(workdir / "input" / "in.png")))


def test_png_written_by_a_run_replays_itself(workdir, capsys):
    main(["copy.json", "-q"])
    first = workdir / "output" / "copy_00001_.png"
    code, [report] = run_json(capsys, str(first))  # same prompt, files present: nothing to do
    assert code == 0 and report["nodes"]["2"]["status"] == "disk"
    assert [(f["path"], f["reused"]) for f in report["files"]] == [(str(Path("output/copy_00001_.png")), True)]
    code, [report] = run_json(capsys, str(first), "--no-cache")
    assert code == 0
    second = Path(report["files"][0]["path"])
    assert second.name == "copy_00002_.png" and second.read_bytes() == first.read_bytes()


def test_set_overrides_by_id_and_by_title(workdir, capsys):
    code, [report] = run_json(capsys, "copy.json", "--set", "Save.filename_prefix=sub/renamed",
                              "--set", "1.image=in.png")
    assert code == 0 and report["files"][0]["path"].endswith("output/sub/renamed_00001_.png")


def test_invalid_workflow_exits_2_with_every_error(workdir, capsys):
    bad = {**COPY, "1": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
           "3": {"class_type": "SaveImag", "inputs": {}}}
    Path("bad.json").write_text(json.dumps(bad))
    code, [report] = run_json(capsys, "bad.json")
    assert code == 2 and report["status"] == "invalid"
    assert {(e["node_id"], e["input"]) for e in report["errors"]} == {("1", "image"), ("3", None)}
    assert "did you mean 'SaveImage'" in [e for e in report["errors"] if e["node_id"] == "3"][0]["message"]


def test_output_prefix_outside_the_output_folder_is_refused_before_running(workdir, capsys):
    code, [report] = run_json(capsys, "copy.json", "--set", "2.filename_prefix=../../evil")
    assert code == 2 and report["errors"][0]["input"] == "filename_prefix"
    assert not list(workdir.parent.glob("evil*")) and not (workdir / "output").exists()


def test_validate_only_checks_many_files(workdir, capsys):
    Path("broken.json").write_text("{not json")
    code, reports = run_json(capsys, "--validate", "copy.json", "broken.json", "nope.json")
    assert code == 2 and [r["status"] for r in reports] == ["ok", "invalid", "invalid"]
    assert not (workdir / "output").exists()
    assert "broken.json" in reports[1]["errors"][0]["message"]


def test_list_nodes_json_is_object_info_like(capsys):
    assert main(["--list-nodes", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["SaveImage"]["output_node"] is True
    assert info["SaveImage"]["input_order"]["required"] == ["images", "filename_prefix"]


def test_cli_prints_no_traceback_on_bad_input(workdir):
    Path("x.json").write_text("[1, 2]")
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "x.json"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "x.json" in proc.stderr


@pytest.mark.parametrize("args,flag", [
    (["copy.json", "--set", "bogus"], "--set 'bogus'"),
    (["copy.json", "--sweep", "x=1..5:0"], "--sweep 'x=1..5:0'"),
    (["copy.json", "--sweep", "2.seed=1..5:0"], "the step after ':' must be at least 1"),
    (["copy.json", "--sweep", "no-equals-sign"], "--sweep 'no-equals-sign'"),
    (["copy.json", "--sweep-file", "missing.yaml"], "--sweep-file 'missing.yaml'"),
    (["copy.json", "--sweep-file", "list.yaml"], "--sweep-file 'list.yaml'"),
    (["copy.json", "--sweep-zip", "1.a=[1,2]", "--sweep-zip", "1.b=[1]"], "--sweep-zip"),
    (["copy.json", "--cache-size", "lots"], "--cache-size 'lots'"),
    (["copy.json", "--ram-budget=-3GB"], "--ram-budget '-3GB'"),
    (["copy.json", "--ram-budget", "-3GB"], "--ram-budget"),
    (["copy.json", "--events", "xml"], "--events"),
    (["copy.json", "--repeat", "0"], "--repeat '0'"),
    (["copy.json", "--device", "gpu"], "--device 'gpu'"),
])
def test_every_malformed_command_line_value_exits_2_with_one_line_naming_the_flag(workdir, args, flag):
    Path("list.yaml").write_text("- 1\n- 2\n")
    proc = subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and flag in lines[0], proc.stderr
    assert "internal error" not in proc.stderr and not (workdir / "output").exists()


def test_an_output_folder_held_by_another_batch_is_its_own_exit_code_naming_the_holder(workdir, capsys):
    from engine.batch import output_folder_lock

    with output_folder_lock(workdir / "output"):
        proc = subprocess.run([sys.executable, "-m", "engine.cli", "copy.json", "copy.json"],
                              capture_output=True, text=True)
    assert proc.returncode == 75
    assert "in use by another run-graph batch" in proc.stderr and f"pid {os.getpid()}" in proc.stderr
    assert main(["copy.json", "copy.json", "-q"]) == 0  # free again


def test_json_lines_follow_the_shipped_schema(workdir, capsys):
    from schemas import RunReport
    from schemas.report import SCHEMA_PATH, json_schema

    assert json.loads(SCHEMA_PATH.read_text()) == json_schema()  # regenerate: run-graph --json-schema
    assert main(["--json-schema"]) == 0 and json.loads(capsys.readouterr().out) == json_schema()
    Path("short.json").write_text(json.dumps(SHORT_UI))
    code, reports = run_json(capsys, "copy.json", "short.json", "--no-resume")
    for report in reports:
        RunReport.model_validate(report)
    [warning] = reports[1]["warnings"]
    assert (warning["node_id"], warning["kind"]) == ("2", "widgets_defaulted")
    assert "filename_prefix='ComfyUI'" in warning["message"]


# A UI workflow saved before SaveImage's prefix widget held a value: the widget takes its default.
SHORT_UI = {"nodes": [
    {"id": 1, "type": "LoadImage", "widgets_values": ["in.png", "image"], "outputs": [{"name": "IMAGE", "links": [1]}]},
    {"id": 2, "type": "SaveImage", "widgets_values": [], "inputs": [{"name": "images", "link": 1}]}],
    "links": [[1, 1, 0, 2, 0, "IMAGE"]]}


def test_the_batch_bar_counts_finished_jobs_whatever_order_they_end_in():
    from engine.cli import _Progress

    progress = _Progress(enabled=True)
    for index in range(4):  # a cluster starts several jobs before any ends
        progress("job_start", {"index": index, "total": 4, "label": f"job {index}"})
    progress("job_end", {"index": 2, "total": 4, "status": "ok"})
    progress("job_end", {"index": 0, "total": 4, "status": "ok"})
    assert progress.batch.n == 2
    progress.close()
