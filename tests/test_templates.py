"""ComfyUI's own templates (the comfyui-workflow-templates-json package) whose node types are
all built in: they validate with only missing-model errors, and run on the tiny checkpoints
installed under the names the templates ask for."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from engine import Session, Settings
from engine.registry import default_registry

FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
MODEL_INPUTS = {"ckpt_name", "lora_name", "vae_name", "unet_name", "clip_name", "clip_name1", "clip_name2", "model_name"}


def covered_templates() -> list[Path]:
    try:
        import comfyui_workflow_templates_json as package
    except ImportError:
        return []
    known = set(default_registry().object_info())
    found = []
    for path in sorted((Path(package.__file__).parent / "templates").glob("*.json")):
        workflow = json.loads(path.read_text())
        if not isinstance(workflow, dict) or "nodes" not in workflow:
            continue
        subgraphs = workflow.get("definitions", {}).get("subgraphs", [])
        types = {n.get("type") for n in workflow["nodes"]} | {n.get("type") for s in subgraphs for n in s.get("nodes", [])}
        types -= {s["id"] for s in subgraphs} | FRONTEND_ONLY
        if types and types <= known:
            found.append(path)
    return found


TEMPLATES = covered_templates()


def test_the_sdxl_templates_are_covered():
    names = {p.name for p in TEMPLATES}
    assert {"sdxl_simple_example.json", "sdxlturbo_example.json", "sdxl_refiner_prompt_example.json"} <= names


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_template_validates_with_only_missing_models_and_runs_on_tiny_checkpoints(template, tiny_models, tmp_path):
    from engine.errors import ValidationFailed

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models, copy_function=os.link)
    session = Session(settings=Settings(models_dir=models, output_dir=tmp_path / "out", device="cpu"))
    workflow = json.loads(template.read_text())
    with pytest.raises(ValidationFailed) as failed:
        session.execute(workflow)
    errors = failed.value.errors
    assert errors and all(e.input in MODEL_INPUTS and "not among the choices" in e.message for e in errors), errors
    # a checkpoint of the SD families is run on a tiny one of the same family; other families
    # (UNet and text-encoder files of models run-graph does not have) are only validated
    if any(e.node_type not in ("CheckpointLoaderSimple", "CheckpointLoader") for e in errors):
        return  # a template of another family (its own UNet and text encoder files): validated only
    for error in errors:  # install a tiny checkpoint of the right family under the asked-for name
        wanted = str(error.message).split("'")[1]
        source = "tiny_sdxl_refiner" if "refiner" in wanted else "tiny_sd15" if "v1-5" in wanted else "tiny_sdxl"
        os.link(tiny_models / "checkpoints" / f"{source}.safetensors", models / "checkpoints" / wanted)
    for node in workflow["nodes"]:  # small and short: the tiny models on a CPU
        if node["type"] == "EmptyLatentImage":
            node["widgets_values"][:2] = [64, 64]
        elif node["type"] == "KSampler":
            node["widgets_values"][2] = 3
        elif node["type"] == "KSamplerAdvanced":
            node["widgets_values"][3] = min(node["widgets_values"][3], 4)
    result = session.execute(workflow)
    assert result.status == "ok" and result.files
