"""ComfyUI's own templates whose node types are all built in: those of the package ComfyUI 0.3.64
pins (comfyui-workflow-templates 0.1.95: default, img2img, inpainting, outpainting, LoRA,
embeddings, hires fix, area composition, SDXL, SDXL-turbo, ESRGAN upscaling…) and of the newer
comfyui-workflow-templates-json. Each validates with only missing-model errors; the SD ones then
run on the tiny models, installed under the names the template asks for."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from engine import Session, Settings
from engine.registry import default_registry

FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
MODEL_INPUTS = {"ckpt_name", "lora_name", "vae_name", "unet_name", "clip_name", "clip_name1", "clip_name2", "model_name",
                "control_net_name", "gligen_name"}
PACKAGES = ("comfyui_workflow_templates", "comfyui_workflow_templates_json")
EXAMPLE_INPUTS = Path(__file__).resolve().parent.parent / "examples" / "input"


def covered_templates() -> list:
    import importlib

    known = set(default_registry().object_info())
    found = []
    for name in PACKAGES:
        try:
            package = importlib.import_module(name)
        except ImportError:
            continue
        for path in sorted((Path(package.__file__).parent / "templates").glob("*.json")):
            workflow = json.loads(path.read_text())
            if not isinstance(workflow, dict) or "nodes" not in workflow:
                continue
            subgraphs = workflow.get("definitions", {}).get("subgraphs", [])
            types = {n.get("type") for n in workflow["nodes"]} | {n.get("type") for s in subgraphs for n in s.get("nodes", [])}
            types -= {s["id"] for s in subgraphs} | FRONTEND_ONLY
            if types and types <= known:
                found.append(pytest.param(path, id=f"{name.split('_')[-1]}/{path.stem}"))
    return found


TEMPLATES = covered_templates()


def test_the_classic_templates_are_covered():
    names = {p.values[0].name for p in TEMPLATES}
    assert {"sdxl_simple_example.json", "sdxlturbo_example.json", "sdxl_refiner_prompt_example.json", "default.json",
            "image2image.json", "inpaint_example.json", "inpaint_model_outpainting.json", "lora.json",
            "lora_multiple.json", "embedding_example.json", "hiresfix_latent_workflow.json",
            "area_composition.json", "latent_upscale_different_prompt_model.json", "esrgan_example.json",
            "hiresfix_esrgan_workflow.json", "controlnet_example.json", "2_pass_pose_worship.json",
            "depth_controlnet.json", "mixing_controlnets.json", "sdxl_revision_text_prompts.json",
            "sdxl_revision_zero_positive.json", "depth_t2i_adapter.json", "gligen_textbox_example.json"} <= names


def _install(error, tiny: Path, models: Path, inputs: Path) -> None:
    """A tiny file of the right kind under the name the template asks for."""
    wanted = str(error.message).split("'")[1]
    if error.input == "ckpt_name":
        source = "tiny_sdxl_refiner" if "refiner" in wanted else "tiny_sdxl" if "xl" in wanted.lower() else "tiny_sd15"
        target, origin = models / "checkpoints" / wanted, tiny / "checkpoints" / f"{source}.safetensors"
    elif error.input == "lora_name":
        target, origin = models / "loras" / wanted, tiny / "loras" / "tiny_sd15_kohya.safetensors"
    elif error.input == "model_name" and error.node_type == "UpscaleModelLoader":
        target, origin = models / "upscale_models" / wanted, tiny / "upscale_models" / "tiny_esrgan_x4.safetensors"
    elif error.input == "gligen_name":
        target, origin = models / "gligen" / wanted, tiny / "gligen" / "tiny_gligen_sd15.safetensors"
    elif error.input == "clip_name" and error.node_type == "CLIPVisionLoader":
        target, origin = models / "clip_vision" / wanted, tiny / "clip_vision" / "tiny_clip_vision_g.safetensors"
    elif error.input == "control_net_name":
        source = "tiny_sdxl_controlnet/diffusion_pytorch_model" if "xl" in wanted.lower() else "tiny_sd15_controlnet"
        target, origin = models / "controlnet" / wanted, tiny / "controlnet" / f"{source}.safetensors"
    elif error.input == "vae_name":
        target, origin = models / "vae" / wanted, tiny / "vae" / "tiny_sdxl_vae.safetensors"
    elif error.input == "image":
        target, origin = inputs / wanted, EXAMPLE_INPUTS / "yosemite_inpaint_example.png"
    else:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.link(origin, target)


def _small(workflow: dict) -> None:
    """Small and short: the tiny models on a CPU."""
    for node in workflow["nodes"]:
        values = node.get("widgets_values")
        if node["type"] == "EmptyLatentImage":
            values[:2] = [64, 64]
        elif node["type"] == "KSampler":
            values[2] = min(values[2], 2)
        elif node["type"] == "KSamplerAdvanced":
            values[3] = min(values[3], 4)
        elif node["type"] == "LatentUpscale":
            values[1:3] = [96, 96]
        elif node["type"] == "ConditioningSetArea":
            values[:4] = [64, 64, 0, 0]
        elif node["type"] == "ImageScale":
            values[1:3] = [96, 96]


@pytest.mark.parametrize("template", TEMPLATES)
def test_template_validates_with_only_missing_models_and_runs_on_tiny_models(template, tiny_models, tmp_path):
    from engine.errors import ValidationFailed

    models, inputs = tmp_path / "models", tmp_path / "in"
    shutil.copytree(tiny_models, models, copy_function=os.link)
    inputs.mkdir()
    session = Session(settings=Settings(models_dir=models, input_dir=inputs, output_dir=tmp_path / "out", device="cpu"))
    workflow = json.loads(template.read_text())
    with pytest.raises(ValidationFailed) as failed:
        session.execute(workflow)
    errors = failed.value.errors
    missing_inputs = [e for e in errors if e.input == "image"]
    models_missing = [e for e in errors if e.input in MODEL_INPUTS and "not among the choices" in e.message]
    assert errors and len(missing_inputs) + len(models_missing) == len(errors), errors
    # a checkpoint of the SD families is run on a tiny one of the same family; other families
    # (UNet and text-encoder files of models run-graph does not have) are only validated
    # (T2I-Adapters are not run either: a ControlNet under the adapter's name would prove nothing)
    if any(e.node_type not in ("CheckpointLoaderSimple", "CheckpointLoader", "LoraLoader", "VAELoader",
                               "UpscaleModelLoader", "ControlNetLoader", "CLIPVisionLoader", "GLIGENLoader")
           or "t2i" in e.message.lower() for e in models_missing):
        return
    for error in errors:
        _install(error, tiny_models, models, inputs)
    _small(workflow)
    result = session.execute(workflow)
    assert result.status == "ok" and result.files
