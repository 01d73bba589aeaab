"""Tests of ssl_bench.harness.kit.labels: stratified, seeded, nested label fractions for the few-label protocols."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.harness.kit.labels import class_share, label_fraction_indices

FRACTIONS = (0.01, 0.1, 0.5, 1.0)


def imbalanced_labels() -> torch.Tensor:
    """1,000 / 300 / 40 / 3 / 1 rows of classes 0..4, shuffled."""
    counts = [1000, 300, 40, 3, 1]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(5))]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_fractions_are_nested(seed: int) -> None:
    labels = imbalanced_labels()
    subsets = [set(label_fraction_indices(labels, f, seed).tolist()) for f in FRACTIONS]
    for small, large in zip(subsets, subsets[1:]):
        assert small < large  # 1% inside 10% inside 50% inside 100%
    assert subsets[-1] == set(range(len(labels)))


def test_per_class_shares_are_stratified_with_one_per_class() -> None:
    labels = imbalanced_labels()
    for fraction in FRACTIONS:
        idx = label_fraction_indices(labels, fraction, seed=0)
        counts = torch.bincount(labels[idx], minlength=5).tolist()
        assert counts == [class_share(n, fraction) for n in (1000, 300, 40, 3, 1)]
    assert torch.bincount(labels[label_fraction_indices(labels, 0.01, 0)]).tolist() == [10, 3, 1, 1, 1]
    assert torch.bincount(labels[label_fraction_indices(labels, 0.1, 0)]).tolist() == [100, 30, 4, 1, 1]
    assert torch.bincount(labels[label_fraction_indices(labels, 0.5, 0)]).tolist() == [500, 150, 20, 2, 1]


def test_seeded_sorted_and_unique() -> None:
    labels = imbalanced_labels()
    a, b = label_fraction_indices(labels, 0.1, 3), label_fraction_indices(labels, 0.1, 3)
    assert torch.equal(a, b) and a.dtype == torch.int64
    assert torch.equal(a, torch.sort(a).values) and len(set(a.tolist())) == len(a)
    assert not torch.equal(a, label_fraction_indices(labels, 0.1, 4))


def test_unlabelled_rows_are_never_chosen_and_bad_input_fails() -> None:
    labels = torch.tensor([-1, 0, 0, -1, 1, 1, 1, 1])
    idx = label_fraction_indices(labels, 1.0, 0)
    assert idx.tolist() == [1, 2, 4, 5, 6, 7]
    assert label_fraction_indices(torch.empty(0, dtype=torch.int64), 0.5, 0).numel() == 0
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction must be in"):
            label_fraction_indices(labels, bad, 0)
    with pytest.raises(ValueError, match="one-dimensional"):
        label_fraction_indices(labels[None], 0.5, 0)


def test_class_share_rounds_half_up_and_is_monotone() -> None:
    assert [class_share(10, f) for f in (0.01, 0.05, 0.15, 0.25, 1.0)] == [1, 1, 2, 3, 10]
    assert class_share(0, 0.5) == 0
    shares = [class_share(37, f / 100) for f in range(1, 101)]
    assert shares == sorted(shares) and shares[-1] == 37
