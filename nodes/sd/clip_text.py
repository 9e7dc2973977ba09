"""Prompt → CLIP tokens in 77-token rows → embeddings, as ComfyUI's SD tokenizer and encoder do.

- Each weighted segment is tokenized as a whole (split only at `embedding:` names).
- Rows hold 75 tokens between BOS and EOS. A piece of 8+ tokens that does not fit is split at
  the boundary; a shorter piece moves whole to the next row.
- Rows are encoded independently and concatenated along the sequence; weights ≠ 1 lerp each
  position away from the empty prompt's encoding: z ← (z − z_empty)·w + z_empty.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .prompt_weights import weighted_segments

log = logging.getLogger(__name__)

TOKENIZER_DIR = Path(__file__).parent / "clip_tokenizer"
BOS, EOS = 49406, 49407
ROW = 77
LONG_PIECE = 8
EMBEDDING = "embedding:"


@lru_cache(maxsize=1)
def clip_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))


@dataclass(frozen=True)
class Token:
    """A vocabulary id, or an embedding vector standing in one position."""

    id: int | None
    weight: float
    vector: object = None  # a [dim] tensor for textual-inversion tokens


def _pieces(text: str) -> list[str]:
    import re

    split = re.split(" " + EMBEDDING + "|\n" + EMBEDDING, text)
    pieces = [split[0]] + [EMBEDDING + part for part in split[1:]]
    return [p for p in pieces if p]


def tokenize(prompt: str, embeddings=None) -> list[list[Token]]:
    """Weighted tokens grouped by piece (the unit the row packing keeps whole)."""
    tokenizer = clip_tokenizer()
    groups = []
    for text, weight in weighted_segments(prompt):
        for piece in _pieces(text):
            if piece.startswith(EMBEDDING) and embeddings is not None:
                vectors, piece = embeddings.lookup(piece[len(EMBEDDING):])
                if vectors is not None:
                    groups.append([Token(None, weight, v) for v in vectors])
                if not piece.strip():
                    continue
            ids = tokenizer(piece)["input_ids"][1:-1]
            groups.append([Token(i, weight) for i in ids])
    return groups


def pack_rows(groups: list[list[Token]], pad_token: int) -> list[list[Token]]:
    rows, row = [], [Token(BOS, 1.0)]

    def close(current):
        current.append(Token(EOS, 1.0))
        current += [Token(pad_token, 1.0)] * (ROW - len(current))
        rows.append(current)

    for group in groups:
        is_long = len(group) >= LONG_PIECE
        while group:
            if len(row) + len(group) > ROW - 1:
                room = ROW - 1 - len(row)
                if is_long:
                    row += group[:room]
                    group = group[room:]
                close(row)
                row = [Token(BOS, 1.0)]
            else:
                row += group
                group = []
    close(row)
    return rows


def encode_rows(model, rows: list[list[Token]], *, layer: int | None, final_norm_on_hidden: bool,
                projected_pool: bool, pad_token: int):
    """[1, 77·rows, dim] token embeddings and the first row's pooled output ([1, dim])."""
    import torch

    weighted = any(t.weight != 1.0 for row in rows for t in row)
    if weighted:
        rows = rows + [pack_rows([], pad_token)[0]]
    device = model.device
    text_model = getattr(model, "text_model", model)  # transformers 5 flattens CLIPTextModel
    ids = torch.tensor([[t.id if t.id is not None else 0 for t in row] for row in rows], device=device)
    with torch.inference_mode(), _vectors_in_place(text_model.embeddings.token_embedding, rows):
        out = model(input_ids=ids, output_hidden_states=True)
        if layer is None:
            hidden = out.last_hidden_state
        else:
            hidden = out.hidden_states[layer]
            if final_norm_on_hidden:
                hidden = text_model.final_layer_norm(hidden)
        pooled = out.text_embeds if projected_pool else out.pooler_output
        hidden, pooled = hidden.float(), pooled.float()
        if weighted:
            empty = hidden[-1]
            hidden = hidden[:-1].clone()
            for r, row in enumerate(rows[:-1]):
                for p, token in enumerate(row):
                    if token.weight != 1.0:
                        hidden[r, p] = (hidden[r, p] - empty[p]) * token.weight + empty[p]
    return hidden.reshape(1, -1, hidden.shape[-1]).cpu(), pooled[:1].cpu()


@contextmanager
def _vectors_in_place(token_embedding, rows):
    """Textual-inversion vectors replace the embedding lookup at their positions; the token ids
    still place the pooled output (first EOS). transformers' CLIP takes no inputs_embeds, so this
    is a forward hook for the one call."""
    positions = [(r, p, t.vector) for r, row in enumerate(rows) for p, t in enumerate(row) if t.vector is not None]
    if not positions:
        yield
        return

    def substitute(module, args, output):
        output = output.clone()
        for r, p, vector in positions:
            output[r, p] = vector.to(output.device, output.dtype)
        return output

    hook = token_embedding.register_forward_hook(substitute)
    try:
        yield
    finally:
        hook.remove()


EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".bin")


class Embeddings:
    """Textual-inversion files under the embeddings folders, looked up by `embedding:name`."""

    def __init__(self, folders):
        self.folders = [Path(f) for f in folders]

    def for_tower(self, tower: str, width: int) -> "TowerEmbeddings":
        return TowerEmbeddings(self, tower, width)

    def find(self, name: str) -> Path | None:
        candidates = [name] if name.endswith(EMBEDDING_EXTENSIONS) else [name + ext for ext in EMBEDDING_EXTENSIONS] + [name]
        for folder in self.folders:
            root = folder.resolve()
            for candidate in candidates:
                path = (folder / candidate).resolve()
                if path.is_file() and path.is_relative_to(root):  # names never leave the folder
                    return path
        return None


@dataclass(frozen=True)
class TowerEmbeddings:
    embeddings: Embeddings
    tower: str  # "l", "g", "h": which vectors of a multi-tower file (clip_l / clip_g) to use
    width: int  # the tower's hidden size; vectors of another width are dropped

    def lookup(self, text: str):
        """(vectors [n, dim] or None, leftover text) for `name rest...` after `embedding:`."""
        words = text.strip("\n").split()  # any whitespace ends the name, as in ComfyUI
        word, rest = (words[0] if words else ""), " ".join(words[1:])
        path = self.embeddings.find(word)
        if path is None and word.strip(",") != word:
            stripped = word.strip(",")
            path, rest = self.embeddings.find(stripped), f"{word[len(stripped):]} {rest}"
        if path is None:
            log.warning("embedding:%s does not exist, ignoring it", word)
            return None, rest
        return self._vectors(path), rest

    def _vectors(self, path: Path):
        import torch

        from ..core.state_files import CheckpointFile

        file = CheckpointFile(path)
        state = file.tensors("") if file.is_safetensors else file.raw()
        if isinstance(state, dict) and "string_to_param" in state:
            vectors = next(iter(state["string_to_param"].values()))
        elif isinstance(state, list):
            vectors = torch.cat([v.reshape(-1, v.shape[-1]) for v in state])
        elif f"clip_{self.tower}" in state:
            vectors = state[f"clip_{self.tower}"]
        else:
            vectors = next(iter(v for v in state.values() if hasattr(v, "shape")), None)
        if vectors is None:
            log.warning("embedding %s holds no vectors, ignoring it", path.name)
            return None
        if vectors.shape[-1] != self.width:
            log.warning("embedding %s has vectors of width %d, the text encoder needs %d: ignoring it",
                        path.name, vectors.shape[-1], self.width)
            return None
        return vectors.reshape(-1, vectors.shape[-1]).float()
