"""Momentum (EMA) target networks, shared by methods with a slow-moving copy of their encoder.

- [0] He, Fan, Wu, Xie, Girshick. Momentum Contrast for Unsupervised Visual Representation
  Learning. CVPR 2020, arXiv:1911.05722 (constant momentum m, eq. 2).
- [1] Grill et al. Bootstrap Your Own Latent. NeurIPS 2020, arXiv:2006.07733 (cosine schedule of
  the target decay rate, section 3.2).

Only parameters move; buffers (batch-norm running statistics) are left to the target's own forward
passes, as in the reference implementations: targets run in training mode, on batch statistics.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters have ``requires_grad=False``.

    The harness builds its optimizer over parameters that require gradients, so the copy is never
    stepped by it; it only moves through :func:`ema_update`.
    """
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Move every parameter of ``target`` towards ``online``: ``t <- tau * t + (1 - tau) * o``.

    Args:
        target: the slow copy (same architecture as ``online``), updated in place.
        online: the trained network.
        tau: decay rate in [0, 1]; 1 leaves ``target`` unchanged, 0 copies ``online``.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    t_params, o_params = list(target.parameters()), list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError("target and online networks have different parameter lists")
    for t, o in zip(t_params, o_params):
        t.lerp_(o.detach().to(t.dtype), 1.0 - tau)


def cosine_tau(tau_base: float, step: int, total_steps: int) -> float:
    """BYOL's decay rate at ``step`` of ``total_steps`` ([1], sec. 3.2).

    ``tau = 1 - (1 - tau_base) * (cos(pi * step / total_steps) + 1) / 2``: ``tau_base`` at step 0,
    rising to 1 at the last step.
    """
    if total_steps <= 0:
        return tau_base
    progress = min(max(step / total_steps, 0.0), 1.0)
    return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def ema_rows(rows: Tensor, feats: Tensor, momentum: float) -> Tensor:
    """Memory-bank update of PIRL and CMC (Wu et al. 2018): ``normalise(m * row + (1 - m) * normalise(f))``.

    Args:
        rows: current L2-normalised bank rows (K, D).
        feats: new features of the same samples (K, D), normalised here.
        momentum: m in [0, 1]; the share of the old row kept.

    Returns:
        The new rows (K, D), L2-normalised, in ``rows``' dtype.
    """
    feats = F.normalize(feats.to(rows.dtype), dim=1)
    return F.normalize(momentum * rows + (1 - momentum) * feats, dim=1)
