"""Token Merging for Stable Diffusion (Bolya & Hoffman 2023), as ComfyUI's TomePatchModel applies it.

Only on the UNet's full-resolution level: before each self-attention, `ratio` of the tokens (the
queries) are merged into their most similar neighbours, attention runs on fewer queries against
all keys and values, and the merged queries' outputs are copied back to every token they absorbed.

Tokens are split per 2×2 cell: one token of each cell, drawn at random, is a destination; the
rest (and any odd last row or column) are sources. Each source's best destination is its highest
cosine similarity; the `r` sources with the best matches are averaged into their destinations.
The draw uses torch's global generator on the model's device in ComfyUI: here, on the CPU, the
generator as ComfyUI's seeded noise leaves it, and on a GPU one seeded with the sampler's seed.
"""
from __future__ import annotations

import math

from .attention_hooks import around_self_attention


class TokenMerge:
    """The merge and its inverse for one self-attention call, built from its input tokens."""

    def __init__(self, tokens, height: int, width: int, count: int, generator):
        import torch

        batch, total, _ = tokens.shape
        cells_down, cells_across = height // 2, width // 2
        chosen = torch.randint(4, (cells_down, cells_across, 1), device=tokens.device, generator=generator)
        marks = torch.zeros(cells_down, cells_across, 4, device=tokens.device, dtype=torch.int64)
        marks.scatter_(2, chosen, -1)  # -1: the destination of its cell, 0: a source
        marks = marks.view(cells_down, cells_across, 2, 2).transpose(1, 2)
        marks = marks.reshape(cells_down * 2, cells_across * 2)
        if marks.shape != (height, width):  # an odd last row or column: sources
            grid = torch.zeros(height, width, device=tokens.device, dtype=torch.int64)
            grid[:marks.shape[0], :marks.shape[1]] = marks
            marks = grid
        order = marks.reshape(1, -1, 1).argsort(dim=1)  # destinations first (the same sort as ComfyUI's)
        destinations = cells_down * cells_across
        self.source_positions, self.destination_positions = order[:, destinations:, :], order[:, :destinations, :]
        self.batch, self.total = batch, total

        unit = tokens / tokens.norm(dim=-1, keepdim=True)
        sources, targets = self._split(unit)
        best_score, best_destination = (sources @ targets.transpose(-1, -2)).max(dim=-1)
        self.count = min(sources.shape[1], count)
        ranked = best_score.argsort(dim=-1, descending=True)[..., None]
        self.kept, self.merged = ranked[..., self.count:, :], ranked[..., :self.count, :]
        self.into = best_destination[..., None].gather(-2, self.merged)

    def _split(self, x):
        """(sources, destinations) of x [batch, tokens, channels], in the order the positions say."""
        channels = x.shape[-1]
        return tuple(x.gather(1, positions.expand(self.batch, positions.shape[1], channels))
                     for positions in (self.source_positions, self.destination_positions))

    def merge(self, x):
        import torch

        sources, destinations = self._split(x)
        n, count, channels = sources.shape
        kept = sources.gather(-2, self.kept.expand(n, count - self.count, channels))
        moving = sources.gather(-2, self.merged.expand(n, self.count, channels))
        into = self.into.expand(n, self.count, channels)
        destinations = destinations.scatter_reduce(-2, into, moving, reduce="mean")
        return torch.cat([kept, destinations], dim=1)

    def unmerge(self, x):
        import torch

        kept_count, channels = self.kept.shape[1], x.shape[-1]
        kept, destinations = x[..., :kept_count, :], x[..., kept_count:, :]
        merged = destinations.gather(-2, self.into.expand(self.batch, self.count, channels))
        out = torch.zeros(self.batch, self.total, channels, device=x.device, dtype=x.dtype)
        targets = self.destination_positions
        out.scatter_(-2, targets.expand(self.batch, targets.shape[1], channels), destinations)
        sources = self.source_positions.expand(self.batch, self.source_positions.shape[1], 1)
        out.scatter_(-2, sources.gather(1, self.kept).expand(self.batch, kept_count, channels), kept)
        out.scatter_(-2, sources.gather(1, self.merged).expand(self.batch, self.count, channels), merged)
        return out


def _merge_for(tokens, size, ratio: float, generator) -> TokenMerge | None:
    """ComfyUI's get_functions: only where the tokens are the full-size latent's."""
    height, width = size
    if math.ceil(math.sqrt(height * width // tokens.shape[1])) > 1:
        return None
    count = int(tokens.shape[1] * ratio)
    if count <= 0 or width == 1 or height == 1:
        return None
    return TokenMerge(tokens, height, width, count, generator)


def token_merging_applied(unet, ratio: float, size, generator):
    """For the block: every transformer block's self-attention queries merged and unmerged."""

    def split(hidden):
        merge = _merge_for(hidden, size, ratio, generator)
        # keys and values still come from every token
        return None if merge is None else (merge, merge.merge(hidden), {"encoder_hidden_states": hidden})

    return around_self_attention(unet, split, lambda merge, out: merge.unmerge(out))
