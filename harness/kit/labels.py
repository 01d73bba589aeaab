"""Label fractions for the few-label protocols: stratified, seeded and nested subsets of a labelled split.

The studies fine-tune or probe with 1%, 10% and 50% of the training labels. For their results to be
comparable across fractions, the smaller label set must be inside the larger one for the same seed:
:func:`label_fraction_indices` ranks every class's rows once in a seeded order (independent of the
fraction) and keeps a prefix of that order, so ``fraction`` only moves where each prefix ends.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def class_share(count: int, fraction: float) -> int:
    """Rows kept of a class with ``count`` rows: ``round(fraction * count)``, at least 1, at most ``count``.

    Non-decreasing in ``fraction``, which is what makes the subsets nested. Halves round up so that
    the share never depends on floating-point ties (``floor(x + 0.5)``).
    """
    if count <= 0:
        return 0
    return min(count, max(1, math.floor(fraction * count + 0.5)))


def label_fraction_indices(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Positions of a stratified, seeded, nested ``fraction`` of the labelled rows.

    Every class keeps :func:`class_share` of its rows (at least one). For one ``seed`` the rows of a
    class are taken in one fixed random order whatever the fraction, so the 1% subset is inside the
    10% subset, which is inside the 50% subset. Rows with a negative label (unlabelled, e.g. STL-10's
    ``unlabeled`` split) are never chosen.

    Args:
        labels: int64 class labels. Shape: (N,).
        fraction: share of each class to keep, in (0, 1]; 1 keeps every labelled row.
        seed: seed of the per-class order.

    Returns:
        int64 positions into ``labels``, sorted ascending. Shape: (K,), K <= N.

    Raises:
        ValueError: ``fraction`` is outside (0, 1] or ``labels`` is not one-dimensional.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional (N,), got shape {tuple(labels.shape)}")
    labels = labels.long().cpu()
    g = torch.Generator().manual_seed(seed)
    chosen = [torch.empty(0, dtype=torch.int64)]
    for c in torch.unique(labels).tolist():  # ascending, so the draws do not depend on row order
        if c < 0:
            continue
        pos = torch.nonzero(labels == c).flatten()
        order = pos[torch.randperm(len(pos), generator=g)]
        chosen.append(order[: class_share(len(pos), fraction)])
    return torch.sort(torch.cat(chosen)).values
