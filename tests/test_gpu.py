"""The GPU path, on the tiny models: `pytest -m gpu`, skipped where there is no CUDA device."""
import gc
import shutil

import pytest
import torch

from engine import Session, Settings

from .kolors_graphs import txt2img

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def cuda_session(models, tmp_path, **settings) -> Session:
    return Session(settings=Settings(models_dir=models, output_dir=tmp_path, device="cuda", **settings), cache=False)


def test_initial_noise_is_the_wrappers_draw_on_cuda_and_cpu_noise_differs(tiny_models, tmp_path):
    from diffusers import KolorsPipeline

    from nodes.kolors.sampler import make_scheduler

    from .kolors_reference import reference_parts

    session = cuda_session(tiny_models, tmp_path)
    graph = txt2img("a cat|a red dog", steps=3, size=64, precision="fp16", seed=42)
    ours = session.execute(graph)
    assert ours.metadata["14"]["noise"] == {"device": "cuda", "dtype": "float16"}
    parts = reference_parts(tiny_models, tmp_path)
    pipe = KolorsPipeline(**parts, scheduler=make_scheduler("EulerDiscreteScheduler"),
                          force_zeros_for_empty_prompt=False).to("cuda", torch.float16)
    # With no latents given, the pipeline draws as the wrapper does: CUDA Philox, fp16.
    theirs = pipe(prompt=["a cat", "a red dog"], num_inference_steps=3, guidance_scale=5.0, height=64, width=64,
                  generator=torch.Generator("cuda").manual_seed(42), output_type="latent").images.float()
    mine = ours.outputs["14"].LATENT.samples.cuda() * 0.13025
    assert torch.allclose(mine, theirs, rtol=1e-2, atol=2e-2)
    graph["14"]["inputs"]["noise_device"] = "cpu"
    on_cpu = session.execute(graph).outputs["14"].LATENT.samples.cuda() * 0.13025
    assert (on_cpu - theirs).abs().max().item() > 0.1


def test_fp16_unet_steps_its_scheduler_in_fp32_and_stays_close_to_an_fp32_run(tiny_models, tmp_path):
    session = cuda_session(tiny_models, tmp_path, noise_device="cpu")  # the same draw at both precisions
    half = session.execute(txt2img(steps=4, precision="fp16", seed=3))
    unet = next(m for k, m in session.models._models.items() if k[0] == "kolors-unet")
    assert unet.dtype == torch.float16
    full = session.execute(txt2img(steps=4, precision="fp32", seed=3))
    a, b = half.outputs["14"].LATENT.samples, full.outputs["14"].LATENT.samples
    assert a.dtype == torch.float32 and torch.isfinite(a).all()  # handed on in fp32
    # diffusers' Euler step computes in fp32 whatever the UNet's dtype: only the UNet rounds.
    assert (a - b).abs().max().item() < 0.1 * b.abs().max().item()


def test_the_bf16_vae_never_returns_nan_or_black_images(tiny_models, tmp_path):
    from nodes.core.vae import vae_compute_dtype

    session = cuda_session(tiny_models, tmp_path)
    for seed in range(4):
        pixels = session.execute(txt2img(steps=2, precision="fp16", seed=seed, size=128)).outputs["10"].IMAGE.pixels
        assert torch.isfinite(pixels).all() and pixels.std() > 1e-3 and pixels.max() > 0
    vae = next(m for k, m in session.models._models.items() if k[0] == "vae")
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    assert vae.dtype == vae_compute_dtype("cuda") == expected


def test_quantized_chatglm_on_cuda_stays_close_to_fp16(tiny_models, tmp_path):
    session = cuda_session(tiny_models, tmp_path)
    embeds = {}
    for precision in ("fp16", "quant8", "quant4"):
        graph = txt2img(steps=1, precision="fp16")
        graph["13"]["inputs"]["precision"] = precision
        embeds[precision] = session.execute(graph).outputs["12"].kolors_embeds.prompt_embeds.float()
    for precision, limit in (("quant8", 0.05), ("quant4", 0.5)):
        rel = (embeds[precision] - embeds["fp16"]).norm() / embeds["fp16"].norm()
        assert 0 < rel < limit, (precision, rel)


def test_lora_merge_on_cuda_is_exact_and_the_restore_bit_for_bit(tiny_models, tmp_path):
    from nodes.kolors.lora import lora_applied
    from nodes.kolors.models import KolorsModel, LoraSpec

    from .test_kolors_lora import diffsynth_keys, load_unet, trained_adapter

    path = tmp_path / "style.ckpt"
    torch.save(diffsynth_keys(trained_adapter(load_unet(tiny_models), seed=0)), path)
    unet = KolorsModel(str(tiny_models / "diffusers" / "Kolors"), "fp16", "cuda").load()
    before = {n: p.detach().clone() for n, p in unet.named_parameters()}
    with lora_applied(unet, (LoraSpec(str(path), alpha=2.0),)):
        changed = [n for n, p in unet.named_parameters() if not torch.equal(p, before[n])]
        assert changed and all(unet.get_submodule(n.rsplit(".", 1)[0]).weight.dtype == torch.float16 for n in changed)
    assert all(torch.equal(p, before[n]) for n, p in unet.named_parameters())


def test_a_run_under_a_small_vram_budget_offloads_and_gives_the_same_image(tiny_models, tmp_path):
    free = cuda_session(tiny_models, tmp_path / "free")
    expected = free.execute(txt2img(steps=2, precision="fp16")).outputs["10"].IMAGE.pixels
    sizes = free.models.sizes()
    kind = {key[0]: key for key in sizes}
    budget = max(sizes.values()) + 1024  # any one model fits, never the encoder and the UNet together
    assert sizes[kind["chatglm3"]] + sizes[kind["kolors-unet"]] > budget
    tight = cuda_session(tiny_models, tmp_path / "tight", vram_budget=budget)
    got = tight.execute(txt2img(steps=2, precision="fp16")).outputs["10"].IMAGE.pixels
    assert ("offload", kind["chatglm3"]) in tight.models.log
    assert ((got * 255).to(torch.uint8) == (expected * 255).to(torch.uint8)).all()


def test_vram_returns_to_its_starting_level_after_20_runs(tiny_models, tmp_path):
    def released(session: Session) -> int:
        session.models.clear()
        session.cache.clear()
        gc.collect()
        torch.cuda.empty_cache()
        return torch.cuda.memory_allocated()

    # One run first: CUDA libraries keep workspaces (cuBLAS) for the life of the process.
    start = released(_run(Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path, device="cuda")), 0))
    session = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path, device="cuda"))
    _run(session, 1)
    steady = torch.cuda.memory_allocated()
    for seed in range(2, 21):
        _run(session, seed)
    assert torch.cuda.memory_allocated() <= steady + 2**20  # no growth from run to run
    assert released(session) <= start + 2**20


def _run(session: Session, seed: int) -> Session:
    assert session.execute(txt2img(steps=2, precision="fp16", seed=seed)).status == "ok"
    return session


def test_a_compiled_unet_sees_lora_merges_and_restores(tiny_models, tmp_path):
    from .test_kolors_lora import diffsynth_keys, load_unet, trained_adapter, with_lora

    torch.save(diffsynth_keys(trained_adapter(load_unet(tiny_models), seed=0)), tmp_path / "style.ckpt")
    shutil.copy(tmp_path / "style.ckpt", tiny_models / "loras" / "gpu-test-style.ckpt")
    graphs = [txt2img(steps=2, precision="fp16"), with_lora(txt2img(steps=2, precision="fp16"), "gpu-test-style.ckpt", 2.0),
              txt2img(steps=2, precision="fp16")]
    eager = [cuda_session(tiny_models, tmp_path / "e").execute(g).outputs["14"].LATENT.samples for g in graphs]
    compiled_session = cuda_session(tiny_models, tmp_path / "c", compile=True)
    compiled = [compiled_session.execute(g).outputs["14"].LATENT.samples for g in graphs]
    assert torch.allclose(eager[0], compiled[0], atol=2e-2, rtol=1e-2)
    # The LoRA's effect is small on the tiny model: compare its direction, not a tolerance.
    effect_eager, effect_compiled = (eager[1] - eager[0]).flatten(), (compiled[1] - compiled[0]).flatten()
    assert torch.nn.functional.cosine_similarity(effect_eager, effect_compiled, dim=0) > 0.9
    assert torch.equal(compiled[0], compiled[2])  # restored exactly under the compiled graph too
