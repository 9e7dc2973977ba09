"""TomePatchModel: which tokens merge, what attention sees, and the node."""
from __future__ import annotations

import numpy as np
import torch

from nodes.sd.tome import TokenMerge, token_merging_applied

from .test_hypertile import _block
from .test_model_patches import _graph, _pixels


def _merge(tokens, height=6, width=5, count=8, seed=0):
    return TokenMerge(tokens, height, width, count, torch.Generator().manual_seed(seed))


def test_one_destination_per_cell_and_merged_tokens_share_their_groups_mean():
    tokens = torch.randn(2, 30, 8, generator=torch.Generator().manual_seed(1))
    merge = _merge(tokens)
    destinations = merge.destination_positions.flatten().tolist()
    cells = [(p // 5 // 2, p % 5 // 2) for p in destinations]
    assert sorted(cells) == [(r, c) for r in range(3) for c in range(2)]  # 6×5: the last column has none
    merged = merge.merge(tokens)
    assert merged.shape == (2, 30 - 8, 8)
    restored = merge.unmerge(merged)
    sources = merge.source_positions.flatten()
    for image in range(2):
        kept = set(sources[merge.kept[image].flatten()].tolist())
        moved = sources[merge.merged[image].flatten()].tolist()
        targets = [destinations[i] for i in merge.into[image].flatten().tolist()]
        for position in kept:
            assert torch.equal(restored[image, position], tokens[image, position])
        for destination in set(targets):
            group = [destination] + [m for m, t in zip(moved, targets) if t == destination]
            mean = tokens[image, group].mean(dim=0)
            for position in group:
                assert torch.allclose(restored[image, position], mean, atol=1e-6)


def test_the_merged_sources_are_the_best_matched():
    tokens = torch.randn(1, 30, 8, generator=torch.Generator().manual_seed(2))
    merge = _merge(tokens)
    unit = tokens[0] / tokens[0].norm(dim=-1, keepdim=True)
    sources, destinations = merge.source_positions.flatten(), merge.destination_positions.flatten()
    best = (unit[sources] @ unit[destinations].T).max(dim=-1).values
    chosen = best[merge.merged.flatten()]
    assert chosen.min() >= best[merge.kept.flatten()].max()


def test_kept_queries_attend_to_every_token_as_before():
    block = _block()
    hidden = torch.randn(1, 64, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = block.attn1(hidden)
        generator = torch.Generator().manual_seed(0)
        with token_merging_applied(block, 0.5, (8, 8), generator):
            merged = block.attn1(hidden)
        probe = TokenMerge(hidden, 8, 8, 32, torch.Generator().manual_seed(0))  # the same draw
    kept = probe.source_positions.flatten()[probe.kept.flatten()]
    assert torch.allclose(merged[0, kept], plain[0, kept], atol=1e-5)
    assert not torch.allclose(merged, plain, atol=1e-3)
    # a level below the full resolution is left alone
    with torch.no_grad(), token_merging_applied(block, 0.5, (16, 16), torch.Generator().manual_seed(0)):
        assert torch.equal(block.attn1(hidden), plain)


def test_the_node(tiny_models, tmp_path):
    def pixels(ratio, run):
        patch = {"class_type": "TomePatchModel", "inputs": {"ratio": ratio}}
        return _pixels(tiny_models, tmp_path / run, _graph("tiny_sd15.safetensors", patch))

    plain = _pixels(tiny_models, tmp_path / "plain", _graph("tiny_sd15.safetensors", None))
    assert np.array_equal(pixels(0.0, "none"), plain)
    merged = pixels(0.5, "a")
    assert np.abs(merged - plain).max() > 2
    assert np.array_equal(pixels(0.5, "b"), merged)  # the draws follow the seed
