"""Quarter-turn rotations with labels, and multi-crop views."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from ssl_bench.harness.kit import augment as A


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 8, h: int = 16, w: int = 16, seed: int = 0) -> Tensor:
    return torch.rand(b, 3, h, w, generator=gen(seed))


def test_rotate90_matches_torch_rot90_per_sample() -> None:
    x = images(9)
    k = torch.tensor([0, 1, 2, 3, -1, 4, 5, 2, 1])
    out = A.rotate90(x, k)
    for i in range(9):
        assert torch.equal(out[i], torch.rot90(x[i], int(k[i]), dims=(-2, -1)))
    assert torch.equal(A.rotate90(x, 1), torch.rot90(x, 1, dims=(-2, -1)))


def test_random_rotation_returns_the_quarter_turns_as_labels() -> None:
    x = images(64)
    out, labels = A.random_rotation(x, generator=gen(0))
    assert labels.dtype == torch.int64 and labels.shape == (64,)
    assert set(labels.tolist()) == {0, 1, 2, 3}
    for i in range(64):
        assert torch.equal(out[i], torch.rot90(x[i], int(labels[i]), dims=(-2, -1)))
    again, labels2 = A.random_rotation(x, generator=gen(0))
    assert torch.equal(out, again) and torch.equal(labels, labels2)


def test_all_rotations_puts_every_rotation_in_the_batch() -> None:
    x = images(5)
    out, labels = A.all_rotations(x)
    assert out.shape == (20, 3, 16, 16) and labels.tolist() == [r for r in range(4) for _ in range(5)]
    for j in range(20):
        assert torch.equal(out[j], torch.rot90(x[j % 5], int(labels[j]), dims=(-2, -1)))


def test_rotations_need_square_images() -> None:
    with pytest.raises(ValueError):
        A.random_rotation(images(2, 16, 12), generator=gen(0))
    with pytest.raises(ValueError):
        A.all_rotations(images(2, 16, 12))


def test_multi_crop_gives_global_then_local_views() -> None:
    x = images(4, 32, 32)
    views = A.multi_crop(x, generator=gen(0), n_global=2, n_local=3, local_size=12)
    assert [tuple(v.shape) for v in views] == [(4, 3, 32, 32)] * 2 + [(4, 3, 12, 12)] * 3
    assert [v.shape[-1] for v in A.multi_crop(x, generator=gen(0))] == [32, 32] + [14] * 6  # SwAV 224/96 ratio
    g = gen(7)
    expected = [A.random_resized_crop(x, 32, (0.14, 1.0), generator=g, flip_p=0.5) for _ in range(2)]
    expected += [A.random_resized_crop(x, 14, (0.05, 0.14), generator=g, flip_p=0.5) for _ in range(6)]
    got = A.multi_crop(x, generator=gen(7))
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert all(v.min() >= 0 and v.max() <= 1 for v in got)
    assert not torch.equal(got[0], got[1])  # views are independent draws
