"""Tests of the jigsaw method: the permutation set, puzzle labels, the siamese classifier."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from ssl_bench.harness import Backbone, Batch
from ssl_bench.harness.data import IMAGENET_MEAN, IMAGENET_STD, normalize
from ssl_bench.harness.kit.augment import permute_tiles
from ssl_bench.plugins.methods.jigsaw import Jigsaw, max_hamming_permutations, shuffle_tiles


class TileEncoder(Backbone):
    """Per-sample features (no batch statistics); records the shape it is given."""

    name = "tile_encoder"

    def __init__(self, dim: int = 4) -> None:
        super().__init__(Backbone.Params())
        self.conv = nn.Conv2d(3, dim, 3, padding=1)
        self.feature_dim = dim
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.conv(x).mean(dim=(-2, -1))


def pairwise_min_hamming(perms: torch.Tensor) -> int:
    d = (perms[:, None] != perms[None]).sum(-1)
    d.fill_diagonal_(perms.shape[1] + 1)
    return int(d.min())


def naive_greedy(candidates: list[tuple[int, ...]], first: int, size: int) -> list[tuple[int, ...]]:
    """Algorithm 1 with the max-min rule (ties: larger sum, then earlier candidate), as plain loops."""
    chosen = [candidates[first]]
    while len(chosen) < size:
        best, best_score = None, None
        for c in candidates:
            if c in chosen:
                continue
            dists = [sum(a != b for a, b in zip(c, p)) for p in chosen]
            score = (min(dists), sum(dists))
            if best_score is None or score > best_score:
                best, best_score = c, score
        chosen.append(best)
    return chosen


def test_permutation_set_size_uniqueness_and_determinism() -> None:
    perms = max_hamming_permutations(9, 100, seed=0)
    assert perms.shape == (100, 9) and perms.dtype == torch.int64
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    assert len({tuple(p) for p in perms.tolist()}) == 100
    assert torch.equal(perms, max_hamming_permutations(9, 100, seed=0))
    assert not torch.equal(perms, max_hamming_permutations(9, 100, seed=1))


def pairwise_mean_hamming(perms: torch.Tensor) -> float:
    n = perms.shape[0]
    return float((perms[:, None] != perms[None]).sum(-1).sum()) / (n * (n - 1))


def test_permutation_set_is_farther_apart_than_a_random_one() -> None:
    g = torch.Generator().manual_seed(0)
    random = torch.rand(100, 9, generator=g).argsort(dim=1)
    max_min = max_hamming_permutations(9, 100, seed=0)
    assert pairwise_min_hamming(max_min) >= max(pairwise_min_hamming(random), 5)  # 6 here; random: 2 or 3
    assert pairwise_mean_hamming(max_min) >= pairwise_mean_hamming(random)
    max_sum = max_hamming_permutations(9, 100, seed=0, selection="max_sum")  # [0]'s rule: the mean
    assert pairwise_mean_hamming(max_sum) >= pairwise_mean_hamming(random)


def test_greedy_matches_naive_loop_on_a_full_scan() -> None:
    perms = max_hamming_permutations(5, 12, seed=3, pool=1000)  # 5! = 120 <= pool: every candidate
    candidates = list(itertools.permutations(range(5)))
    expected = naive_greedy(candidates, candidates.index(tuple(perms[0].tolist())), 12)
    assert [tuple(p) for p in perms.tolist()] == expected


def test_permutation_set_limits() -> None:
    assert len({tuple(p) for p in max_hamming_permutations(4, 24, pool=100).tolist()}) == 24
    with pytest.raises(ValueError):
        max_hamming_permutations(4, 25, pool=100)
    with pytest.raises(ValueError):
        Jigsaw(Jigsaw.Params(grid=2, num_permutations=25), TileEncoder(), num_classes=10)
    with pytest.raises(ValidationError):
        Jigsaw.Params(num_permutations=1)


def test_shuffle_matches_permute_tiles_of_the_identity_order() -> None:
    perms = max_hamming_permutations(9, 20, seed=0)
    tiles = torch.arange(9.0).view(1, 9, 1, 1, 1).expand(6, 9, 3, 2, 2)  # tile k is filled with k
    out, labels = shuffle_tiles(tiles, perms, generator=torch.Generator().manual_seed(0))
    assert labels.shape == (6,) and labels.dtype == torch.int64 and labels.max() < 20
    assert torch.equal(out, permute_tiles(tiles, perms[labels]))
    assert torch.equal(out[:, :, 0, 0, 0].long(), perms[labels])


def test_puzzles_put_the_cell_of_each_permutation_entry_in_each_slot() -> None:
    params = Jigsaw.Params(num_permutations=30, jitter_strength=0.0, standardize_tiles=False)
    method = Jigsaw(params, TileEncoder(), num_classes=10)
    cells = torch.arange(9.0).view(3, 3).repeat_interleave(10, 0).repeat_interleave(10, 1)  # 30 x 30
    images = torch.full((5, 3, 32, 32), -1.0)
    images[:, :, 1:31, 1:31] = cells  # the 3 x 3 grid of 10 px cells is centred in 32 px
    puzzles, labels = method.puzzles(images, torch.Generator().manual_seed(0))
    assert puzzles.shape == (5, 9, 3, 8, 8)  # 8 px tiles in 10 px cells
    expected = method.permutations[labels].float().view(5, 9, 1, 1, 1).expand_as(puzzles)
    assert torch.equal(puzzles, expected)


def test_jittered_standardised_tiles() -> None:
    method = Jigsaw(Jigsaw.Params(num_permutations=10, standardize_tiles=True), TileEncoder(), num_classes=10)
    puzzles, _ = method.puzzles(torch.randn(4, 3, 32, 32), torch.Generator().manual_seed(0))
    flat = puzzles.flatten(2)
    assert torch.allclose(flat.mean(-1), torch.zeros(4, 9), atol=1e-4)
    assert torch.allclose(flat.std(-1), torch.ones(4, 9), atol=1e-3)


def test_classifier_matches_naive_loop_over_tiles() -> None:
    torch.manual_seed(0)
    method = Jigsaw(Jigsaw.Params(num_permutations=10, hidden_dim=8), TileEncoder(), num_classes=10).eval()
    puzzles = torch.randn(3, 9, 3, 5, 5)
    with torch.no_grad():
        logits = method.classify(puzzles)
        for i in range(3):
            feats = torch.cat([method.backbone(puzzles[i, j:j + 1])[0] for j in range(9)])
            assert torch.allclose(logits[i], method.head(feats[None])[0], atol=1e-5)
    assert logits.shape == (3, 10)


@pytest.mark.parametrize(("resize", "side"), [("view", 32), (16, 16), (None, 8)])
def test_tiles_are_resized_for_the_backbone(resize: int | str | None, side: int) -> None:
    method = Jigsaw(Jigsaw.Params(num_permutations=10, tile_resize_px=resize), TileEncoder(), num_classes=10)
    method.loss(Batch(views=[torch.randn(2, 3, 32, 32)], labels=torch.zeros(2, dtype=torch.long)))
    assert method.backbone.shapes == [(18, 3, side, side)]  # 2 puzzles x 9 tiles, cut at 8 px


def test_view_sized_tiles_are_upsampled_cut_tiles() -> None:
    torch.manual_seed(0)
    default = Jigsaw(Jigsaw.Params(num_permutations=10, tile_resize_px="view"), TileEncoder(), num_classes=10)
    puzzles = torch.randn(2, 9, 3, 8, 8)
    with torch.no_grad():
        logits = default.classify(puzzles, 32)
        up = torch.nn.functional.interpolate(puzzles.flatten(0, 1), size=32, mode="bilinear", align_corners=False)
        expected = default.head(default.backbone(up).reshape(2, 9 * 4))
    assert default.backbone.shapes[0] == (18, 3, 32, 32)
    assert torch.allclose(logits, expected, atol=1e-6)


def test_draws_are_reproducible_and_checkpointed() -> None:
    batch = Batch(views=[torch.randn(4, 3, 32, 32)], labels=torch.zeros(4, dtype=torch.long))

    def build() -> Jigsaw:
        torch.manual_seed(0)
        return Jigsaw(Jigsaw.Params(num_permutations=10), TileEncoder(), num_classes=10)

    a, b = build(), build()
    first = a.loss(batch)
    assert torch.equal(first, b.loss(batch))
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    second = a.loss(batch)
    assert not torch.equal(first, second)  # a new step draws new puzzles
    buffer.seek(0)
    resumed = build()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(resumed.loss(batch), second)
    assert math.isfinite(second.item())


def test_defaults_are_noroozi_sized_unstandardised_mildly_jittered_puzzles() -> None:
    method = Jigsaw(Jigsaw.Params(), TileEncoder(), num_classes=10)
    assert method.permutations.shape == (1000, 9)  # [0]'s 1000 classes
    assert len({tuple(p) for p in method.permutations.tolist()}) == 1000
    assert pairwise_min_hamming(method.permutations) >= 3
    images = normalize(torch.rand(4, 3, 32, 32))
    puzzles, labels = method.puzzles(images, torch.Generator().manual_seed(0))
    assert puzzles.shape == (4, 9, 3, 8, 8) and labels.max() < 1000
    flat = puzzles.flatten(2)
    assert not torch.allclose(flat.mean(-1), torch.zeros(4, 9), atol=1e-2)  # not standardised
    rgb = puzzles * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    assert rgb.min() >= -1e-5 and rgb.max() <= 1 + 1e-5  # jittered tiles are normalised valid colours
