"""Tiny model layout, the single-file VAE round trip, and ChatGLM weight-only quantization."""
import torch
from diffusers import AutoencoderKL
from torch import nn

from nodes.core.vae import VAE
from nodes.kolors.quant import QuantizedLinear
from nodes.core.ldm_keys import diffusers_vae_to_ldm
from nodes.kolors.tiny import VAE_CONFIG


def test_tiny_models_have_the_real_kolors_layout(tiny_models):
    kolors = tiny_models / "diffusers" / "Kolors"
    for rel in ("model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                "unet/diffusion_pytorch_model.fp16.safetensors", "text_encoder/config.json",
                "text_encoder/pytorch_model.bin.index.json", "text_encoder/pytorch_model-00001-of-00002.bin",
                "text_encoder/tokenizer.model", "text_encoder/tokenizer_config.json"):
        assert (kolors / rel).is_file(), rel
    assert (tiny_models / "vae" / "sdxl.vae.safetensors").is_file()
    kolors_files = [f for folder in ("diffusers", "vae") for f in (tiny_models / folder).rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in kolors_files) < 15_000_000


def test_ldm_single_file_vae_loads_back_exactly(tmp_path):
    from safetensors.torch import save_file

    config = {k: v for k, v in VAE_CONFIG.items() if not k.startswith("_")}
    torch.manual_seed(0)
    original = AutoencoderKL(**config)
    save_file(diffusers_vae_to_ldm(original.state_dict()), str(tmp_path / "v.safetensors"))
    loaded = VAE(str(tmp_path / "v.safetensors"), "cpu").load()
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_quantized_linear_is_close_and_exact_on_representable_weights():
    torch.manual_seed(0)
    linear = nn.Linear(64, 16, bias=True)
    x = torch.randn(3, 64)
    for bits, tolerance in ((8, 0.02), (4, 0.35)):
        q = QuantizedLinear.of(linear, bits)
        assert q.weight.dtype == torch.int8 and q.weight_scale.shape == (16,)
        assert q.weight.numel() == 64 * 16 // (1 if bits == 8 else 2)
        rel = (q(x) - linear(x)).norm() / linear(x).norm()
        assert rel < tolerance, (bits, rel)
    # Weights that are exact multiples of the row scale survive 4-bit packing bit for bit.
    exact = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        exact.weight.copy_(torch.tensor([[-7.0, 3.0, 0.0, 7.0], [1.0, -2.0, 6.0, -7.0]]))
    packed = QuantizedLinear.of(exact, 4)
    assert torch.equal(packed.dequantized(torch.float32), exact.weight)
    # ChatGLM's packing (compress_int4_weight): the even column in the high nibble. -7 = 0x9, 3 = 0x3.
    assert packed.weight.view(torch.uint8)[0].tolist() == [0x93, 0x07]


def test_quantized_text_encoder_runs_and_stays_close(tiny_models, tmp_path):
    from engine import Session, Settings

    from .kolors_graphs import txt2img

    session = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path, device="cpu"))
    embeds = {}
    for precision in ("fp16", "quant8", "quant4"):
        graph = txt2img(steps=1)
        graph["13"]["inputs"]["precision"] = precision
        embeds[precision] = session.execute(graph).outputs["12"].kolors_embeds.prompt_embeds
    for precision, limit in (("quant8", 0.05), ("quant4", 0.5)):
        rel = (embeds[precision] - embeds["fp16"]).norm() / embeds["fp16"].norm()
        assert 0 < rel < limit, (precision, rel)
