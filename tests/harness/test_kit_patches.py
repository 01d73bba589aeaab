"""The masked-image-modelling patch helpers and the multi-crop forward of the kit."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.harness.kit.multicrop import forward_by_size
from ssl_bench.harness.kit.patches import masked_count, patchify, random_patch_mask, visible_indices


def test_patchify_orders_patches_row_major_and_pixels_row_column_channel():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    out = patchify(x, 2)
    assert out.shape == (2, 2 * 3, 2 * 2 * 3)
    for b in range(2):
        for n in range(6):
            r, c = divmod(n, 3)
            expected = [float(x[b, ch, 2 * r + i, 2 * c + j]) for i in range(2) for j in range(2) for ch in range(3)]
            assert out[b, n].tolist() == expected
    with pytest.raises(ValueError, match="multiple of the patch side 4"):
        patchify(x, 4)


@pytest.mark.parametrize(("tokens", "ratio", "count"), [(64, 0.75, 48), (64, 0.6, 39), (16, 0.6, 10), (4, 0.99, 3)])
def test_masked_count_is_the_ceiling_and_leaves_one_visible(tokens, ratio, count):
    assert masked_count(tokens, ratio) == count


def test_random_patch_mask_has_the_exact_count_per_sample_and_differs_between_samples():
    g = torch.Generator().manual_seed(0)
    mask = random_patch_mask(32, (8, 8), 48, generator=g)
    assert mask.dtype == torch.bool and mask.shape == (32, 64)
    assert (mask.sum(dim=1) == 48).all()
    assert len({tuple(row.tolist()) for row in mask}) == 32
    again = random_patch_mask(32, (8, 8), 48, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)
    # every patch is masked about 3/4 of the time: a uniform subset
    freq = random_patch_mask(4000, (8, 8), 48, generator=g).float().mean(dim=0)
    assert (freq - 0.75).abs().max() < 0.05


def test_random_patch_mask_cells_cover_whole_blocks():
    mask = random_patch_mask(5, (8, 8), 10, generator=torch.Generator().manual_seed(1), cell=2)
    grid = mask.view(5, 4, 2, 4, 2)
    assert (grid.sum(dim=(2, 4)) % 4 == 0).all(), "a cell is masked whole or not at all"
    assert (mask.sum(dim=1) == 40).all()
    with pytest.raises(ValueError, match="not a multiple"):
        random_patch_mask(1, (6, 6), 1, generator=torch.Generator(), cell=4)


def test_visible_indices_are_the_unmasked_positions_ascending():
    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    assert visible_indices(mask).tolist() == [[1, 3], [0, 1]]


def test_forward_by_size_groups_consecutive_equal_shapes_and_keeps_order():
    calls = []

    def fn(x):
        calls.append(tuple(x.shape))
        return x.flatten(1).sum(dim=1, keepdim=True) * 2

    views = [torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2),
             torch.randn(3, 1, 4, 4)]
    out = forward_by_size(fn, views)
    assert calls == [(6, 1, 4, 4), (6, 1, 2, 2), (3, 1, 4, 4)]
    for v, o in zip(views, out):
        assert torch.allclose(o, fn(v))
