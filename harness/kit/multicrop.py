"""Multi-crop forward passes: consecutive views of one size go through a network together.

- [0] Caron et al. Unsupervised Learning of Visual Features by Contrasting Cluster Assignments (SwAV).
  NeurIPS 2020, arXiv:2006.09882 (multi-crop; its code concatenates the crops of one resolution).
- [1] Caron et al. Emerging Properties in Self-Supervised Vision Transformers (DINO). ICCV 2021,
  arXiv:2104.14294 (the same, for 2 global and several local crops).

One pass per run of same-size views rather than one per view: a vision transformer needs one token count
per pass, and batch-norm statistics are shared by the crops of one size, as in [0, 1]'s code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def forward_by_size(fn: Callable[[Tensor], Tensor], views: Sequence[Tensor]) -> list[Tensor]:
    """``fn`` over each run of consecutive views of one shape, concatenated along the batch.

    Args:
        fn: a network, (n * B, C, H, W) -> (n * B, ...); row order is kept.
        views: V views, each (B, C, H_v, W_v); consecutive equal shapes share one call.

    Returns:
        V outputs, one per view, in order, each (B, ...).
    """
    out: list[Tensor] = []
    start = 0
    while start < len(views):
        end = start + 1
        while end < len(views) and views[end].shape == views[start].shape:
            end += 1
        out.extend(fn(torch.cat(list(views[start:end]))).tensor_split(end - start))
        start = end
    return out
