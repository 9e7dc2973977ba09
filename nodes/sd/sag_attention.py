"""The attention SelfAttentionGuidance reads: the middle block's first self-attention (ComfyUI's
attn1 of ("middle", 0, 0)), computed in full during calls that evaluate the negative side, its
probabilities for the first negative entry's images kept."""
from __future__ import annotations

from contextlib import contextmanager


class RecordingSelfAttention:
    """softmax(q·kᵀ/√d)·v written out, as ComfyUI's attention_basic_with_sim does, the
    probabilities of `rows` kept in `recorded["attention"]` as [(rows·heads), tokens, tokens]."""

    def __init__(self, rows: slice, recorded: dict):
        self.rows, self.recorded = rows, recorded

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        batch = hidden_states.shape[0]
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head = query.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head).transpose(1, 2) for t in (query, key, value))
        # float32 scores: fp16 ones can overflow (ComfyUI's attn_precision choice)
        probabilities = (query.float() @ key.float().transpose(-1, -2) * head ** -0.5).softmax(dim=-1)
        out = (probabilities.to(value.dtype) @ value).transpose(1, 2).reshape(batch, -1, attn.heads * head)
        self.recorded["attention"] = probabilities[self.rows].flatten(0, 1)
        return attn.to_out[1](attn.to_out[0](out))


def first_negative_rows(entries) -> slice | None:
    """The rows of the first negative entry in a batch (each entry fills consecutive rows)."""
    start = next((i for i, e in enumerate(entries) if e.prompt_type == "negative"), None)
    if start is None:
        return None
    end = start
    while end < len(entries) and entries[end] is entries[start]:
        end += 1
    return slice(start, end)


@contextmanager
def recording_middle_attention(unet, rows: slice, recorded: dict):
    layer = unet.mid_block.attentions[0].transformer_blocks[0].attn1
    saved = layer.processor
    layer.set_processor(RecordingSelfAttention(rows, recorded))
    try:
        yield
    finally:
        layer.set_processor(saved)
