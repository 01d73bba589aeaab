"""Weighted k-nearest-neighbour classification on frozen, cached features."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Annotated, ClassVar

import torch
from pydantic import Field
from torch import Tensor
from torch.nn import functional as F

from ssl_bench.harness import EvalTask, Evaluator, hookimpl
from ssl_bench.harness import Params as BaseParams
from ssl_bench.harness.kit.metrics import classification_metrics


def knn_scores(
    fit_features: Tensor,
    fit_labels: Tensor,
    target_features: Tensor,
    *,
    num_classes: int,
    k: int,
    temperature: float,
    chunk_size: int = 1024,
) -> Tensor:
    """Temperature-weighted kNN votes with cosine similarity.

    Every target row takes its ``k`` most similar fit rows (cosine similarity ``s``) and each
    neighbour adds ``exp(s / temperature)`` to the score of its class. Similarities are computed
    ``chunk_size`` target rows at a time, so memory is O(chunk_size * N_fit).

    Computed stably: where ``exp(s / temperature)`` of a row's nearest neighbour would leave float32
    (the sum of ``k`` such weights could overflow, or every weight underflow to 0: with similarities
    near 1, a temperature below about 0.012), the row's weights are ``exp((s - s_max) / temperature)``
    instead, ``s_max`` its largest similarity. That scales the row's votes by one positive factor, so
    its argmax, its ranking of the classes and its vote shares are unchanged, and its largest vote is
    at least 1. Rows whose weights fit are computed as ``exp(s / temperature)`` exactly: the shift is
    exact in real arithmetic but not in float32, and the AUC of vote shares near 1 is sensitive to that
    rounding, so results at ordinary temperatures stay as they were.

    Args:
        fit_features: features of the labelled neighbours. Shape: (N_fit, D).
        fit_labels: their classes, int64. Shape: (N_fit,).
        target_features: features to classify. Shape: (N_target, D).
        num_classes: number of classes C.
        k: neighbours per target row; capped at N_fit.
        temperature: softmax temperature of the votes (> 0).
        chunk_size: target rows per similarity block.

    Returns:
        Vote scores, float32, each row's up to one positive factor. Shape: (N_target, C).
    """
    if k < 1 or temperature <= 0:
        raise ValueError(f"k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    fit = F.normalize(fit_features.float(), dim=1)
    target = F.normalize(target_features.float(), dim=1)
    labels = fit_labels.to(fit.device).long()
    k = min(k, fit.shape[0])
    limit = math.log(torch.finfo(torch.float32).max / k)  # k weights of at most exp(limit) sum to a float32
    out = []
    for rows in target.split(chunk_size):
        sims, idx = (rows @ fit.T).topk(k, dim=1)  # (B, k), sorted: sims[:, :1] is each row's maximum
        logits = sims / temperature
        outside = (sims[:, :1] / temperature).abs() > limit  # (B, 1): exp would overflow or underflow
        weights = torch.where(outside, (sims - sims[:, :1]) / temperature, logits).exp()
        votes = torch.zeros(rows.shape[0], num_classes, device=fit.device, dtype=torch.float32)
        votes.scatter_add_(1, labels[idx], weights)
        out.append(votes)
    if not out:
        return torch.zeros(0, num_classes, device=fit.device)
    return torch.cat(out)


class KNN(Evaluator):
    """Weighted kNN on L2-normalised frozen features (cosine similarity, exp(s / T) votes).

    - [0] Wu et al., Unsupervised Feature Learning via Non-Parametric Instance Discrimination, 2018,
      arXiv:1805.01978 (weighted kNN, section 3.4)
    - [1] Caron et al., Emerging Properties in Self-Supervised Vision Transformers (DINO), 2021,
      arXiv:2104.14294 (k=20, T=0.07 as the standard setting)

    Nothing is trained, so by default nothing is swept (``search_space`` is empty). A benchmark may
    still sweep ``k`` and/or ``temperature`` through its ``sweep`` table: values in ``hparams``
    override ``Params`` (``k`` is rounded to an int and capped at the number of fit rows).
    Deviations: none; ties between equal similarities are broken by ``torch.topk``. Votes are computed
    stably at any temperature (see :func:`knn_scores`: a row's votes may be scaled by one positive
    factor, which changes no argmax and no vote share).
    """

    name = "knn"

    class Params(BaseParams):
        k: Annotated[int, Field(gt=0)] = 20
        """Number of neighbours that vote."""
        temperature: Annotated[float, Field(gt=0)] = 0.07
        """Temperature T of the vote weights exp(cosine / T)."""
        chunk_size: Annotated[int, Field(gt=0)] = 1024
        """Target rows per similarity block (bounds memory to chunk_size x N_fit floats)."""

    params: Params
    search_space: ClassVar[Mapping[str, tuple[float, ...]]] = {}

    def evaluate(self, task: EvalTask, hparams: Mapping[str, float]) -> dict[str, float]:
        """Classify ``task.target`` by votes of its neighbours in ``task.fit``.

        Args:
            task: features come from ``task.features`` (cached, (N, D)); compute on ``task.device``.
            hparams: optional ``k`` and ``temperature`` overriding ``Params``.

        Returns:
            ``classification_metrics`` of the vote scores on ``task.target`` (percent).
        """
        unknown = set(hparams) - {"k", "temperature"}
        if unknown:
            raise ValueError(f"knn: unknown hyper-parameters {sorted(unknown)}; expected k, temperature")
        k = int(round(hparams.get("k", self.params.k)))
        temperature = float(hparams.get("temperature", self.params.temperature))
        fit = task.features(task.fit).to(task.device)
        target = task.features(task.target).to(task.device)
        scores = knn_scores(
            fit, task.fit.labels, target,
            num_classes=task.num_classes, k=k, temperature=temperature, chunk_size=self.params.chunk_size,
        )
        # Log of the vote shares: their softmax is the share itself, which the AUC ranks across rows.
        shares = scores / scores.sum(dim=1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
        logits = shares.clamp_min(1e-12).log()
        return classification_metrics(logits.cpu(), task.target.labels.cpu(), task.num_classes)


@hookimpl
def bench_register_evaluators(register: Callable[[type], None]) -> None:
    register(KNN)
