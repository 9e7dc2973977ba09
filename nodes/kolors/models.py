"""Kolors model handles: what loader nodes return and `ctx.models` turns into modules.

A handle names files, precision and device; loading happens once, on the first node that needs
the weights, and the store keeps the module for later runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import EdgeValue, ModelLoadError

PRECISIONS = ("fp16", "bf16", "fp32")


def compute_dtype(precision: str, device: str):
    """The dtype a model runs in. fp16 on the CPU runs in fp32: half-precision CPU kernels are
    slow or missing, and ComfyUI makes the same choice there."""
    import torch

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    return torch.float32 if device == "cpu" and dtype == torch.float16 else dtype


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA applied on top of the base UNet (see lora.py): scale = strength · alpha / rank, the
    alpha given by the node (LoadKolorsLoRA) or else the one stored in the file."""

    path: str
    alpha: float | None = None
    strength: float = 1.0


@dataclass(frozen=True)
class KolorsModel(EdgeValue):
    """The Kolors UNet folder (`<models>/diffusers/Kolors`), its precision and LoRAs to apply."""

    comfy_type = "KOLORSMODEL"
    folder: str
    precision: str
    device: str
    loras: tuple[LoraSpec, ...] = ()
    compile: bool = False  # torch.compile, in place: module names (LoRA targets) stay as they are

    @property
    def cache_key(self):
        # LoRAs are not part of the key: they are patched onto the one cached base model.
        return ("kolors-unet", self.folder, self.precision, self.device) + (("compiled",) if self.compile else ())

    def estimated_bytes(self) -> int:
        """Size once loaded, from the weight files (fp16 on disk) and the compute dtype."""
        import torch

        stored = sum(f.stat().st_size for f in (Path(self.folder) / "unet").glob("*.safetensors"))
        return stored * torch.finfo(compute_dtype(self.precision, self.device)).bits // 16

    def load(self) -> Any:
        from diffusers import UNet2DConditionModel

        unet_dir = Path(self.folder) / "unet"
        variant = "fp16" if (unet_dir / "diffusion_pytorch_model.fp16.safetensors").exists() else None
        try:
            unet = UNet2DConditionModel.from_pretrained(
                self.folder, subfolder="unet", variant=variant, local_files_only=True,
                dtype=compute_dtype(self.precision, self.device))
        except Exception as exc:  # noqa: BLE001 - diffusers raises many kinds for bad folders
            raise ModelLoadError(f"cannot load the Kolors UNet from {unet_dir}: "
                                 f"{type(exc).__name__}: {str(exc)[:400]}") from exc
        unet = unet.to(self.device).eval()
        if self.compile:
            unet.compile()
        return unet


@dataclass(frozen=True)
class ChatGLM3(EdgeValue):
    """ChatGLM3 text encoder + tokenizer: a folder in the transformers layout (the Kolors repo's
    text_encoder), or a single `checkpoint` file with the tokenizer in `folder`; and how to hold
    its weights."""

    comfy_type = "CHATGLM3MODEL"
    folder: str
    precision: str  # fp16 | quant8 | quant4
    device: str
    checkpoint: str = ""
    stored_quantized: bool = False  # the checkpoint holds int8 / packed int4 weights already

    @property
    def cache_key(self):
        return ("chatglm3", self.folder, self.precision, self.device) + ((self.checkpoint,) if self.checkpoint else ())

    def estimated_bytes(self) -> int:
        import torch

        if self.checkpoint:
            stored = Path(self.checkpoint).stat().st_size
        else:
            stored = sum(f.stat().st_size for pattern in ("*.bin", "*.safetensors")
                         for f in Path(self.folder).glob(pattern))
        if self.stored_quantized:
            return stored
        if self.precision != "fp16":  # nearly all weights are quantized Linears
            return stored * (8 if self.precision == "quant8" else 4) // 16
        return stored * torch.finfo(compute_dtype("fp16", self.device)).bits // 16

    def load(self) -> tuple[Any, Any]:
        from diffusers.pipelines.kolors import ChatGLMModel, ChatGLMTokenizer

        from .chatglm_file import load_chatglm_file
        from .quant import quantize_chatglm_

        dtype = compute_dtype("fp16", self.device)
        source = self.checkpoint or self.folder
        try:
            if self.checkpoint:
                model = load_chatglm_file(self.checkpoint, dtype, "cpu")
            else:
                # The dtype is always explicit: transformers 5 honours config.json's float16 otherwise.
                model = ChatGLMModel.from_pretrained(self.folder, dtype=dtype, local_files_only=True)
            tokenizer = ChatGLMTokenizer.from_pretrained(self.folder, local_files_only=True)
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot load ChatGLM3 from {source}: "
                                 f"{type(exc).__name__}: {str(exc)[:400]}") from exc
        if self.precision in ("quant8", "quant4") and not self.stored_quantized:
            quantize_chatglm_(model, 8 if self.precision == "quant8" else 4)
        return model.to(self.device).eval(), tokenizer


@dataclass(frozen=True, eq=False)
class KolorsEmbeds(EdgeValue):
    """Text conditioning: [B, 256, H] embeds and [B, H] pooled vectors, positive and negative."""

    comfy_type = "KOLORS_EMBEDS"
    prompt_embeds: Any
    negative_prompt_embeds: Any
    pooled_prompt_embeds: Any
    negative_pooled_prompt_embeds: Any
