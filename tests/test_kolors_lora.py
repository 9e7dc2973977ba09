"""Kolors LoRAs on the tiny UNet: DiffSynth, peft and kohya files, exact merge math, the image
against peft at inference, clean removal, refusals."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors.torch import save_file

from engine import Session, Settings
from engine.cli import main
from nodes.kolors.lora import DIFFSYNTH_BLOCKS, lora_applied
from nodes.kolors.models import KolorsModel, LoraSpec

from .kolors_graphs import txt2img
from .kolors_reference import reference_parts, reference_run

RANK, TRAIN_ALPHA = 4, 4.0
LORA_KEY = re.compile(r"^(.+)\.lora_([AB])\.default\.weight$")
SGM = {"down_blocks.1.attentions.0": "input_blocks_4_1", "down_blocks.1.attentions.1": "input_blocks_5_1",
       "down_blocks.2.attentions.0": "input_blocks_7_1", "down_blocks.2.attentions.1": "input_blocks_8_1",
       "mid_block.attentions.0": "middle_block_1"} | {
    f"up_blocks.{b}.attentions.{i}": f"output_blocks_{3 * b + i}_1" for b in (0, 1) for i in range(3)}


def trained_adapter(unet, seed: int, alpha: float = TRAIN_ALPHA) -> dict[str, torch.Tensor]:
    """Inject a LoRA the way DiffSynth's trainer does (peft, gaussian init, the attention Linears)
    and give B random values, as training would. Returns peft's own state dict of the adapter.
    The values depend on the seed only; alpha sets peft's scale (alpha / rank) at inference."""
    torch.manual_seed(seed)
    config = LoraConfig(r=RANK, lora_alpha=alpha, init_lora_weights="gaussian",
                        target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    inject_adapter_in_model(config, unet)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(0, 0.3)
    return {k: v.detach().clone() for k, v in unet.state_dict().items() if ".lora_" in k}


def diffsynth_keys(adapter: dict) -> dict:
    """peft's diffusers names -> DiffSynth's SDXLUNet names (blocks.N, to_out without .0)."""
    block_of = {prefix: index for index, prefix in DIFFSYNTH_BLOCKS.items()}
    renamed = {}
    for key, tensor in adapter.items():
        prefix, rest = re.match(r"^(.+?\.attentions\.\d+)\.(.+)$", key).groups()
        renamed[f"blocks.{block_of[prefix]}.{rest.replace('.to_out.0.', '.to_out.')}"] = tensor
    return renamed


def kohya_keys(adapter: dict, sgm: bool) -> dict:
    """The same adapter as a kohya file: lora_unet_<flat name>.lora_down/up + the training alpha."""
    state = {}
    for key, tensor in adapter.items():
        name, half = LORA_KEY.match(key).groups()
        if sgm:
            prefix = next(p for p in SGM if name.startswith(p + "."))
            name = SGM[prefix] + "." + name[len(prefix) + 1:]
        flat = "lora_unet_" + name.replace(".", "_")
        state[f"{flat}.{'lora_down' if half == 'A' else 'lora_up'}.weight"] = tensor.contiguous()
        state[f"{flat}.alpha"] = torch.tensor(TRAIN_ALPHA)
    return state


def load_unet(models: Path):
    return KolorsModel(str(models / "diffusers" / "Kolors"), "fp32", "cpu").load()


@pytest.fixture(scope="module")
def lora_models(tiny_models, tmp_path_factory):
    """Tiny models plus LoRA files: one adapter in four formats, and a second adapter."""
    models = tmp_path_factory.mktemp("lora") / "models"
    shutil.copytree(tiny_models, models)
    loras = models / "loras"
    unet = load_unet(models)
    adapter = trained_adapter(unet, seed=0)
    torch.save(diffsynth_keys(adapter), loras / "epoch=0-step=500.ckpt")
    peft_state = get_peft_model_state_dict(unet)  # drops the adapter name, as diffusers files do
    save_file({f"unet.{k}": v.contiguous() for k, v in peft_state.items()}, loras / "peft.safetensors")
    save_file(kohya_keys(adapter, sgm=True), loras / "kohya_sgm.safetensors")
    save_file(kohya_keys(adapter, sgm=False), loras / "kohya.bin")  # safetensors whatever the name
    torch.save(diffsynth_keys(trained_adapter(load_unet(models), seed=1)), loras / "second.ckpt")
    return models


def with_lora(graph: dict, path: str, alpha: float, node="LoadKolorsLoRA", node_id="16", source="6") -> dict:
    graph = json.loads(json.dumps(graph))
    inputs = {"lora_path": path, "lora_alpha": alpha} if node == "LoadKolorsLoRA" else \
        {"lora_name": path, "strength_model": alpha}
    graph[node_id] = {"class_type": node, "inputs": {"kolors_model": [source, 0], **inputs}}
    graph["14"]["inputs"]["kolors_model"] = [node_id, 0]
    return graph


def merged_weights(models: Path, *specs: LoraSpec) -> dict[str, torch.Tensor]:
    unet = load_unet(models)
    before = {n: p.detach().clone() for n, p in unet.named_parameters()}
    with lora_applied(unet, specs):
        merged = {n: p.detach().clone() for n, p in unet.named_parameters() if not torch.equal(p, before[n])}
    assert all(torch.equal(p, before[n]) for n, p in unet.named_parameters())  # restored exactly
    return merged


def test_diffsynth_merge_is_w_plus_alpha_over_rank_b_a_on_every_adapted_layer(lora_models):
    path = lora_models / "loras" / "epoch=0-step=500.ckpt"
    state = torch.load(path, weights_only=True)
    merged = merged_weights(lora_models, LoraSpec(str(path), alpha=2.0))
    assert len(merged) == len(state) // 2  # one weight per A/B pair, nothing else
    base = load_unet(lora_models).state_dict()
    for key in ("blocks.21.transformer_blocks.1.attn1.to_out", "blocks.7.transformer_blocks.0.attn2.to_k"):
        block, rest = re.match(r"blocks\.(\d+)\.(.+)", key).groups()
        name = f"{DIFFSYNTH_BLOCKS[int(block)]}.{rest.replace('to_out', 'to_out.0')}.weight"
        a, b = state[f"{key}.lora_A.default.weight"], state[f"{key}.lora_B.default.weight"]
        assert torch.allclose(merged[name], base[name] + (2.0 / RANK) * (b @ a), atol=1e-6)


def test_peft_and_kohya_files_merge_exactly_like_the_diffsynth_checkpoint(lora_models):
    loras = lora_models / "loras"
    reference = merged_weights(lora_models, LoraSpec(str(loras / "epoch=0-step=500.ckpt"), alpha=2.0))
    peft = merged_weights(lora_models, LoraSpec(str(loras / "peft.safetensors"), alpha=2.0))
    # kohya files carry the training alpha (4): strength 0.5 is alpha 2 over rank 4.
    kohya_sgm = merged_weights(lora_models, LoraSpec(str(loras / "kohya_sgm.safetensors"), strength=0.5))
    kohya_flat = merged_weights(lora_models, LoraSpec(str(loras / "kohya.bin"), strength=0.5))
    for other in (peft, kohya_sgm, kohya_flat):
        assert other.keys() == reference.keys() and all(torch.equal(other[k], reference[k]) for k in reference)


def test_two_loras_in_a_chain_add_up(lora_models):
    loras = lora_models / "loras"
    first, second = LoraSpec(str(loras / "epoch=0-step=500.ckpt"), alpha=2.0), LoraSpec(str(loras / "second.ckpt"), 1.0)
    both = merged_weights(lora_models, first, second)
    base = load_unet(lora_models).state_dict()
    one, two = merged_weights(lora_models, first), merged_weights(lora_models, second)
    for name in both:
        assert torch.allclose(both[name], one[name] + two[name] - base[name], atol=1e-6)


def test_image_matches_the_same_adapter_run_by_peft_at_inference(lora_models, tmp_path):
    parts = reference_parts(lora_models, tmp_path)
    # The very adapter written to the files (same seed), unmerged, at the node's alpha as the
    # Datawhale node injects it.
    trained_adapter(parts["unet"], seed=0, alpha=2.0)
    theirs = reference_run(parts, "EulerDiscreteScheduler", ["a cat"], cfg=5.0, steps=3, seed=5, size=64,
                           output_type="pt").permute(0, 2, 3, 1)
    session = Session(settings=Settings(models_dir=lora_models, output_dir=tmp_path / "out", device="cpu"))
    graph = with_lora(txt2img("a cat", steps=3, seed=5), "epoch=0-step=500.ckpt", 2.0)
    ours = session.execute(graph).outputs["10"].IMAGE.pixels
    base = session.execute(txt2img("a cat", steps=3, seed=5)).outputs["10"].IMAGE.pixels
    assert (ours - theirs).abs().max().item() <= 1e-4 < (base - theirs).abs().max().item()


def test_strength_node_and_chain_run_end_to_end(lora_models, tmp_path):
    session = Session(settings=Settings(models_dir=lora_models, output_dir=tmp_path, device="cpu"))
    base = txt2img(steps=2)
    alpha_two = session.execute(with_lora(base, "epoch=0-step=500.ckpt", 2.0)).outputs["14"].LATENT.samples
    half = session.execute(with_lora(base, "kohya_sgm.safetensors", 0.5, node="KolorsLoraLoaderModelOnly"))
    assert torch.equal(half.outputs["14"].LATENT.samples, alpha_two)
    chained = with_lora(with_lora(base, "second.ckpt", 1.0), "epoch=0-step=500.ckpt", 2.0, node_id="17", source="16")
    chained["16"]["inputs"]["kolors_model"] = ["6", 0]
    result = session.execute(chained)
    assert result.nodes["17"].status == "executed" and not torch.equal(result.outputs["14"].LATENT.samples, alpha_two)


def test_alpha_zero_equals_base_and_base_after_lora_equals_a_fresh_process(lora_models, tmp_path):
    base = txt2img(steps=2)
    session = Session(settings=Settings(models_dir=lora_models, output_dir=tmp_path / "here", device="cpu"))
    base_latent = session.execute(base).outputs["14"].LATENT.samples
    zero = session.execute(with_lora(base, "epoch=0-step=500.ckpt", 0.0)).outputs["14"].LATENT.samples
    two = session.execute(with_lora(base, "epoch=0-step=500.ckpt", 2.0)).outputs["14"].LATENT.samples
    assert torch.equal(zero, base_latent) and not torch.allclose(two, base_latent, atol=1e-3)
    after = session.execute(txt2img(steps=2, seed=43)).files
    assert set(session.models.load_counts.values()) == {1}  # the base was never reloaded

    (tmp_path / "base.json").write_text(json.dumps(txt2img(steps=2, seed=43)))
    subprocess.run([sys.executable, "-m", "engine.cli", str(tmp_path / "base.json"), "--models-dir", str(lora_models),
                    "--output-dir", str(tmp_path / "fresh"), "--device", "cpu", "--no-cache", "-q"], check=True)
    fresh = sorted((tmp_path / "fresh" / "previews").iterdir())
    assert [Path(f).read_bytes() for f in after] == [f.read_bytes() for f in fresh]


def test_saved_lora_workflow_runs_with_the_absolute_path_falling_back_to_the_loras_folder(lora_models, tmp_path, capsys):
    example = Path(__file__).resolve().parent.parent / "examples" / "kolors_lora.json"
    code = main([str(example), "--models-dir", str(lora_models), "--output-dir", str(tmp_path), "--json", "-q",
                 "--set", "14.width=64", "--set", "14.height=64", "--set", "14.steps=2"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and len(report["files"]) == 1 and report["nodes"]["16"]["status"] == "executed"


def test_malicious_pickle_is_refused_and_not_executed(lora_models, tmp_path, caplog):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"blocks.7.transformer_blocks.0.attn1.to_q.lora_A.default.weight": Payload()},
               lora_models / "loras" / "evil.ckpt")
    (tmp_path / "graph.json").write_text(json.dumps(with_lora(txt2img(steps=1), "evil.ckpt", 2.0)))
    code = main([str(tmp_path / "graph.json"), "--models-dir", str(lora_models), "--output-dir", str(tmp_path), "-q"])
    assert code == 2 and not marker.exists()
    assert "node 16 (LoadKolorsLoRA): refused to load" in caplog.text and "weights_only=False" not in caplog.text


@pytest.mark.parametrize("state", [
    {"blocks.21.transformer_blocks.7.attn1.to_q.lora_A.default.weight": torch.zeros(4, 64),
     "blocks.21.transformer_blocks.7.attn1.to_q.lora_B.default.weight": torch.zeros(64, 4)},
    {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.zeros(4, 640),
     "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.zeros(640, 4),
     "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 768),
     "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(3072, 4)},
], ids=["deeper-unet", "sdxl-sized"])
def test_lora_for_another_architecture_is_refused_listing_unmatched_layers(lora_models, tmp_path, state):
    save_file(state, lora_models / "loras" / "other.safetensors")
    result = Session(settings=Settings(models_dir=lora_models, output_dir=tmp_path, device="cpu")).execute(
        with_lora(txt2img(steps=1), "other.safetensors", 1.0), raise_on_error=False)
    assert result.status == "invalid" and result.errors[0].node_id == "16"
    assert next(iter(state)).rsplit(".lora_", 1)[0] in result.errors[0].message


def test_an_interrupt_in_the_middle_of_the_restore_never_leaves_the_cached_unet_changed(lora_models, tmp_path,
                                                                                        monkeypatch):
    import nodes.kolors.lora as lora

    session = Session(settings=Settings(models_dir=lora_models, output_dir=tmp_path, device="cpu"), cache=False)
    base = txt2img(steps=2)
    clean = session.execute(base).outputs["14"].LATENT.samples
    real_restore = lora.restore_weights

    def interrupted(unet, saved):
        real_restore(unet, dict(list(saved.items())[: len(saved) // 2]))  # half the weights back, then ^C
        raise KeyboardInterrupt

    monkeypatch.setattr(lora, "restore_weights", interrupted)
    with pytest.raises(KeyboardInterrupt):
        session.execute(with_lora(base, "epoch=0-step=500.ckpt", 2.0))
    monkeypatch.undo()
    after = session.execute(base).outputs["14"].LATENT.samples
    assert torch.equal(after, clean)
    unet_key = next(k for k in session.models.load_counts if k[0] == "kolors-unet")
    assert session.models.load_counts[unet_key] == 2  # reloaded, not used half-merged


def test_an_interrupt_while_sampling_with_a_lora_restores_and_keeps_the_loaded_unet(lora_models, tmp_path):
    session = Session(settings=Settings(models_dir=lora_models, output_dir=tmp_path, device="cpu"), cache=False)
    base = txt2img(steps=3)
    clean = session.execute(base).outputs["14"].LATENT.samples

    def interrupt_at_step_two(kind, data):
        if kind == "progress" and data["value"] == 2:
            raise KeyboardInterrupt

    session.on_event = interrupt_at_step_two
    with pytest.raises(KeyboardInterrupt):
        session.execute(with_lora(base, "epoch=0-step=500.ckpt", 2.0))
    session.on_event = lambda kind, data: None
    assert torch.equal(session.execute(base).outputs["14"].LATENT.samples, clean)
    assert set(session.models.load_counts.values()) == {1}  # the restore finished: no reload needed


def test_threads_running_base_and_lora_workflows_on_one_session_get_the_sequential_results(lora_models, tmp_path):
    import threading

    base, styled = txt2img(steps=2), with_lora(txt2img(steps=2), "epoch=0-step=500.ckpt", 2.0)
    sequential = Session(settings=Settings(models_dir=lora_models, output_dir=tmp_path / "seq", device="cpu"),
                         cache=False)
    expected = {name: sequential.execute(g).outputs["14"].LATENT.samples for name, g in (("base", base), ("lora", styled))}
    shared = Session(settings=Settings(models_dir=lora_models, output_dir=tmp_path / "par", device="cpu"), cache=False)
    got, failures = [], []

    def worker(name, graph):
        try:
            for _ in range(3):
                got.append((name, shared.execute(graph).outputs["14"].LATENT.samples))
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=item) for item in (("base", base), ("lora", styled)) * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures and len(got) == 12
    assert all(torch.equal(latent, expected[name]) for name, latent in got)


def test_an_interrupt_in_the_middle_of_the_merge_restores_what_was_merged(lora_models, tmp_path, monkeypatch):
    import nodes.kolors.lora as lora

    session = Session(settings=Settings(models_dir=lora_models, output_dir=tmp_path, device="cpu"), cache=False)
    base = txt2img(steps=2)
    clean = session.execute(base).outputs["14"].LATENT.samples
    real_layers = lora.scaled_layers

    def interrupted_after_half(unet, spec):
        layers = real_layers(unet, spec)
        yield from layers[: len(layers) // 2]
        raise KeyboardInterrupt

    monkeypatch.setattr(lora, "scaled_layers", interrupted_after_half)
    with pytest.raises(KeyboardInterrupt):
        session.execute(with_lora(base, "epoch=0-step=500.ckpt", 2.0))
    monkeypatch.undo()
    assert torch.equal(session.execute(base).outputs["14"].LATENT.samples, clean)
    assert set(session.models.load_counts.values()) == {1}  # restored in place, no reload needed
