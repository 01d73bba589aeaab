"""Tile ops: the 2 x 2 jigsaw shuffle, tile permutations, jittered tile grids, region masks."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor

from ssl_bench.harness.kit import augment as A


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 8, h: int = 32, w: int = 32, seed: int = 0) -> Tensor:
    return torch.rand(b, 3, h, w, generator=gen(seed))


def coordinates(b: int, h: int, w: int) -> Tensor:
    """Images whose channel 0 is the row index and channel 1 the column index of each pixel."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack((ys, xs)).expand(b, 2, h, w).contiguous()


# ---------------------------------------------------------------------------- split / merge / permute


def test_split_tiles_is_row_major_and_merge_inverts_it() -> None:
    x = images(2, 12, 18)
    tiles = A.split_tiles(x, 3)
    assert tiles.shape == (2, 9, 3, 4, 6)
    for r, c in itertools.product(range(3), range(3)):
        assert torch.equal(tiles[:, 3 * r + c], x[:, :, 4 * r : 4 * r + 4, 6 * c : 6 * c + 6])
    assert torch.equal(A.merge_tiles(tiles, 3), x)


def test_permute_tiles_matches_a_loop() -> None:
    tiles = torch.rand(5, 4, 3, 2, 2, generator=gen(0))
    perms = A.random_permutations(5, 4, generator=gen(1))
    assert torch.equal(perms.sort(dim=1).values, torch.arange(4).expand(5, 4))
    out = A.permute_tiles(tiles, perms)
    for i, j in itertools.product(range(5), range(4)):
        assert torch.equal(out[i, j], tiles[i, perms[i, j]])
    with pytest.raises(ValueError):
        A.permute_tiles(tiles, perms[:, :3])


# ---------------------------------------------------------------------------- jigsaw 2x2


def test_jigsaw_2x2_output_is_a_permutation_of_the_input_quadrants() -> None:
    x = images(16)
    out = A.jigsaw_2x2(x, generator=gen(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    # Same multiset of pixel values per image ...
    assert torch.equal(out.flatten(1).sort(dim=1).values, x.flatten(1).sort(dim=1).values)
    # ... because every output quadrant is exactly one input quadrant, each used once.
    src, dst = A.split_tiles(x, 2), A.split_tiles(out, 2)
    orders = set()
    for i in range(16):
        order = [next(k for k in range(4) if torch.equal(dst[i, j], src[i, k])) for j in range(4)]
        assert sorted(order) == [0, 1, 2, 3]
        orders.add(tuple(order))
    assert len(orders) > 4


def test_jigsaw_2x2_draws_a_permutation_per_sample_and_is_seed_deterministic() -> None:
    x = images(1).expand(48, -1, -1, -1).contiguous()
    out = A.jigsaw_2x2(x, generator=gen(2))
    assert len({tuple(v.flatten()[::97].tolist()) for v in out}) >= 12  # many of the 24 orders
    assert torch.equal(out, A.jigsaw_2x2(x, generator=gen(2)))
    assert not torch.equal(out, A.jigsaw_2x2(x, generator=gen(3)))


def test_jigsaw_2x2_with_p_zero_is_identity_and_odd_sides_keep_their_last_line() -> None:
    x = images(4)
    assert torch.equal(A.jigsaw_2x2(x, 0.0, generator=gen(0)), x)
    odd = images(8, 11, 13)
    out = A.jigsaw_2x2(odd, generator=gen(0))
    assert torch.equal(out[..., 10, :], odd[..., 10, :]) and torch.equal(out[..., :, 12], odd[..., :, 12])
    assert torch.equal(out.flatten(1).sort(1).values, odd.flatten(1).sort(1).values)


# ---------------------------------------------------------------------------- tile grid


def test_tile_grid_default_sizes_follow_noroozi() -> None:
    assert A.tile_grid(images(2, 32, 32), generator=gen(0)).shape == (2, 9, 3, 8, 8)  # 10 px cells
    assert A.tile_grid(images(2, 225, 225), generator=gen(0)).shape == (2, 9, 3, 64, 64)  # 75 px cells
    assert A.tile_grid(images(2, 32, 40), grid=2, tile_size=12, generator=gen(0)).shape == (2, 4, 3, 12, 12)


@pytest.mark.parametrize("jitter", [True, False])
def test_tiles_come_from_their_own_cells(jitter: bool) -> None:
    b, h, w, grid, tile, gap = 64, 34, 40, 3, 8, 3
    x = coordinates(b, h, w)
    tiles = A.tile_grid(x, grid, tile, gap, generator=gen(0), jitter=jitter)
    assert tiles.shape == (b, 9, 2, tile, tile)
    rows, cols = tiles[:, :, 0], tiles[:, :, 1]
    ramp = torch.arange(tile, dtype=torch.float32)
    # Each tile is a contiguous square block of the image.
    assert torch.equal(rows - rows[..., :1, :1], ramp.view(tile, 1).expand(b, 9, tile, tile))
    assert torch.equal(cols - cols[..., :1, :1], ramp.view(1, tile).expand(b, 9, tile, tile))
    cell = tile + gap
    top0, left0 = (h - grid * cell) // 2, (w - grid * cell) // 2  # the grid is centred: (0, 3)
    dy = rows[..., 0, 0] - top0 - torch.arange(9).div(grid, rounding_mode="floor") * cell
    dx = cols[..., 0, 0] - left0 - torch.arange(9).remainder(grid) * cell
    assert dy.min() >= 0 and dy.max() <= gap and dx.min() >= 0 and dx.max() <= gap
    if jitter:  # offsets are drawn per sample and per tile, over the whole range
        assert set(dy.flatten().tolist()) == set(range(gap + 1)) and set(dx.flatten().tolist()) == set(range(gap + 1))
        assert len({tuple(v.tolist()) for v in dy}) > 50
    else:
        assert (dy == gap // 2).all() and (dx == gap // 2).all()


def test_tile_grid_without_gap_or_jitter_is_the_exact_split() -> None:
    x = images(3, 32, 32)
    tiles = A.tile_grid(x, 2, gap=0, generator=gen(0), jitter=False)
    assert torch.equal(tiles, A.split_tiles(x, 2))


def test_tile_grid_is_seed_deterministic_and_rejects_impossible_sizes() -> None:
    x = images(4)
    assert torch.equal(A.tile_grid(x, generator=gen(5)), A.tile_grid(x, generator=gen(5)))
    assert not torch.equal(A.tile_grid(x, generator=gen(5)), A.tile_grid(x, generator=gen(6)))
    with pytest.raises(ValueError):
        A.tile_grid(x, 3, tile_size=12, generator=gen(0))
    with pytest.raises(ValueError):
        A.tile_grid(x, 3, tile_size=9, gap=3, generator=gen(0))


# ---------------------------------------------------------------------------- mask region


def test_center_mask_is_the_central_block_filled_with_the_fill() -> None:
    x = images(4, 32, 32)
    out, mask = A.mask_region(x, generator=gen(0))
    assert mask.shape == (4, 1, 32, 32) and mask.dtype == torch.bool
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[8:24, 8:24] = True
    assert torch.equal(mask, expected.expand(4, 1, 32, 32))
    assert (out[mask.expand_as(out)] == 0.5).all()
    assert torch.equal(out[~mask.expand_as(out)], x[~mask.expand_as(x)])


def test_random_mask_moves_per_sample_and_keeps_its_size() -> None:
    x = images(32, 24, 30)
    out, mask = A.mask_region(x, generator=gen(1), size_fraction=0.25, mode="random", fill=(0.1, 0.2, 0.3))
    assert (mask.sum(dim=(1, 2, 3)) == 6 * 8).all()  # round(0.25 * 24) x round(0.25 * 30)
    assert len({tuple(m.nonzero()[0].tolist()) for m in mask}) > 10
    for ch, v in enumerate((0.1, 0.2, 0.3)):
        assert torch.allclose(out[:, ch][mask[:, 0]], torch.tensor(v))
    again, mask2 = A.mask_region(x, generator=gen(1), size_fraction=0.25, mode="random", fill=(0.1, 0.2, 0.3))
    assert torch.equal(out, again) and torch.equal(mask, mask2)
    with pytest.raises(ValueError):
        A.mask_region(x, generator=gen(0), mode="corner")  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tile_ops_run_on_cuda() -> None:
    x = images(4).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    assert A.tile_grid(x, generator=g).device == x.device
    out, mask = A.mask_region(x, generator=g, mode="random")
    assert out.device == mask.device == x.device
    assert A.permute_tiles(A.split_tiles(x, 2), A.random_permutations(4, 4, generator=g)).is_cuda
