"""Classification metrics shared by evaluators. Accuracies are in percent (0-100)."""

from __future__ import annotations

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


def classification_metrics(scores: Tensor, labels: Tensor, num_classes: int) -> dict[str, float]:
    """Top-1, top-2 (more than 2 classes) and top-5 (more than 5 classes) accuracy in percent.

    Args:
        scores: per-class scores. Shape: (N, num_classes).
        labels: true classes, int64. Shape: (N,).
        num_classes: number of classes of the target dataset.

    Returns:
        ``{"top1": ..., "top2": ..., "top5": ...}`` with the keys that apply to ``num_classes``.
    """
    if scores.ndim != 2 or scores.shape[1] != num_classes:
        raise ValueError(f"scores must be (N, {num_classes}), got {tuple(scores.shape)}")
    ks = [1] + [k for k in (2, 5) if num_classes > k]
    return {f"top{k}": topk_accuracy(scores, labels, k) for k in ks}

