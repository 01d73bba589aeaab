"""Heads that methods add to a backbone."""

from __future__ import annotations

from torch import nn


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int, *, batch_norm: bool = True) -> nn.Sequential:
    """Linear-BN-ReLU-Linear (Linear-ReLU-Linear without ``batch_norm``). Shape: (B, in_dim) -> (B, out_dim).

    The projection heads of SimCLR (arXiv:2002.05709) and MoCo v2 (arXiv:2003.04297, no BN), BYOL's
    projector and predictor (arXiv:2006.07733), and the MLP classifiers of the pretext tasks.
    """
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=not batch_norm),
        *([nn.BatchNorm1d(hidden_dim)] if batch_norm else []),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )
