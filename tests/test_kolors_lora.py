"""LoadKolorsLoRA: DiffSynth checkpoints on the tiny UNet, exact merge math, clean removal."""
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from engine import Session, Settings
from engine.cli import main
from nodes.kolors.lora import DIFFSYNTH_BLOCKS, lora_applied
from nodes.kolors.models import KolorsModel, LoraSpec

from .kolors_graphs import txt2img

ATTN_LINEAR = re.compile(r"^(.+)\.transformer_blocks\.(\d+\.attn[12]\.(?:to_q|to_k|to_v|to_out\.0))$")


def write_diffsynth_lora(unet, path: Path, rank: int = 4, seed: int = 0) -> dict:
    """A checkpoint in DiffSynth's key scheme (blocks.N..., to_out without .0, lora_A/B.default)."""
    generator = torch.Generator().manual_seed(seed)
    block_of = {v: k for k, v in DIFFSYNTH_BLOCKS.items()}
    state = {}
    for name, module in unet.named_modules():
        if isinstance(module, nn.Linear) and (m := ATTN_LINEAR.match(name)):
            inner = m.group(2).replace("to_out.0", "to_out")
            key = f"blocks.{block_of[m.group(1)]}.transformer_blocks.{inner}"
            state[f"{key}.lora_A.default.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.3
            state[f"{key}.lora_B.default.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.3
    torch.save(state, path)
    return state


@pytest.fixture(scope="module")
def lora_models(tiny_models, tmp_path_factory):
    models = tmp_path_factory.mktemp("lora") / "models"
    shutil.copytree(tiny_models, models)
    unet = KolorsModel(str(models / "diffusers" / "Kolors"), "fp32", "cpu").load()
    write_diffsynth_lora(unet, models / "loras" / "epoch=0-step=500.ckpt")
    return models


def with_lora(graph: dict, path: str, alpha: float) -> dict:
    graph = json.loads(json.dumps(graph))
    graph["16"] = {"class_type": "LoadKolorsLoRA", "inputs": {"kolors_model": ["6", 0], "lora_path": path,
                                                              "lora_alpha": alpha}}
    graph["14"]["inputs"]["kolors_model"] = ["16", 0]
    return graph


def test_diffsynth_keys_map_onto_every_adapted_layer_with_exact_merge_and_restore(lora_models):
    unet = KolorsModel(str(lora_models / "diffusers" / "Kolors"), "fp32", "cpu").load()
    path = lora_models / "loras" / "epoch=0-step=500.ckpt"
    state = torch.load(path, weights_only=True)
    name = "mid_block.attentions.0.transformer_blocks.1.attn1.to_out.0"
    a = state["blocks.21.transformer_blocks.1.attn1.to_out.lora_A.default.weight"]
    b = state["blocks.21.transformer_blocks.1.attn1.to_out.lora_B.default.weight"]
    before = {n: p.detach().clone() for n, p in unet.named_parameters()}
    with lora_applied(unet, (LoraSpec(str(path), 2.0),)):
        merged = unet.get_submodule(name).weight
        assert torch.allclose(merged, before[f"{name}.weight"] + (2.0 / 4) * (b @ a), atol=1e-6)
        changed = [n for n, p in unet.named_parameters() if not torch.equal(p, before[n])]
        assert len(changed) == len(state) // 2  # one weight per A/B pair, nothing else
    assert all(torch.equal(p, before[n]) for n, p in unet.named_parameters())


def test_alpha_zero_equals_base_and_base_after_lora_equals_fresh_process(lora_models, tmp_path):
    settings = Settings(models_dir=lora_models, output_dir=tmp_path, device="cpu")
    base = txt2img(steps=2)
    session = Session(settings=settings)
    base_latent = session.execute(base).outputs["14"].latent.samples
    zero = session.execute(with_lora(base, "epoch=0-step=500.ckpt", 0.0)).outputs["14"].latent.samples
    two = session.execute(with_lora(base, "epoch=0-step=500.ckpt", 2.0)).outputs["14"].latent.samples
    assert torch.equal(zero, base_latent) and not torch.allclose(two, base_latent, atol=1e-3)
    again = session.execute(txt2img(steps=2, seed=43)).outputs["14"].latent.samples
    fresh = Session(settings=settings).execute(txt2img(steps=2, seed=43)).outputs["14"].latent.samples
    assert torch.equal(again, fresh)
    assert set(session.models.load_counts.values()) == {1}  # the base was never reloaded


def test_saved_lora_workflow_runs_with_the_absolute_path_falling_back_to_the_loras_folder(lora_models, tmp_path, capsys):
    example = Path(__file__).resolve().parent.parent / "examples" / "kolors_lora.json"
    code = main([str(example), "--models-dir", str(lora_models), "--output-dir", str(tmp_path), "--json", "-q",
                 "--set", "14.width=64", "--set", "14.height=64", "--set", "14.steps=2"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and len(report["files"]) == 1 and report["nodes"]["16"]["status"] == "executed"


def test_malicious_pickle_is_refused_and_not_executed(lora_models, tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"blocks.7.transformer_blocks.0.attn1.to_q.lora_A.default.weight": Payload()},
               lora_models / "loras" / "evil.ckpt")
    graph = with_lora(txt2img(steps=1), "evil.ckpt", 2.0)
    result = Session(settings=Settings(models_dir=lora_models, output_dir=tmp_path, device="cpu")).execute(
        graph, raise_on_error=False)
    assert result.status == "invalid" and result.errors[0].node_id == "16"
    assert "refused" in result.errors[0].message and not marker.exists()


def test_lora_for_another_architecture_is_refused_listing_unmatched_layers(lora_models, tmp_path):
    state = {"blocks.21.transformer_blocks.7.attn1.to_q.lora_A.default.weight": torch.zeros(4, 64),
             "blocks.21.transformer_blocks.7.attn1.to_q.lora_B.default.weight": torch.zeros(64, 4)}
    torch.save(state, lora_models / "loras" / "other.ckpt")
    result = Session(settings=Settings(models_dir=lora_models, output_dir=tmp_path, device="cpu")).execute(
        with_lora(txt2img(steps=1), "other.ckpt", 1.0), raise_on_error=False)
    assert result.status == "invalid" and "transformer_blocks.7.attn1.to_q" in result.errors[0].message
