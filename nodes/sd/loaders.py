"""CheckpointLoaderSimple, CheckpointLoader and CLIPSetLastLayer.

The loader reads only the checkpoint's header to tell the family and UNet layout (validation
does the same, so a file that is not a checkpoint is reported before anything runs); the
weights load on first use, each part on its own.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from engine import Link, ModelLoadError, Node, NodeOutput, Widget

from ..core.vae import VAE, model_files, model_path
from .models import DiffusionModel, TextEncoders

CHECKPOINT_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")
CONFIG_EXTENSIONS = (".yaml",)


def _checkpoints(vctx) -> list[str]:
    return model_files(vctx.settings, "checkpoints", CHECKPOINT_EXTENSIONS)


def _configs(vctx) -> list[str]:
    return model_files(vctx.settings, "configs", CONFIG_EXTENSIONS)


@dataclass(frozen=True)
class CheckpointOut(NodeOutput):
    MODEL: DiffusionModel
    CLIP: TextEncoders
    VAE: VAE


def _checkpoint_problem(settings, name) -> str | None:
    try:
        path = settings.model_file("checkpoints", name, "ckpt_name")
    except FileNotFoundError as exc:
        return str(exc)
    stat = path.stat()
    return _detection_problem(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _detection_problem(path: str, size: int, mtime_ns: int) -> str | None:
    """Whether the file is a checkpoint run-graph knows; remembered per file version, so that
    validating a prompt (a server does it per request) reads each header once."""
    from ..core.state_files import CheckpointFile
    from .checkpoint import detect

    try:
        detect(CheckpointFile(path))
    except ModelLoadError as exc:
        return str(exc)
    return None


def load_checkpoint(ctx, name: str) -> CheckpointOut:
    from ..core.state_files import CheckpointFile
    from .checkpoint import VAE_PREFIX, detect

    path = model_path(ctx.settings, "checkpoints", name, "ckpt_name")
    info = detect(CheckpointFile(path))
    model = DiffusionModel(str(path), info.family.name, info.unet_prefix, json.dumps(info.unet_config, sort_keys=True),
                           info.prediction, ctx.device, info.zero_terminal_snr, continuous=info.continuous,
                           stored_edm=info.continuous is not None and not info.playground,
                           playground=info.playground)
    clip = TextEncoders.of_checkpoint(str(path), info.family.name, ctx.device,
                                      embeddings_dirs=(str(ctx.settings.models_dir / "embeddings"),))
    return CheckpointOut(model, clip, VAE(str(path), ctx.device, VAE_PREFIX))


class CheckpointLoaderSimple(Node):
    """A single-file SD1.x / SD2.x / SDXL checkpoint from `<models>/checkpoints`."""

    class_type = "CheckpointLoaderSimple"
    display_name = "Load Checkpoint"
    category = "loaders"
    loads_models = True

    ckpt_name: str = Widget(choices=_checkpoints)

    @classmethod
    def fingerprint(cls, constants, settings):
        return settings.file_sha256(settings.model_file("checkpoints", constants["ckpt_name"], "ckpt_name"))

    @classmethod
    def check_inputs(cls, constants, linked_types, vctx):
        name = constants.get("ckpt_name")
        problem = _checkpoint_problem(vctx.settings, name) if isinstance(name, str) and name in _checkpoints(vctx) else None
        return [("ckpt_name", problem)] if problem else []

    def execute(self, ctx) -> CheckpointOut:
        return load_checkpoint(ctx, self.ckpt_name)


class CheckpointLoader(Node):
    """The deprecated loader with a config file; the config is not needed (the layout is read
    off the weights) and is ignored, as ComfyUI ignores it today."""

    class_type = "CheckpointLoader"
    display_name = "Load Checkpoint With Config (DEPRECATED)"
    category = "advanced/loaders"
    loads_models = True

    config_name: str = Widget(choices=_configs)
    ckpt_name: str = Widget(choices=_checkpoints)

    fingerprint = CheckpointLoaderSimple.fingerprint
    check_inputs = CheckpointLoaderSimple.check_inputs

    def execute(self, ctx) -> CheckpointOut:
        return load_checkpoint(ctx, self.ckpt_name)


@dataclass(frozen=True)
class ClipOut(NodeOutput):
    CLIP: TextEncoders


class CLIPSetLastLayer(Node):
    """Read the text encoders' hidden state at layer `stop_at_clip_layer` (−1 last, −2 penultimate)."""

    class_type = "CLIPSetLastLayer"
    display_name = "CLIP Set Last Layer"
    category = "conditioning"

    clip: TextEncoders = Link()
    stop_at_clip_layer: int = Widget(-1, ge=-24, le=-1)

    def execute(self, ctx) -> ClipOut:
        from dataclasses import replace

        return ClipOut(replace(self.clip, layer=self.stop_at_clip_layer))


LORA_EXTENSIONS = (".safetensors", ".sft", ".pt", ".ckpt", ".bin", ".pth")


def _loras(vctx) -> list[str]:
    return model_files(vctx.settings, "loras", LORA_EXTENSIONS)


def _lora_path(ctx, name: str) -> str:
    return str(model_path(ctx.settings, "loras", name, "lora_name"))


def _lora_fingerprint(cls, constants, settings):
    return settings.file_sha256(settings.model_file("loras", constants["lora_name"], "lora_name"))


@dataclass(frozen=True)
class ModelClipOut(NodeOutput):
    MODEL: DiffusionModel
    CLIP: TextEncoders


@dataclass(frozen=True)
class ModelOut(NodeOutput):
    MODEL: DiffusionModel


class LoraLoader(Node):
    """Add a LoRA to the model and the text encoders, each with its strength. The cached models
    are untouched: the patches apply while sampling or encoding and are undone after."""

    class_type = "LoraLoader"
    display_name = "Load LoRA"
    category = "loaders"
    loads_models = True

    model: DiffusionModel = Link()
    clip: TextEncoders = Link()
    lora_name: str = Widget(choices=_loras)
    strength_model: float = Widget(1.0, ge=-100.0, le=100.0, step=0.01)
    strength_clip: float = Widget(1.0, ge=-100.0, le=100.0, step=0.01)

    fingerprint = classmethod(_lora_fingerprint)

    def execute(self, ctx) -> ModelClipOut:
        from dataclasses import replace

        from .lora import read_adapters
        from .models import LoraPatch

        if self.strength_model == 0 and self.strength_clip == 0:
            return ModelClipOut(self.model, self.clip)
        path = _lora_path(ctx, self.lora_name)
        read_adapters(path)  # a file that is no LoRA fails here, naming this node
        model = self.model.with_loras(LoraPatch(path, self.strength_model)) if self.strength_model else self.model
        clip = replace(self.clip, loras=self.clip.loras + (LoraPatch(path, self.strength_clip),)) \
            if self.strength_clip else self.clip
        return ModelClipOut(model, clip)


class LoraLoaderModelOnly(Node):
    """Add a LoRA to the model only."""

    class_type = "LoraLoaderModelOnly"
    display_name = "LoraLoaderModelOnly"
    category = "loaders"
    loads_models = True

    model: DiffusionModel = Link()
    lora_name: str = Widget(choices=_loras)
    strength_model: float = Widget(1.0, ge=-100.0, le=100.0, step=0.01)

    fingerprint = classmethod(_lora_fingerprint)

    def execute(self, ctx) -> ModelOut:
        from .lora import read_adapters
        from .models import LoraPatch

        if self.strength_model == 0:
            return ModelOut(self.model)
        path = _lora_path(ctx, self.lora_name)
        read_adapters(path)
        return ModelOut(self.model.with_loras(LoraPatch(path, self.strength_model)))
