"""The shipped Kolors workflows on the tiny models, and clear errors for broken model folders."""
import json
import shutil
from pathlib import Path

import pytest

from engine.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SMALL = ["--set", "14.width=64", "--set", "14.height=64", "--set", "14.steps=2"]


def run(capsys, *args):
    code = main([*args, "--json", "-q"])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_txt2img_example_writes_four_images_identical_across_runs_and_seed_changes_them(
        tiny_models, tmp_path, capsys):
    example = str(EXAMPLES / "kolors_txt2img.json")
    base = ["--models-dir", str(tiny_models), *SMALL]
    code, [first] = run(capsys, example, *base, "--output-dir", str(tmp_path / "a"))
    assert code == 0 and len(first["files"]) == 4
    code, [again] = run(capsys, example, *base, "--output-dir", str(tmp_path / "b"))
    assert [f["sha256"] for f in first["files"]] == [f["sha256"] for f in again["files"]]
    assert [Path(f["path"]).read_bytes() for f in first["files"]] == [Path(f["path"]).read_bytes() for f in again["files"]]
    code, [reseeded] = run(capsys, example, *base, "--output-dir", str(tmp_path / "c"), "--set", "14.seed=1")
    assert code == 0
    assert all(a["sha256"] != b["sha256"] for a, b in zip(first["files"], reseeded["files"]))


def test_example_runs_from_a_pristine_copy_of_the_shared_workflow(tiny_models, tmp_path, capsys):
    # Full size would take minutes on CPU; the saved widgets themselves must validate unchanged.
    code, [report] = run(capsys, "--validate", str(EXAMPLES / "kolors_txt2img.json"), "--models-dir", str(tiny_models))
    assert code == 0 and report["status"] == "ok"


def test_lora_workflow_validates_except_for_the_missing_lora_file(tiny_models, capsys):
    code, [report] = run(capsys, "--validate", str(EXAMPLES / "kolors_lora.json"), "--models-dir", str(tiny_models))
    assert code == 2
    assert [(e["node_id"], e["input"]) for e in report["errors"]] == [("16", "lora_path")]
    assert "epoch=0-step=500.ckpt" in report["errors"][0]["message"]


def test_second_run_with_new_seed_reuses_text_embeddings_and_loaded_models(tiny_models, tmp_path):
    from engine import Session, Settings

    from .kolors_graphs import txt2img

    session = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path, device="cpu"))
    session.execute(txt2img(steps=1))
    second = session.execute(txt2img(steps=1, seed=5))
    assert second.executed == ["3", "10", "14"]
    assert set(second.cached) == {"6", "11", "12"} and second.nodes["13"].status == "skipped"
    assert set(session.models.load_counts.values()) == {1}


@pytest.fixture
def broken_models(tiny_models, tmp_path):
    copy = tmp_path / "models"
    shutil.copytree(tiny_models, copy)
    return copy


def _errors(capsys, models, *extra):
    code, [report] = run(capsys, str(EXAMPLES / "kolors_txt2img.json"), "--models-dir", str(models),
                         "--output-dir", str(models.parent / "out"), *SMALL, *extra)
    return code, report


def test_missing_model_folder_names_node_and_path(tmp_path, capsys):
    (tmp_path / "empty" / "vae").mkdir(parents=True)
    (tmp_path / "empty" / "vae" / "sdxl.vae.safetensors").write_bytes(b"x")
    code, report = _errors(capsys, tmp_path / "empty")
    assert code == 2 and report["status"] == "invalid"
    error = report["errors"][0]
    assert error["node_id"] in ("6", "13") and "diffusers/Kolors" in error["message"]
    assert "HF_HUB_OFFLINE" in error["message"] and not (tmp_path / "out").exists()


def test_missing_vae_file_is_a_validation_error_listing_what_exists(broken_models, capsys):
    (broken_models / "vae" / "sdxl.vae.safetensors").rename(broken_models / "vae" / "other.safetensors")
    code, report = _errors(capsys, broken_models)
    assert code == 2
    [error] = report["errors"]
    assert (error["node_id"], error["input"]) == ("11", "vae_name") and "'other.safetensors'" in error["message"]


def test_corrupted_safetensors_is_refused_with_its_path(broken_models, capsys):
    weights = broken_models / "diffusers" / "Kolors" / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    code, report = _errors(capsys, broken_models)
    assert code == 2 and report["errors"][0]["node_id"] == "6" and str(weights) in report["errors"][0]["message"]


def test_truncated_vae_file_is_refused_with_its_path(broken_models, capsys):
    vae = broken_models / "vae" / "sdxl.vae.safetensors"
    vae.write_bytes(vae.read_bytes()[:1000])
    code, report = _errors(capsys, broken_models)
    [error] = report["errors"]
    # named on the loader that chose the file (as ComfyUI, whose loaders load at once), with its input
    assert code == 2 and (error["node_id"], error["node_type"], error["input"]) == ("11", "VAELoader", "vae_name")
    assert str(vae) in error["message"] and "needed by node 10, VAEDecode" in error["message"]


def test_wrong_architecture_in_the_unet_folder_is_refused(broken_models, capsys):
    config = broken_models / "diffusers" / "Kolors" / "unet" / "config.json"
    data = json.loads(config.read_text())
    data["addition_embed_type"] = None
    config.write_text(json.dumps(data))
    code, report = _errors(capsys, broken_models)
    assert code == 2 and "is not a Kolors UNet" in report["errors"][0]["message"]
