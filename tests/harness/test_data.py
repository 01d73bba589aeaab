from __future__ import annotations

import torch

from ssl_bench.harness.data import ImageSet, balanced_subset, stratified_split


def test_stratified_split_keeps_class_shares_and_is_seeded():
    labels = torch.arange(1000) % 10
    rest, part = stratified_split(labels, 0.1, seed=0)
    assert len(part) == 100 and len(rest) == 900
    assert torch.bincount(labels[part]).tolist() == [10] * 10
    assert set(rest.tolist()).isdisjoint(part.tolist())
    assert torch.equal(stratified_split(labels, 0.1, seed=0)[1], part)
    assert not torch.equal(stratified_split(labels, 0.1, seed=1)[1], part)


def test_balanced_subset_is_balanced_and_nested():
    labels = torch.cat([torch.zeros(500), torch.ones(300), torch.full((200,), 2)]).long()
    small, large = balanced_subset(labels, 30, 0), balanced_subset(labels, 300, 0)
    assert torch.bincount(labels[small]).tolist() == [10, 10, 10]
    assert torch.bincount(labels[large]).tolist() == [100, 100, 100]
    assert set(small.tolist()) <= set(large.tolist())


def test_subset_composes_source_indices():
    s = ImageSet(torch.zeros(10, 3, 2, 2, dtype=torch.uint8), torch.arange(10), tuple(map(str, range(10))), "k")
    sub = s.subset(torch.tensor([2, 4, 6])).subset(torch.tensor([1, 2]))
    assert sub.indices.tolist() == [4, 6] and sub.labels.tolist() == [4, 6] and sub.key == "k"
