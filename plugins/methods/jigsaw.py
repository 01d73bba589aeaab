"""Jigsaw: learn features by recognising which permutation shuffled the tiles of an image.

- [0] Noroozi, Favaro. Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles.
  ECCV 2016, arXiv:1603.09246.

Each view is cut into a 3 x 3 grid of cells with a smaller tile at a random place in each cell
(:func:`ssl_bench.harness.kit.augment.tile_grid`: 8 px tiles in 10 px cells at 32 px, the 64/75 ratio of [0]), so
neighbouring tiles never share an edge. Each tile is colour-jittered on its own so that low-level
statistics do not give the puzzle away (optionally also standardised on its own, Sec. 3.3 of [0]).
The tiles are reordered by a permutation drawn uniformly from a fixed set; the backbone encodes each
tile separately (shared weights, the "context-free network"), the 9 features are concatenated in the
shuffled order (9D) and an MLP predicts the index of the permutation (cross-entropy).

The permutation set is chosen once in ``__init__`` (a buffer, so checkpoints carry it) by the greedy
Algorithm 1 of [0]: start from a random permutation, then repeatedly add the candidate farthest in
Hamming distance from those chosen. Deterministic given ``permutation_seed``.

Defaults: 1000 permutations (as [0]), 512 hidden units, per-tile colour jitter of strength 0.1, no
per-tile standardisation, tiles at their cut size, views ``("identity",)`` (the method cuts its own
tiles from the view). Why:

- 1000 permutations: a hundred permutations far apart make an easy puzzle, solvable from low-level
  cues, and the features lose what random ones keep.
- No standardisation and mild jitter: standardising each tile trains on statistics that whole
  images never have at evaluation, and strong jitter (saturation, hue) per tile teaches the features
  to drop colour, which carries much of CIFAR-10's class information.
- Tiles at their cut size: 8 px tiles leave 1x1 maps in convnet_small's last stage, yet upsampling
  them to the view's side (``tile_resize_px = "view"``, 9 passes of a 32 px image per sample) is
  costly and did not learn better.

Deviations from [0]:
    - Algorithm 1 scores a candidate by the sum of its distances to the chosen set; by default
      (``selection = "max_min"``) the largest minimum distance wins, ties broken by the sum, which
      guarantees every pair is at least that far apart. ``"max_sum"`` is [0]'s rule.
    - [0] scans all 9! candidates; here ``candidate_pool`` random permutations are scanned (all of
      them when (grid^2)! is not larger), which keeps building the method cheap.
    - Tiles go through the whole backbone and its global pooling (fc6 per tile, fc7 and fc8 on the
      concatenation in [0]); ``tile_resize_px`` can upsample them for backbones that need bigger
      inputs ([0] feeds 64 px tiles cut from a 225 px crop).
    - Colour jitter (brightness, contrast, saturation, hue) per tile stands in for [0]'s spatial
      jitter of the colour channels and 30% grayscale; [0]'s per-tile mean and std normalisation
      is off by default (``standardize_tiles``), see above.
    - Random draws (tile places, jitter, permutations) come from a generator seeded by a counter
      buffer, so a resumed run draws what the interrupted one would have; one stream per process.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch, Method, MethodParams, Register, hookimpl
from ssl_bench.harness.kit.augment import permute_tiles, tile_grid
from ssl_bench.harness.kit.draws import new_draws, next_generator
from ssl_bench.harness.kit.heads import mlp_head
from ssl_bench.harness.kit.pixels import jitter_normalized

Selection = Literal["max_min", "max_sum"]


@lru_cache(maxsize=8)
def _permutation_set(n: int, size: int, seed: int, pool: int, selection: Selection) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    if math.factorial(n) <= pool:
        candidates = torch.tensor(list(itertools.permutations(range(n))), dtype=torch.int8)
    else:  # unique rows come back sorted, so the pool does not depend on the order of the draws
        candidates = torch.unique(torch.rand(pool, n, generator=g).argsort(dim=1).to(torch.int8), dim=0)
    if size > len(candidates):
        raise ValueError(f"cannot choose {size} permutations from {len(candidates)} candidates")
    one_hot = F.one_hot(candidates.long(), n).flatten(1).float()  # Hamming distance = n - one_hot @ one_hot.T
    chosen = [int(torch.randint(len(candidates), (), generator=g))]
    taken = torch.zeros(len(candidates), dtype=torch.bool)
    min_d = torch.full((len(candidates),), n + 1, dtype=torch.int64)
    sum_d = torch.zeros(len(candidates), dtype=torch.int64)
    for _ in range(size - 1):
        taken[chosen[-1]] = True
        d = n - (one_hot @ one_hot[chosen[-1]]).long()  # exact: small integers in float32
        torch.minimum(min_d, d, out=min_d)
        sum_d += d
        score = sum_d if selection == "max_sum" else min_d * (n * size + 1) + sum_d
        chosen.append(int(score.masked_fill(taken, -1).argmax()))
    return candidates[chosen].long()


def max_hamming_permutations(n: int, size: int, *, seed: int = 0, pool: int = 10_000,
                             selection: Selection = "max_min") -> Tensor:
    """A set of permutations of ``0..n-1`` far apart in Hamming distance (greedy Algorithm 1 of [0]).

    Args:
        n: permutation length (tiles per puzzle).
        size: number of permutations to choose.
        seed: seeds the first choice and the candidate pool.
        pool: candidates scanned: all ``n!`` when ``n! <= pool``, else ``pool`` random draws.
        selection: ``"max_min"`` (largest minimum distance, ties by sum) or ``"max_sum"`` ([0]).

    Returns:
        int64 tensor (size, n) of distinct permutations, in the order they were chosen.
    """
    return _permutation_set(n, size, seed, pool, selection).clone()


def shuffle_tiles(tiles: Tensor, permutations: Tensor, *, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Reorder each sample's tiles by a permutation drawn uniformly from ``permutations``.

    Args:
        tiles: (B, N, C, h, w).
        permutations: int64 (P, N), on the tiles' device.
        generator: source of randomness, on the tiles' device.

    Returns:
        shuffled tiles (B, N, C, h, w) with ``out[i, j] = tiles[i, permutations[labels[i], j]]``,
        and labels int64 (B,), indices into ``permutations``.
    """
    labels = torch.randint(len(permutations), (tiles.shape[0],), generator=generator, device=generator.device)
    labels = labels.to(tiles.device)
    return permute_tiles(tiles, permutations[labels]), labels


def standardize_tiles(tiles: Tensor, eps: float = 1e-5) -> Tensor:
    """Zero mean and unit std per tile, over its channels and pixels. Shape: (..., C, h, w) kept."""
    mean = tiles.mean(dim=(-3, -2, -1), keepdim=True)
    std = tiles.std(dim=(-3, -2, -1), keepdim=True)
    return (tiles - mean) / (std + eps)


class Jigsaw(Method):
    """Jigsaw puzzles [0]: classify which of ``num_permutations`` permutations shuffled 9 tiles."""

    name = "jigsaw"

    class Params(MethodParams):
        views: tuple[str] = ("identity",)
        """The pipeline of the images the tiles are cut from (the method cuts and shuffles itself)."""
        grid: Annotated[int, Field(ge=2, le=4)] = 3
        """Cells per side of the puzzle (3 in [0]: 9 tiles)."""
        num_permutations: Annotated[int, Field(ge=2)] = 1000
        """Size of the permutation set, the number of classes (1000 in [0]; at most (grid^2)!)."""
        permutation_seed: Annotated[int, Field(ge=0)] = 0
        """Seed of the permutation set."""
        selection: Selection = "max_min"
        """Greedy rule: largest minimum Hamming distance ("max_min") or largest sum ("max_sum", [0])."""
        candidate_pool: Annotated[int, Field(gt=0)] = 10_000
        """Random candidates scanned by the greedy selection (all (grid^2)! when there are fewer)."""
        jitter_strength: Annotated[float, Field(ge=0, le=1)] = 0.1
        """Per-tile colour jitter: brightness, contrast, saturation strength (hue a quarter); 0 = none."""
        jitter_p: Annotated[float, Field(ge=0, le=1)] = 0.8
        """Probability of jittering a tile."""
        standardize_tiles: bool = False
        """Give each tile zero mean and unit std (Sec. 3.3 of [0]); off by default, see the module docstring."""
        tile_resize_px: Annotated[int, Field(gt=0)] | Literal["view"] | None = None
        """Side the tiles are resized to (bilinear) before the backbone: pixels, ``"view"`` (the
        view's height, so the backbone sees maps of the size it sees at evaluation), or None (cut size)."""
        hidden_dim: Annotated[int, Field(gt=0)] = 512
        """Hidden width of the MLP on the concatenated tile features."""

    params: Params
    permutations: Tensor
    draws: Tensor

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        n = params.grid**2
        if params.num_permutations > math.factorial(n):
            raise ValueError(f"num_permutations = {params.num_permutations} > {n}! permutations of {n} tiles")
        perms = max_hamming_permutations(n, params.num_permutations, seed=params.permutation_seed,
                                         pool=params.candidate_pool, selection=params.selection)
        self.register_buffer("permutations", perms)
        # (seed, number of puzzles batches drawn): the seed comes from the global RNG at build time.
        self.register_buffer("draws", new_draws())
        self.head = mlp_head(n * backbone.feature_dim, params.hidden_dim, params.num_permutations)

    def puzzles(self, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Cut, jitter, shuffle and standardise tiles of normalised images (B, C, H, W).

        Returns:
            puzzles (B, grid^2, C, t, t) and their permutation indices, int64 (B,).
        """
        p = self.params
        tiles = tile_grid(images, p.grid, generator=generator)
        if p.jitter_strength > 0:  # each tile on its own
            flat = jitter_normalized(tiles.flatten(0, 1), p.jitter_strength, p.jitter_p, generator=generator)
            tiles = flat.reshape(tiles.shape)
        tiles, labels = shuffle_tiles(tiles, self.permutations, generator=generator)
        if p.standardize_tiles:
            tiles = standardize_tiles(tiles)
        return tiles, labels

    def classify(self, puzzles: Tensor, view_side: int | None = None) -> Tensor:
        """Permutation logits of puzzles (B, N, C, t, t): shared backbone per tile, concat, MLP -> (B, P).

        ``view_side`` is the side tiles are resized to when ``tile_resize_px = "view"`` (None: no resize).
        """
        b, n = puzzles.shape[:2]
        x = puzzles.flatten(0, 1)
        side = view_side if self.params.tile_resize_px == "view" else self.params.tile_resize_px
        if side is not None and side != x.shape[-1]:
            x = F.interpolate(x, size=side, mode="bilinear", align_corners=False)
        logits: Tensor = self.head(self.backbone(x).reshape(b, n * self.backbone.feature_dim))
        return logits

    def loss(self, batch: Batch) -> Tensor:
        """Cross-entropy of the permutation index of puzzles cut from the view (B, C, H, W)."""
        x = batch.views[0]
        g = next_generator(self.draws, x.device)
        tiles, labels = self.puzzles(x, g)
        return F.cross_entropy(self.classify(tiles, x.shape[-2]), labels)


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(Jigsaw)
