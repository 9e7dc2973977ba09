"""Inputs as users' files have them: every missing model in one pass, repeated node ids, paths
saved on Windows or another machine, absolute model paths, and where noise is drawn."""
import json
import logging
import shutil
from pathlib import Path

import pytest

from engine import Session, Settings, load_workflow
from engine.cli import main

from .kolors_graphs import txt2img

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SMALL = ["--set", "14.width=64", "--set", "14.height=64", "--set", "14.steps=2"]


def run_json(capsys, *args):
    code = main([*args, "--json", "-q"])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_validation_reports_every_missing_model_at_once(tmp_path, capsys):
    code, [report] = run_json(capsys, "--validate", str(EXAMPLES / "kolors_txt2img.json"),
                              "--models-dir", str(tmp_path / "nothing"))
    assert code == 2
    by_node = {e["node_id"]: e["message"] for e in report["errors"]}
    assert set(by_node) == {"6", "11", "13"}
    assert "diffusers/Kolors/unet" in by_node["6"] and "Kwai-Kolors/Kolors" in by_node["6"]
    assert "text_encoder" in by_node["13"] and "HF_HUB_OFFLINE" in by_node["13"]


def test_where_a_download_would_be_tried_validation_says_so_and_names_the_repo(tmp_path, capsys, monkeypatch,
                                                                                tiny_models):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    models = tmp_path / "models"
    shutil.copytree(tiny_models / "vae", models / "vae")
    code, [report] = run_json(capsys, "--validate", str(EXAMPLES / "kolors_txt2img.json"), "--models-dir", str(models))
    assert code == 0 and report["status"] == "ok"
    downloads = [w for w in report["warnings"] if w["kind"] == "model_download"]
    assert {w["node_id"] for w in downloads} == {"6", "13"}
    assert all("hub repo Kwai-Kolors/Kolors" in w["message"] for w in downloads)


def test_a_ui_workflow_whose_node_ids_repeat_is_refused_naming_both_nodes(tmp_path, capsys):
    workflow = json.loads((EXAMPLES / "kolors_txt2img.json").read_text())
    clash = next(n for n in workflow["nodes"] if n["type"] == "VAEDecode")
    clash["id"] = next(n for n in workflow["nodes"] if n["type"] == "KolorsSampler")["id"]
    (tmp_path / "dup.json").write_text(json.dumps(workflow))
    code, [report] = run_json(capsys, "--validate", str(tmp_path / "dup.json"), "--models-dir", str(tmp_path))
    assert code == 2
    [error] = [e for e in report["errors"] if e["kind"] == "duplicate_node_id"]
    assert error["node_id"] == "14" and "(KolorsSampler)" in error["message"] and "(VAEDecode)" in error["message"]


@pytest.fixture
def lora_setup(tiny_models, tmp_path):
    """The saved LoRA workflow, its LoRA file at the tiny models' loras folder."""
    import torch

    from .test_kolors_lora import diffsynth_keys, load_unet, trained_adapter

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    lora = diffsynth_keys(trained_adapter(load_unet(models), seed=0))
    torch.save(lora, models / "loras" / "epoch=0-step=500.ckpt")
    workflow = json.loads((EXAMPLES / "kolors_lora.json").read_text())
    lora_node = next(n for n in workflow["nodes"] if n["type"] == "LoadKolorsLoRA")
    return models, workflow, lora_node


@pytest.mark.parametrize("saved", [r"D:\models\lora\epoch=0-step=500.ckpt", "/home/someone/lora/epoch=0-step=500.ckpt",
                                   r"\\server\share\epoch=0-step=500.ckpt"])
def test_a_path_saved_on_another_machine_falls_back_to_the_file_of_the_same_name(lora_setup, tmp_path, capsys, saved,
                                                                                  caplog):
    models, workflow, lora_node = lora_setup
    lora_node["widgets_values"][0] = saved
    (tmp_path / "wf.json").write_text(json.dumps(workflow))
    with caplog.at_level(logging.INFO, logger="run_graph.paths"):
        code, [report] = run_json(capsys, str(tmp_path / "wf.json"), "--models-dir", str(models),
                                  "--output-dir", str(tmp_path / "out"), *SMALL)
    assert code == 0 and report["nodes"]["16"]["status"] == "executed"
    assert "the file of the same name" in caplog.text


def test_a_vae_combo_saved_as_a_windows_path_takes_the_file_of_the_same_name(tiny_models, tmp_path):
    graph = txt2img(steps=1)
    graph["11"]["inputs"]["vae_name"] = r"C:\ComfyUI\models\vae\sdxl.vae.safetensors"
    result = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path, device="cpu")).validate(graph)
    assert result.status == "ok" and "sdxl.vae.safetensors" in result.warnings[0].message


def test_an_absolute_model_path_that_exists_is_read_there_unless_the_policy_forbids_it(lora_setup, tmp_path, caplog):
    models, workflow, lora_node = lora_setup
    elsewhere = tmp_path / "my-loras" / "style.ckpt"
    elsewhere.parent.mkdir()
    shutil.move(models / "loras" / "epoch=0-step=500.ckpt", elsewhere)
    lora_node["widgets_values"][0] = str(elsewhere)
    graph = load_workflow(workflow)
    with caplog.at_level(logging.INFO, logger="run_graph.paths"):
        result = Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu")).execute(
            graph, overrides={"14.width": 64, "14.height": 64, "14.steps": 1})
    assert result.status == "ok" and f"reading {elsewhere}" in caplog.text
    strict = Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu", allow_absolute_model_paths=False)
    refused = Session(settings=strict).validate(graph)
    [error] = refused.errors
    assert (error.node_id, error.input) == ("16", "lora_path") and "not allowed here" in error.message


def test_model_folders_linked_from_another_disk_are_listed_and_read_as_comfyui_reads_them(tiny_models, tmp_path):
    """A checkpoint folder that is a link to elsewhere (and a link to one file) are listed and
    load; a name that climbs out with '..' is still refused, and writing through a link out of
    the output folder still is."""
    import os

    from engine.settings import UnsafePathError
    from nodes.core.vae import model_files

    disk = tmp_path / "big-disk" / "sd"
    disk.mkdir(parents=True)
    os.link(tiny_models / "checkpoints" / "tiny_sd15.safetensors", disk / "linked_sd15.safetensors")
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / "shared").symlink_to(disk, target_is_directory=True)
    (models / "checkpoints" / "loop").symlink_to(models / "checkpoints", target_is_directory=True)
    (models / "checkpoints" / "one.safetensors").symlink_to(disk / "linked_sd15.safetensors")
    settings = Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu")
    assert model_files(settings, "checkpoints", (".safetensors",)) == ["one.safetensors",
                                                                       "shared/linked_sd15.safetensors"]
    assert settings.model_file("checkpoints", "shared/linked_sd15.safetensors").is_file()
    strict = Settings(models_dir=models, output_dir=tmp_path / "out", allow_absolute_model_paths=False)
    with pytest.raises(UnsafePathError):
        strict.model_file("checkpoints", "../../big-disk/sd/linked_sd15.safetensors")
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "shared/linked_sd15.safetensors"}},
             "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a cat"}},
             "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
             "4": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0],
                                                         "latent_image": ["3", 0], "seed": 1, "steps": 1, "cfg": 1.0,
                                                         "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
             "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
             "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "linked"}}}
    assert Session(settings=settings).execute(graph).status == "ok"
    (tmp_path / "out" / "away").symlink_to(tmp_path / "big-disk", target_is_directory=True)
    with pytest.raises(UnsafePathError):
        settings.output_path("away/escape.png")


def test_nothing_is_ever_written_outside_the_output_folder_even_with_unsafe_paths(tmp_path):
    from engine.context import NodeContext, RunInfo
    from engine.model_store import ModelStore
    from engine.settings import UnsafePathError

    settings = Settings(output_dir=tmp_path / "out", allow_unsafe_paths=True)
    with pytest.raises(UnsafePathError):
        settings.output_path("../escape.png")
    with pytest.raises(UnsafePathError):
        settings.output_path(str(tmp_path / "escape.png"))
    run = RunInfo({}, None, settings, "cpu", lambda *a: None, None)
    ctx = NodeContext(run, ModelStore(1), "1", "X", None)
    with pytest.raises(UnsafePathError):
        ctx.write_file(tmp_path / "escape.txt", lambda fh: fh.write(b"x"))
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "escape.png").exists()


def test_noise_is_drawn_on_the_run_device_by_default_and_cpu_on_request_and_recorded(tiny_models, tmp_path):
    from PIL import Image

    session = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path / "a", device="cpu"))
    default = session.execute(txt2img(steps=2))
    assert default.metadata["14"]["noise"] == {"device": "cpu", "dtype": "float32"}
    with Image.open(default.files[0]) as image:
        assert json.loads(image.text["run-graph"])["nodes"]["14"]["noise"]["device"] == "cpu"
    widget = txt2img(steps=2)
    widget["14"]["inputs"]["noise_device"] = "cpu"
    by_widget = session.execute(widget)
    flagged = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path / "b", device="cpu",
                                        noise_device="cpu")).execute(txt2img(steps=2))
    # On a CPU the device is the CPU: the same latents either way. The flag is in the cache key.
    assert (by_widget.outputs["14"].LATENT.samples == default.outputs["14"].LATENT.samples).all()
    assert (flagged.outputs["14"].LATENT.samples == default.outputs["14"].LATENT.samples).all()
    assert flagged.nodes["14"].status == "executed" and by_widget.nodes["14"].status == "executed"
