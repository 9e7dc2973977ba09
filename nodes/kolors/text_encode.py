"""KolorsTextEncode: ChatGLM3 over 256 left-padded tokens (the wrapper's `encode`)."""
from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass

from engine import Link, Node, NodeOutput, Widget

from .constants import MAX_TEXT_TOKENS
from .models import ChatGLM3, KolorsEmbeds

WILDCARD = re.compile(r"\{([^{}]*)\}")


def resolve_wildcards(text: str, rng: random.Random, chosen: list[str]) -> str:
    """Replace each {a|b|c} with one option. The wrapper uses the unseeded global `random`;
    here the caller's seeded generator makes a saved workflow replay the same choices."""
    def pick(match: re.Match) -> str:
        choice = rng.choice(match.group(1).split("|"))
        chosen.append(choice)
        return choice
    return WILDCARD.sub(pick, text)


def encode_texts(text_encoder, tokenizer, texts: list[str], device: str):
    """[B, 256, H] = hidden_states[-2]; [B, H] pooled = hidden_states[-1] at the last position."""
    import torch

    tokens = tokenizer(texts, padding="max_length", max_length=MAX_TEXT_TOKENS, truncation=True,
                       return_tensors="pt").to(device)
    with torch.inference_mode():
        out = text_encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                           position_ids=tokens["position_ids"], output_hidden_states=True)
    embeds = out.hidden_states[-2].permute(1, 0, 2).clone()  # [S, B, H] -> [B, S, H]
    pooled = out.hidden_states[-1][-1, :, :].clone()
    return embeds, pooled


def _repeat(embeds, pooled, times: int):
    # p0, p0, ..., p1, p1, ... like KolorsPipeline.encode_prompt
    batch, seq = embeds.shape[0], embeds.shape[1]
    embeds = embeds.repeat(1, times, 1).view(batch * times, seq, -1)
    pooled = pooled.repeat(1, times).view(batch * times, -1)
    return embeds.cpu(), pooled.cpu()


@dataclass(frozen=True)
class KolorsEmbedsOut(NodeOutput):
    kolors_embeds: KolorsEmbeds


class KolorsTextEncode(Node):
    """Encode a prompt; '|' splits it into a batch, {a|b} picks one option per group."""

    class_type = "KolorsTextEncode"
    display_name = "Kolors Text Encode"
    category = "KwaiKolorsWrapper"

    chatglm3_model: ChatGLM3 = Link()
    prompt: str = Widget("", multiline=True)
    negative_prompt: str = Widget("", multiline=True)
    num_images_per_prompt: int = Widget(1, ge=1, le=128)

    def execute(self, ctx) -> KolorsEmbedsOut:
        key = json.dumps([self.prompt, self.negative_prompt, self.num_images_per_prompt]).encode()
        rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
        chosen: list[str] = []
        prompt = resolve_wildcards(self.prompt, rng, chosen)
        negative = resolve_wildcards(self.negative_prompt, rng, chosen)
        if chosen:
            ctx.record("wildcards", chosen)
        # No strip: the wrapper keeps leading newlines and trailing spaces of each segment.
        prompts = prompt.split("|") if "|" in prompt else [prompt]
        text_encoder, tokenizer = ctx.models.get(self.chatglm3_model)
        device = self.chatglm3_model.device
        embeds, pooled = encode_texts(text_encoder, tokenizer, prompts, device)
        # The negative branch always runs, even for "" (the wrapper hard-codes CFG on).
        neg_embeds, neg_pooled = encode_texts(text_encoder, tokenizer, [negative] * len(prompts), device)
        n = self.num_images_per_prompt
        embeds, pooled = _repeat(embeds, pooled, n)
        neg_embeds, neg_pooled = _repeat(neg_embeds, neg_pooled, n)
        return KolorsEmbedsOut(KolorsEmbeds(embeds, neg_embeds, pooled, neg_pooled))
