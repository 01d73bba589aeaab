"""harness.metrics against naive loops."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from harness.metrics import classification_metrics, topk_accuracy


def naive_topk(scores: Tensor, labels: Tensor, k: int) -> float:
    hits = 0
    for row, label in zip(scores.tolist(), labels.tolist()):
        ranked = sorted(range(len(row)), key=lambda c: -row[c])
        hits += label in ranked[:k]
    return 100.0 * hits / len(labels)


@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_topk_matches_naive_loop(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    scores = torch.randn(300, 10, generator=g)  # continuous: no ties
    labels = torch.randint(0, 10, (300,), generator=g)
    assert topk_accuracy(scores, labels, k) == pytest.approx(naive_topk(scores, labels, k))


def test_known_values() -> None:
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = torch.tensor([1, 1, 0, 2])
    assert topk_accuracy(scores, labels, 1) == pytest.approx(25.0)
    assert topk_accuracy(scores, labels, 2) == pytest.approx(50.0)
    assert topk_accuracy(scores, labels, 3) == pytest.approx(100.0)


def test_topk_is_monotone_in_k() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(500, 20, generator=g)
    labels = torch.randint(0, 20, (500,), generator=g)
    accs = [topk_accuracy(scores, labels, k) for k in range(1, 21)]
    assert accs == sorted(accs)
    assert accs[-1] == 100.0


@pytest.mark.parametrize(("num_classes", "keys"), [(2, {"top1"}), (3, {"top1", "top2"}), (5, {"top1", "top2"}),
                                                     (6, {"top1", "top2", "top5"}), (100, {"top1", "top2", "top5"})])
def test_classification_metrics_keys(num_classes: int, keys: set[str]) -> None:
    g = torch.Generator().manual_seed(num_classes)
    scores = torch.randn(64, num_classes, generator=g)
    labels = torch.randint(0, num_classes, (64,), generator=g)
    m = classification_metrics(scores, labels, num_classes)
    assert set(m) == keys
    assert all(0.0 <= v <= 100.0 for v in m.values())
    assert m["top1"] == pytest.approx(naive_topk(scores, labels, 1))
    if "top5" in m:
        assert m["top5"] >= m["top2"] >= m["top1"]


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        topk_accuracy(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long), 1)
    with pytest.raises(ValueError):
        topk_accuracy(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), 4)
    with pytest.raises(ValueError):
        classification_metrics(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), 10)
