"""ssl_bench.harness.kit.metrics against naive loops."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor

from ssl_bench.harness.kit.metrics import (
    average_ranks,
    classification_metrics,
    macro_auc,
    mean_class_accuracy,
    topk_accuracy,
)


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


EXTRA = {"auc", "mean_class_acc"}


@pytest.mark.parametrize(("num_classes", "keys"), [(2, {"top1"} | EXTRA), (3, {"top1", "top2"} | EXTRA),
                                                     (5, {"top1", "top2"} | EXTRA),
                                                     (6, {"top1", "top2", "top5"} | EXTRA),
                                                     (100, {"top1", "top2", "top5"} | EXTRA)])
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


def sklearn_auc(scores: Tensor, labels: Tensor) -> float:
    probs = torch.softmax(scores.double(), dim=1).numpy()
    if scores.shape[1] == 2:  # sklearn's binary form takes the positive class's column
        return 100.0 * float(roc_auc_score(labels.numpy(), probs[:, 1]))
    return 100.0 * float(roc_auc_score(labels.numpy(), probs, multi_class="ovr", average="macro",
                                       labels=list(range(scores.shape[1]))))


@pytest.mark.parametrize(("n", "num_classes", "levels"), [(200, 10, None), (50, 3, None), (300, 5, 3), (80, 2, 4),
                                                           (120, 4, 2)])
def test_macro_auc_matches_sklearn(n: int, num_classes: int, levels: int | None) -> None:
    g = torch.Generator().manual_seed(n + num_classes)
    scores = torch.randn(n, num_classes, generator=g)
    if levels is not None:  # few distinct score rows: many tied probabilities
        scores = torch.randint(0, levels, (n, num_classes), generator=g).float()
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=g)]
    scores[:, 0] += labels.eq(0).float()  # some signal, so the AUC is not ~50 everywhere
    assert macro_auc(scores, labels) == pytest.approx(sklearn_auc(scores, labels), abs=1e-9)


def naive_binary_auc(score: list[float], positive: list[bool]) -> float:
    """Fraction of (positive, negative) pairs ranked correctly, ties counting one half."""
    pos = [s for s, p in zip(score, positive) if p]
    neg = [s for s, p in zip(score, positive) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_macro_auc_matches_pairwise_count_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (60, 4), generator=g).float()
    labels = torch.randint(0, 4, (60,), generator=g)
    probs = torch.softmax(scores.double(), dim=1)
    want = [naive_binary_auc(probs[:, c].tolist(), (labels == c).tolist()) for c in range(4)]
    assert macro_auc(scores, labels) == pytest.approx(100.0 * sum(want) / 4, abs=1e-9)


def test_average_ranks_share_ties() -> None:
    ranks = average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0]))
    assert ranks.tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


def test_macro_auc_perfect_reversed_and_constant() -> None:
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    perfect = torch.nn.functional.one_hot(labels, 3).float() * 5
    assert macro_auc(perfect, labels) == pytest.approx(100.0)
    assert macro_auc(-perfect, labels) == pytest.approx(0.0)
    assert macro_auc(torch.zeros(7, 3), labels) == pytest.approx(50.0)


def test_macro_auc_skips_absent_classes() -> None:
    labels = torch.tensor([0, 0, 2, 2])  # class 1 never occurs: averaged over classes 0 and 2
    scores = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 2.0]])
    assert macro_auc(scores, labels) == pytest.approx(100.0)
    assert math.isnan(macro_auc(torch.zeros(3, 3), torch.tensor([1, 1, 1])))  # one class only: undefined


def naive_mean_class_acc(scores: Tensor, labels: Tensor) -> float:
    per_class = []
    for c in sorted(set(labels.tolist())):
        rows = [i for i, y in enumerate(labels.tolist()) if y == c]
        per_class.append(sum(int(scores[i].argmax()) == c for i in rows) / len(rows))
    return 100.0 * sum(per_class) / len(per_class)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_class_acc_matches_naive_loop(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.zeros(50), torch.ones(10), torch.full((3,), 3)]).long()  # imbalanced, class 2 absent
    scores = torch.randn(len(labels), 5, generator=g)
    scores[torch.arange(len(labels)), labels] += 1.0
    got = mean_class_accuracy(scores, labels)
    assert got == pytest.approx(naive_mean_class_acc(scores, labels))
    assert got != pytest.approx(topk_accuracy(scores, labels, 1))  # imbalanced: differs from top-1


def test_mean_class_acc_equals_top1_when_balanced() -> None:
    g = torch.Generator().manual_seed(4)
    labels = torch.arange(100) % 5
    scores = torch.randn(100, 5, generator=g)
    m = classification_metrics(scores, labels, 5)
    assert m["mean_class_acc"] == pytest.approx(m["top1"])


def test_perfect_scores_give_100_everywhere() -> None:
    labels = torch.arange(30) % 10
    m = classification_metrics(torch.nn.functional.one_hot(labels, 10).float(), labels, 10)
    assert m == pytest.approx({"top1": 100.0, "top2": 100.0, "top5": 100.0, "auc": 100.0, "mean_class_acc": 100.0})
