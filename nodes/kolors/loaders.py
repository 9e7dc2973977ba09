"""DownloadAndLoadKolorsModel and DownloadAndLoadChatGLM3 (KwaiKolorsWrapper names and widgets).

They check the folder cheaply (files present, config of the right architecture, safetensors
header readable) and return handles; the weights load on first use.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from engine import ModelLoadError, Node, NodeOutput, Widget

from .models import ChatGLM3, KolorsModel

KOLORS_REPO = "Kwai-Kolors/Kolors"
UNET_FILES = ("diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors")
# What the wrapper downloads for each node (kijai/ComfyUI-KwaiKolorsWrapper nodes.py).
UNET_DOWNLOAD = dict(allow_patterns=["*fp16.safetensors*", "*.json"],
                     ignore_patterns=["vae/*", "text_encoder/*", "tokenizer/*"])
TEXT_ENCODER_DOWNLOAD = dict(allow_patterns=["text_encoder/*"], ignore_patterns=["*.py", "*.pyc"])


def kolors_folder(models_dir: Path, repo_id: str) -> Path:
    return models_dir / "diffusers" / repo_id.split("/")[-1]


def _hint(repo_id: str, folder: Path, expected: str) -> str:
    return (f"expected {expected} under {folder}. Download them with "
            f"`huggingface-cli download {repo_id} --local-dir {folder}` or point --models-dir "
            f"(or $RUN_GRAPH_MODELS_DIR) at a ComfyUI models folder that has them")


def downloads_off() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def check_model_folder(vctx, folder: Path, repo_id: str, expected: str, check) -> list[tuple[str | None, str]]:
    """Validation of a loader's folder: present and sound, or missing. A missing folder is an
    error when downloads are off, and a warning naming the repo when one would be tried."""
    if folder.is_dir():
        try:
            check(folder)
        except ModelLoadError as exc:
            return [(None, str(exc))]
        return []
    if downloads_off():
        return [(None, f"model folder {folder} is missing, and downloads from the hub repo {repo_id} are off "
                       f"(HF_HUB_OFFLINE); {_hint(repo_id, folder, expected)}")]
    vctx.warn(f"model folder {folder} is missing: it will be downloaded from the hub repo {repo_id} when the "
              "workflow runs", kind="model_download")
    return []


def download_or_explain(repo_id: str, folder: Path, expected: str, patterns: dict) -> None:
    """Fetch the wrapper's file set from the hub; offline, say what to put where."""
    hint = _hint(repo_id, folder, expected)
    if downloads_off():
        raise ModelLoadError(f"model folder {folder} is missing and downloads are off (HF_HUB_OFFLINE); {hint}")
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id=repo_id, local_dir=str(folder), **patterns)
    except Exception as exc:  # noqa: BLE001 - offline, DNS, HTTP, auth: all mean "not downloadable now"
        raise ModelLoadError(f"model folder {folder} is missing and could not be downloaded "
                             f"({type(exc).__name__}); {hint}") from exc


def _read_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


UNET_EXPECTED = "unet/config.json and unet/diffusion_pytorch_model.fp16.safetensors"
TEXT_ENCODER_EXPECTED = "text_encoder/config.json, pytorch_model-*.bin (+ index) and tokenizer.model"


def check_unet_folder(folder: Path) -> None:
    unet = folder / "unet"
    config = _read_config(unet / "config.json")
    if config.get("_class_name") != "UNet2DConditionModel" or config.get("addition_embed_type") != "text_time" \
            or config.get("encoder_hid_dim_type") != "text_proj":
        raise ModelLoadError(f"{unet / 'config.json'} is not a Kolors UNet (expected UNet2DConditionModel "
                             "with encoder_hid_dim_type 'text_proj' and addition_embed_type 'text_time')")
    weights = next((unet / name for name in UNET_FILES if (unet / name).exists()), None)
    if weights is None:
        raise ModelLoadError(f"no UNet weights in {unet}: expected one of {', '.join(UNET_FILES)}")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), "pt") as handle:
            handle.keys()  # reads the header only
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"{weights} is not a readable safetensors file: {exc}") from exc


def check_text_encoder_folder(folder: Path) -> None:
    config = _read_config(folder / "config.json")
    if config.get("model_type") != "chatglm":
        raise ModelLoadError(f"{folder / 'config.json'} is not a ChatGLM config (model_type "
                             f"{config.get('model_type')!r}, expected 'chatglm')")
    if not (folder / "tokenizer.model").exists():
        raise ModelLoadError(f"no tokenizer.model in {folder}")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise ModelLoadError(f"no weights in {folder}: expected pytorch_model-*.bin shards or *.safetensors")


def folder_fingerprint(settings, folder: Path) -> dict[str, str]:
    """{name: sha256} of every file under `folder`: new weights in the same place give new cache
    keys downstream. Hashes are computed once per file version (Settings.file_sha256)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(folder)  # not downloaded yet: no stable key, so the node runs
    return {str(p.relative_to(folder)): settings.file_sha256(p) for p in files}


@dataclass(frozen=True)
class KolorsModelOut(NodeOutput):
    kolors_model: KolorsModel


@dataclass(frozen=True)
class ChatGLM3Out(NodeOutput):
    chatglm3_model: ChatGLM3


class DownloadAndLoadKolorsModel(Node):
    """The Kolors UNet (diffusers layout) from `<models>/diffusers/Kolors`, downloaded if missing."""

    class_type = "DownloadAndLoadKolorsModel"
    display_name = "(Down)load Kolors Model"
    loads_models = True
    category = "KwaiKolorsWrapper"

    model: Literal["Kwai-Kolors/Kolors"] = Widget("Kwai-Kolors/Kolors")
    # The wrapper lists only fp16; bf16 and fp32 are accepted too, fp16 stays the default.
    precision: Literal["fp16", "bf16", "fp32"] = Widget("fp16")

    @classmethod
    def fingerprint(cls, constants, settings):
        return folder_fingerprint(settings, kolors_folder(settings.models_dir, constants["model"]) / "unet")

    @classmethod
    def check_inputs(cls, constants, linked_types, vctx):
        folder = kolors_folder(vctx.settings.models_dir, constants["model"])
        return check_model_folder(vctx, folder / "unet", constants["model"], UNET_EXPECTED,
                                  lambda unet: check_unet_folder(unet.parent))

    def execute(self, ctx) -> KolorsModelOut:
        folder = kolors_folder(ctx.settings.models_dir, self.model)
        if not (folder / "unet").is_dir():
            download_or_explain(self.model, folder, UNET_EXPECTED, UNET_DOWNLOAD)
        check_unet_folder(folder)
        return KolorsModelOut(KolorsModel(str(folder), self.precision, ctx.device, compile=ctx.settings.compile))


class DownloadAndLoadChatGLM3(Node):
    """ChatGLM3 text encoder + tokenizer from `<models>/diffusers/Kolors/text_encoder`."""

    class_type = "DownloadAndLoadChatGLM3"
    display_name = "(Down)load ChatGLM3 Model"
    loads_models = True
    category = "KwaiKolorsWrapper"

    precision: Literal["fp16", "quant4", "quant8"] = Widget("fp16")

    @classmethod
    def fingerprint(cls, constants, settings):
        folder = kolors_folder(settings.models_dir, KOLORS_REPO) / "text_encoder"
        return folder_fingerprint(settings, folder)

    @classmethod
    def check_inputs(cls, constants, linked_types, vctx):
        folder = kolors_folder(vctx.settings.models_dir, KOLORS_REPO) / "text_encoder"
        return check_model_folder(vctx, folder, KOLORS_REPO, TEXT_ENCODER_EXPECTED, check_text_encoder_folder)

    def execute(self, ctx) -> ChatGLM3Out:
        root = kolors_folder(ctx.settings.models_dir, KOLORS_REPO)
        folder = root / "text_encoder"
        if not folder.is_dir():
            download_or_explain(KOLORS_REPO, root, TEXT_ENCODER_EXPECTED, TEXT_ENCODER_DOWNLOAD)
        check_text_encoder_folder(folder)
        return ChatGLM3Out(ChatGLM3(str(folder), self.precision, ctx.device))
