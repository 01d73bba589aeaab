"""Barlow Twins: drive the cross-correlation of two views' embeddings towards the identity matrix.

- [0] Zbontar, Jing, Misra, LeCun, Deny. Barlow Twins: Self-Supervised Learning via Redundancy Reduction.
  ICML 2021, arXiv:2103.03230.

Both views go through one backbone and a 3-layer projector (Linear-BN-ReLU twice, then Linear). Each
embedding column is standardised over the batch, ``C = z1_std.T @ z2_std / N`` is their (D, D)
cross-correlation, and the loss (eq. 1) is ``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2``: the
invariance term makes each unit agree across views, the redundancy-reduction term decorrelates units.

Defaults and why (paper values scaled to CIFAR-size runs):
    Projector 512-512-512 ([0]: 8192-8192-8192 on a 2048-d ResNet-50; an 8192-wide MLP would dwarf a
    small backbone's compute on a CPU). lambda = 5e-3 * 8192 / proj_dim (0.08 at 512) when left unset:
    each unit has one diagonal term against D - 1 off-diagonal ones, so holding lambda * D at [0]'s value
    keeps the balance between invariance and decorrelation of [0] at any width. Views ("byol",
    "byol_prime"): [0] trains with BYOL's asymmetric pair (blur 1.0 / 0.1, solarisation 0 / 0.2).

Deviations from [0]:
    - The optimizer is chosen by the benchmark file ([0]: LARS, lr 0.2 weights / 0.0048 biases, wd 1.5e-6).
    - Standardisation divides by the biased standard deviation with eps 1e-5 (batch norm without affine,
      as [0]'s code); [0]'s pseudocode divides by the unbiased ``std(0)``.
    - Statistics are those of the global batch: embeddings are gathered through :func:`harness.gather`
      (with gradients) and every process evaluates the loss of the whole batch; [0]'s code all-reduces C.
      The projector's hidden batch norms are per process unless the benchmark synchronises them.
    - The loss is computed in float32 whatever the autocast precision.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from ssl_bench.harness import Backbone, Batch, Method, MethodParams, Register, gather, hookimpl
from ssl_bench.harness.kit.mlp import mlp

PAPER_LAMBDA_TIMES_DIM = 5e-3 * 8192
"""[0]'s lambda (5e-3) times its embedding width (8192)."""
STANDARDIZE_EPS = 1e-5
"""Added to the variance before the square root (batch norm's default, as [0]'s code)."""


def standardize(z: Tensor, eps: float = STANDARDIZE_EPS) -> Tensor:
    """Each column to zero mean and unit (biased) variance over the batch, in float32.

    Args:
        z: embeddings. Shape: (N, D).
        eps: added to the variance.

    Returns:
        ``(z - mean) / sqrt(var + eps)``. Shape: (N, D).
    """
    z = z.float()
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)


def cross_correlation(z1: Tensor, z2: Tensor) -> Tensor:
    """[0]'s C: the cross-correlation of the batch-standardised views. Shapes: (N, D) x 2 -> (D, D)."""
    return standardize(z1).T @ standardize(z2) / z1.shape[0]


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambda_offdiag: float) -> Tensor:
    """Eq. 1 of [0]: ``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2``.

    Args:
        z1: embeddings of the first views (the whole batch: gather first). Shape: (N, D).
        z2: embeddings of the second views. Shape: (N, D).
        lambda_offdiag: weight of the redundancy-reduction (off-diagonal) term (> 0).

    Returns:
        Scalar loss.
    """
    c = cross_correlation(z1, z2)
    off = ~torch.eye(c.shape[0], dtype=torch.bool, device=c.device)
    return (1 - c.diagonal()).pow(2).sum() + lambda_offdiag * c[off].pow(2).sum()


class BarlowTwins(Method):
    """Barlow Twins [0]: cross-correlation of standardised projections pushed to the identity."""

    name = "barlow_twins"

    class Params(MethodParams):
        views: tuple[str, str] = ("byol", "byol_prime")
        """The two augmentation pipelines ([0]: BYOL's T and T')."""
        proj_hidden_dim: Annotated[int, Field(gt=0)] = 512
        """Width of the projector's two hidden layers ([0]: 8192)."""
        proj_dim: Annotated[int, Field(gt=1)] = 512
        """Embedding width D, the side of the cross-correlation matrix ([0]: 8192)."""
        lambda_offdiag: Annotated[float, Field(gt=0)] | None = None
        """Weight of the off-diagonal terms; None = 5e-3 * 8192 / proj_dim ([0]'s lambda * D held fixed)."""

    params: Params

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        h = params.proj_hidden_dim
        self.projector = mlp([backbone.feature_dim, h, h, params.proj_dim], last_bias=False)  # C ignores a shift

    @property
    def lambda_offdiag(self) -> float:
        """The weight in use: the parameter, or [0]'s value scaled to ``proj_dim``."""
        return self.params.lambda_offdiag or PAPER_LAMBDA_TIMES_DIM / self.params.proj_dim

    def loss(self, batch: Batch) -> Tensor:
        """Barlow Twins loss of the two views (each (B, C, H, W)) over the global batch."""
        z1, z2 = (self.projector(self.backbone(v)) for v in batch.views)
        return barlow_twins_loss(gather(z1), gather(z2), self.lambda_offdiag)


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(BarlowTwins)
