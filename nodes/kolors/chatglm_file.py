"""LoadChatGLM3 (KwaiKolorsWrapper): ChatGLM3 from one file in `<models>/LLM/checkpoints`.

These are the single-file ChatGLM3 checkpoints (Kijai/ChatGLM3-safetensors): fp16, or already
quantized to 8 or 4 bits in ChatGLM's own stored form. The wrapper builds the model from its
bundled ChatGLM3-6B config and picks the quantization by the file's name; here the layout (and
whether and how the file is quantized) is read off the tensors' shapes, so a renamed file still
loads and a small test model loads too. The tokenizer is ChatGLM3's, the same for every file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from engine import ModelLoadError, Node, Widget

from ..core.state_files import CheckpointFile
from ..sd.part_loaders import files_in, find_model_file
from .loaders import KOLORS_REPO, ChatGLM3Out, download_or_explain, downloads_off, kolors_folder

LLM_FOLDERS = ("LLM/checkpoints",)  # the folder the wrapper registers as "LLM"
QKV = "encoder.layers.0.self_attention.query_key_value"
TOKENIZER_DOWNLOAD = dict(allow_patterns=["tokenizer/*"])


def chatglm_layout(shapes: dict[str, tuple], name: str) -> tuple[dict, int | None]:
    """(ChatGLMConfig kwargs, stored bits or None) of a checkpoint, from its tensor shapes.

    ChatGLM3 keeps two key/value groups (multi-query attention), so the fused QKV projection's
    width, hidden + 2·2·head_width, gives the head width and, with the hidden size, the heads."""
    from .full_size import CHATGLM3_6B_CONFIG

    if "word_embeddings" not in "".join(shapes):
        raise ModelLoadError(f"{name} is not a ChatGLM3 checkpoint (no embedding.word_embeddings.weight)")
    try:
        vocab, hidden = shapes["embedding.word_embeddings.weight"]
        qkv_out, stored_in = shapes[f"{QKV}.weight"]
        ffn = shapes["encoder.layers.0.mlp.dense_h_to_4h.weight"][0] // 2  # SwiGLU: two halves
    except (KeyError, ValueError) as exc:
        raise ModelLoadError(f"{name} is not a ChatGLM3 checkpoint laid out as ChatGLMModel's state dict "
                             f"(missing or odd {exc})") from exc
    groups = CHATGLM3_6B_CONFIG["multi_query_group_num"]
    head_width = (qkv_out - hidden) // (2 * groups)
    if head_width <= 0 or hidden % head_width or hidden + 2 * groups * head_width != qkv_out:
        raise ModelLoadError(f"{name}: a query_key_value of width {qkv_out} does not fit hidden size {hidden} "
                             f"with {groups} key/value groups, as ChatGLM3 has")
    bits = None
    if f"{QKV}.weight_scale" in shapes:
        if stored_in not in (hidden, hidden // 2):
            raise ModelLoadError(f"{name}: quantized query_key_value of {stored_in} columns for hidden size {hidden}")
        bits = 8 if stored_in == hidden else 4
    layers = len({k.split(".")[2] for k in shapes if k.startswith("encoder.layers.")})
    config = {**CHATGLM3_6B_CONFIG, "num_layers": layers, "hidden_size": hidden, "ffn_hidden_size": ffn,
              "kv_channels": head_width, "num_attention_heads": hidden // head_width, "padded_vocab_size": vocab}
    return config, bits


def _unprefixed(names):
    """Checkpoint key → ChatGLMModel key: saved from ChatGLMForConditionalGeneration, keys carry
    "transformer."; saved from ChatGLMModel (Kijai's files), they do not."""
    return {k: k.removeprefix("transformer.") for k in names}


def read_layout(path: Path) -> tuple[CheckpointFile, dict, int | None]:
    file = CheckpointFile(path)
    names = _unprefixed(file.shapes)
    config, bits = chatglm_layout({names[k]: v for k, v in file.shapes.items()}, path.name)
    return file, config, bits


def load_chatglm_file(path: str, dtype, device: str):
    """The ChatGLMModel a single file holds, built on the meta device and given the file's tensors
    (int8 ones as they are stored), so nothing is initialised only to be overwritten."""
    import torch
    from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig, ChatGLMModel

    from .quant import QuantizedLinear, block_linears

    file, config, bits = read_layout(Path(path))
    with torch.device("meta"):
        model = ChatGLMModel(ChatGLMConfig(**config))
        if bits:
            for parent, name in block_linears(model):
                linear = getattr(parent, name)
                setattr(parent, name, QuantizedLinear(linear.in_features, linear.out_features, bits,
                                                      linear.bias is not None, dtype))
    names = _unprefixed(file.shapes)
    state = {names[k]: (v.to(dtype) if v.is_floating_point() else v) for k, v in file.tensors("").items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    # RoPE's inverse frequencies are recomputed in every forward; files need not carry them.
    missing = [k for k in missing if k != "rotary_pos_emb.inv_freq"]
    if missing or unexpected:
        listed = ", ".join((missing + unexpected)[:4])
        raise ModelLoadError(f"{Path(path).name} does not match the ChatGLM3 layout its shapes suggest "
                             f"({len(missing)} missing, {len(unexpected)} unexpected: {listed})")
    rope = model.rotary_pos_emb
    if rope.inv_freq.is_meta:
        dim = rope.inv_freq.numel() * 2
        rope.inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    return model.to(device).eval()


def tokenizer_folder(models_dir: Path, checkpoint: Path | None) -> Path | None:
    """Where ChatGLM3's tokenizer is: beside the file, or where the Kolors download keeps it."""
    kolors = kolors_folder(models_dir, KOLORS_REPO)
    beside = [checkpoint.parent / "tokenizer"] if checkpoint else []
    return next((f for f in (*beside, kolors / "text_encoder", kolors / "tokenizer")
                 if (f / "tokenizer.model").is_file()), None)


def _tokenizer_places(models_dir: Path) -> str:
    kolors = kolors_folder(models_dir, KOLORS_REPO)
    return (f"ChatGLM3's tokenizer (tokenizer.model, tokenizer_config.json) in a 'tokenizer' folder beside "
            f"the checkpoint, in {kolors / 'text_encoder'} or in {kolors / 'tokenizer'}")


class LoadChatGLM3(Node):
    """ChatGLM3 from a single file in `<models>/LLM/checkpoints` (fp16, 8-bit or 4-bit)."""

    class_type = "LoadChatGLM3"
    display_name = "Load ChatGLM3 Model"
    loads_models = True
    category = "KwaiKolorsWrapper"

    chatglm3_checkpoint: str = Widget(choices=files_in(LLM_FOLDERS))
    # Earlier versions of the node had this widget: it quantizes an fp16 file after loading. A
    # file stored quantized runs as stored.
    precision: Literal["fp16", "quant4", "quant8"] = Widget("fp16", optional=True, extension=True)

    @classmethod
    def fingerprint(cls, constants, settings):
        path = find_model_file(settings, LLM_FOLDERS, constants["chatglm3_checkpoint"], "chatglm3_checkpoint")
        tokenizer = tokenizer_folder(settings.models_dir, path)
        return [settings.file_sha256(path), tokenizer and settings.file_sha256(tokenizer / "tokenizer.model")]

    @classmethod
    def check_inputs(cls, constants, linked_types, vctx):
        name = constants.get("chatglm3_checkpoint")
        try:
            path = find_model_file(vctx.settings, LLM_FOLDERS, name, "chatglm3_checkpoint")
            _, _, bits = read_layout(path)
        except ModelLoadError as exc:
            return [("chatglm3_checkpoint", str(exc))]
        if bits and constants.get("precision", "fp16") not in ("fp16", f"quant{bits}"):
            vctx.warn(f"{name} is stored quantized to {bits} bits and runs as stored; precision "
                      f"{constants['precision']!r} only applies to fp16 files", "precision")
        if tokenizer_folder(vctx.settings.models_dir, path) is None:
            message = f"no ChatGLM3 tokenizer found: expected {_tokenizer_places(vctx.settings.models_dir)}"
            if downloads_off():
                return [(None, message + "; downloads from the hub are off (HF_HUB_OFFLINE)")]
            vctx.warn(message + f"; it will be downloaded from {KOLORS_REPO} when the workflow runs",
                      kind="model_download")
        return []

    def execute(self, ctx) -> ChatGLM3Out:
        from .models import ChatGLM3

        path = find_model_file(ctx.settings, LLM_FOLDERS, self.chatglm3_checkpoint, "chatglm3_checkpoint")
        _, _, bits = read_layout(path)
        tokenizer = tokenizer_folder(ctx.settings.models_dir, path)
        if tokenizer is None:
            root = kolors_folder(ctx.settings.models_dir, KOLORS_REPO)
            download_or_explain(KOLORS_REPO, root, _tokenizer_places(ctx.settings.models_dir), TOKENIZER_DOWNLOAD)
            tokenizer = root / "tokenizer"
        precision = f"quant{bits}" if bits else self.precision
        return ChatGLM3Out(ChatGLM3(str(tokenizer), precision, ctx.device, checkpoint=str(path),
                                    stored_quantized=bits is not None))
