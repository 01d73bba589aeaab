"""Contrastive losses shared by the built-in methods: InfoNCE, and NT-Xent built on it.

- [0] van den Oord, Li, Vinyals. Representation Learning with Contrastive Predictive Coding, 2018,
  arXiv:1807.03748 (InfoNCE, eq. 4).
- [1] Chen, Kornblith, Norouzi, Hinton. A Simple Framework for Contrastive Learning of Visual
  Representations. ICML 2020, arXiv:2002.05709 (NT-Xent, eq. 1).

Both are plain functions of embeddings. They do not L2-normalise, gather across processes or cast:
callers do that first, so each method keeps the arithmetic (and the bits) it was written with.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def info_nce(
    query: Tensor,
    keys: Tensor,
    temperature: float | None,
    *,
    positives: Tensor | None = None,
    positive_keys: Tensor | None = None,
    exclude: Tensor | None = None,
) -> Tensor:
    """InfoNCE of [0]: cross-entropy of each query picking its positive out of similarity logits.

    The logits are dot products ``query @ keys.T`` over ``temperature``. Where the positive is among
    the keys, ``positives[i]`` is its index (default ``i``: key i is query i's positive). Where the
    positive is a separate key per query (a momentum encoder's key, a memory-bank row), pass it as
    ``positive_keys``: its dot product ``(query[i] * positive_keys[i]).sum()`` becomes logit 0 of row
    i, in front of the M negatives of ``keys``, and the target is 0.

    Args:
        query: anchors, L2-normalised by the caller for cosine similarity. Shape: (N, D).
        keys: candidates (or, with ``positive_keys``, negatives only). Shape: (M, D).
        temperature: divides the logits (> 0); None keeps raw dot products.
        positives: index into ``keys`` of each query's positive, int64; None = ``arange(N)``. Shape: (N,).
        positive_keys: each query's own positive, outside ``keys``; excludes ``positives``. Shape: (N, D).
        exclude: True where key j must not count for query i (an anchor itself, its own bank row);
            its logit becomes -inf. Shape: (N, M).

    Returns:
        Scalar loss, the mean over the N queries.

    Raises:
        ValueError: when both ``positives`` and ``positive_keys`` are given.
    """
    logits = query @ keys.T  # (N, M)
    if positive_keys is not None:
        if positives is not None:
            raise ValueError("info_nce: pass positives (indices into keys) or positive_keys, not both")
        logits = torch.cat([(query * positive_keys).sum(dim=1, keepdim=True), logits], dim=1)  # (N, 1 + M)
        positives = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
        exclude = None if exclude is None else F.pad(exclude, (1, 0))  # the positive always counts
    elif positives is None:
        positives = torch.arange(query.shape[0], device=query.device)
    if temperature is not None:
        logits = logits / temperature
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    return F.cross_entropy(logits, positives)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent of [1], eq. 1: InfoNCE over the 2N embeddings of two views, averaged over all 2N anchors.

    Row i of ``z1`` and row i of ``z2`` are a positive pair; every other row of both is a negative,
    and an anchor never counts itself. Similarities are cosine (both views are L2-normalised here).

    Args:
        z1: embeddings of the first views. Shape: (N, D).
        z2: embeddings of the second views. Shape: (N, D).
        temperature: softmax temperature (> 0).

    Returns:
        Scalar loss.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    n = z1.shape[0]
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    return info_nce(z, z, temperature, positives=positives, exclude=self_pairs)
