"""Classification metrics shared by evaluators, all in percent (0-100).

Top-k accuracy, mean per-class accuracy (the mean of per-class recalls, which weighs rare classes as
much as common ones) and macro one-vs-rest ROC AUC of the softmax probabilities.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def topk_accuracy(scores: Tensor, labels: Tensor, k: int) -> float:
    """Percentage of rows whose label is among the ``k`` highest-scoring classes.

    Ties between equal scores are broken by ``torch.topk`` (deterministic, no credit for ties).

    Args:
        scores: logits, probabilities or votes. Shape: (N, C).
        labels: true classes, int64 in [0, C). Shape: (N,).
        k: how many top classes count as a hit; 1 <= k <= C.

    Returns:
        Top-k accuracy in percent; 0.0 for an empty batch.
    """
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"expected scores (N, C) and labels (N,), got {tuple(scores.shape)} and {tuple(labels.shape)}")
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k must be in [1, {scores.shape[1]}], got {k}")
    if scores.shape[0] == 0:
        return 0.0
    top = scores.topk(k, dim=1).indices  # (N, k)
    hits = (top == labels.to(top.device).view(-1, 1)).any(dim=1)
    return float(hits.double().mean().item() * 100.0)


def _check(scores: Tensor, labels: Tensor) -> None:
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"expected scores (N, C) and labels (N,), got {tuple(scores.shape)} and {tuple(labels.shape)}")


def mean_class_accuracy(scores: Tensor, labels: Tensor) -> float:
    """Mean over the classes present in ``labels`` of each class's top-1 accuracy (its recall).

    The prediction is the top-1 class of :func:`topk_accuracy` (``torch.topk``), so on a balanced
    set this equals top-1 accuracy.

    Args:
        scores: per-class scores. Shape: (N, C).
        labels: true classes, int64 in [0, C). Shape: (N,).

    Returns:
        Mean per-class accuracy in percent; 0.0 for an empty batch.
    """
    _check(scores, labels)
    if scores.shape[0] == 0:
        return 0.0
    labels = labels.to(scores.device).long()
    hit = (scores.topk(1, dim=1).indices.squeeze(1) == labels).double()
    counts = torch.bincount(labels, minlength=scores.shape[1]).double()
    hits = torch.zeros_like(counts).index_add_(0, labels, hit)
    present = counts > 0
    return float((hits[present] / counts[present]).mean().item() * 100.0)


def average_ranks(values: Tensor) -> Tensor:
    """1-based ranks of ``values`` in ascending order, tied values sharing their mean rank.

    Args:
        values: Shape: (N,).

    Returns:
        float64 ranks. Shape: (N,).
    """
    sorted_values, order = torch.sort(values)
    _, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()  # 1-based rank of each tie group's last member
    group_rank = ends - (counts.double() - 1) / 2  # mean of ranks end - count + 1 .. end
    ranks = torch.empty(values.shape[0], dtype=torch.float64, device=values.device)
    ranks[order] = group_rank[inverse]
    return ranks


def macro_auc(scores: Tensor, labels: Tensor) -> float:
    """Macro one-vs-rest ROC AUC of the softmax probabilities, in percent.

    For every class ``c`` present in ``labels`` (with at least one row of another class), the
    binary AUC of ``softmax(scores)[:, c]`` separating class ``c`` from the rest is the
    Mann-Whitney statistic ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``, where ``R_pos`` is
    the sum of the positives' ranks and tied scores share their mean rank (a tied positive/negative
    pair counts 1/2). The result is the unweighted mean over those classes, what
    ``sklearn.metrics.roc_auc_score(labels, probs, multi_class="ovr", average="macro")`` reports
    when every class is present.

    Args:
        scores: logits (or any scores softmax turns into probabilities). Shape: (N, C).
        labels: true classes, int64 in [0, C). Shape: (N,).

    Returns:
        AUC in percent (50 is chance); NaN when no class has both positive and negative rows.
    """
    _check(scores, labels)
    probs = torch.softmax(scores.double(), dim=1)
    labels = labels.to(scores.device).long()
    aucs = []
    for c in torch.unique(labels).tolist():
        pos = labels == c
        n_pos = int(pos.sum().item())
        n_neg = labels.shape[0] - n_pos
        if n_neg == 0:
            continue
        rank_sum = float(average_ranks(probs[:, c])[pos].sum().item())
        aucs.append((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return math.nan if not aucs else 100.0 * sum(aucs) / len(aucs)


def classification_metrics(scores: Tensor, labels: Tensor, num_classes: int) -> dict[str, float]:
    """Top-1, top-2 (more than 2 classes), top-5 (more than 5 classes), AUC and mean class accuracy.

    Args:
        scores: per-class scores. Shape: (N, num_classes).
        labels: true classes, int64. Shape: (N,).
        num_classes: number of classes of the target dataset.

    Returns:
        ``{"top1": ..., "top2": ..., "top5": ..., "auc": ..., "mean_class_acc": ...}`` in percent,
        top-k keys only where they apply to ``num_classes``; see :func:`macro_auc` and
        :func:`mean_class_accuracy`.
    """
    if scores.ndim != 2 or scores.shape[1] != num_classes:
        raise ValueError(f"scores must be (N, {num_classes}), got {tuple(scores.shape)}")
    ks = [1] + [k for k in (2, 5) if num_classes > k]
    metrics = {f"top{k}": topk_accuracy(scores, labels, k) for k in ks}
    metrics["auc"] = macro_auc(scores, labels)
    metrics["mean_class_acc"] = mean_class_accuracy(scores, labels)
    return metrics

