"""VICReg: variance-invariance-covariance regularisation of two views' embeddings.

- [0] Bardes, Ponce, LeCun. VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
  Learning. ICLR 2022, arXiv:2105.04906.

Both views go through one backbone and a 3-layer expander (Linear-BN-ReLU twice, then Linear). The loss
(eq. 6) weighs three terms of the expanded embeddings Z, Z' (N, D):

- invariance ``s``: mean squared difference of the two views' embeddings;
- variance ``v``: per column, a hinge ``max(0, gamma - sqrt(Var + eps))`` on its standard deviation over the
  batch, averaged over columns and the two views (eq. 1);
- covariance ``c``: the squared off-diagonal entries of each view's covariance matrix (eq. 3-4), summed,
  divided by D, summed over the two views.

The terms are exposed, unweighted, by :meth:`VICReg.loss_terms`; :meth:`VICReg.loss` returns them beside
the weighted total (a :class:`~ssl_bench.harness.LossTerms`, logged as ``loss/invariance``, ``loss/variance``,
``loss/covariance``) and keeps them, detached, as ``last_terms``.

Defaults and why:
    Coefficients 25 / 25 / 1, gamma 1, eps 1e-4, as [0]. Expander 512-512-512 ([0]: 8192 x 3 on a 2048-d
    ResNet-50; an 8192-wide MLP would dwarf a small backbone's compute on a CPU). Views ("byol",
    "byol_prime"): [0] trains with BYOL's asymmetric pair (blur 1.0 / 0.1, solarisation 0 / 0.2).

Deviations from [0]:
    - The terms are normalised as in [0]'s code, for which 25 / 25 / 1 were tuned, not as its equations:
      the invariance is averaged over the N * D entries (eq. 5 sums over D) and the variance term is
      ``(v(Z) + v(Z')) / 2`` (eq. 6 has ``v(Z) + v(Z')``). Variances and covariances are unbiased (N - 1).
    - The optimizer is chosen by the benchmark file ([0]: LARS, base lr 0.2 x batch / 256, wd 1e-6).
    - Statistics are those of the global batch: embeddings are gathered through :func:`harness.gather`
      (with gradients) and every process evaluates all three terms on the whole batch ([0]'s code gathers
      for v and c only; s is the same either way). The expander's hidden batch norms are per process
      unless the benchmark synchronises them.
    - The loss is computed in float32 whatever the autocast precision.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch, LossTerms, Method, MethodParams, Register, gather, hookimpl
from ssl_bench.harness.kit.mlp import mlp


def variance_hinge(z: Tensor, gamma: float, eps: float) -> Tensor:
    """Eq. 1 of [0]: ``mean_j max(0, gamma - sqrt(Var(z[:, j]) + eps))``, unbiased variance. Shape: (N, D) -> ()."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_penalty(z: Tensor) -> Tensor:
    """Eq. 3-4 of [0]: ``sum_{i != j} Cov(z)_ij^2 / D``, unbiased covariance. Shape: (N, D) -> ()."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = z.T @ z / (n - 1)
    off = ~torch.eye(d, dtype=torch.bool, device=z.device)
    return cov[off].pow(2).sum() / d


def vicreg_terms(z1: Tensor, z2: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> dict[str, Tensor]:
    """The three unweighted terms of [0] (normalised as [0]'s code), in float32.

    Args:
        z1: embeddings of the first views (the whole batch: gather first). Shape: (N, D).
        z2: embeddings of the second views. Shape: (N, D).
        gamma: target standard deviation of every column.
        eps: added to each variance before the square root.

    Returns:
        ``{"invariance", "variance", "covariance"}``, each a scalar tensor.
    """
    z1, z2 = z1.float(), z2.float()
    return {
        "invariance": F.mse_loss(z1, z2),
        "variance": (variance_hinge(z1, gamma, eps) + variance_hinge(z2, gamma, eps)) / 2,
        "covariance": covariance_penalty(z1) + covariance_penalty(z2),
    }


class VICReg(Method):
    """VICReg [0]: invariance between views, a variance hinge and decorrelation within each view."""

    name = "vicreg"

    class Params(MethodParams):
        views: tuple[str, str] = ("byol", "byol_prime")
        """The two augmentation pipelines ([0]: BYOL's T and T')."""
        invariance_weight: Annotated[float, Field(ge=0)] = 25.0
        """lambda, the weight of the invariance term ([0]: 25)."""
        variance_weight: Annotated[float, Field(ge=0)] = 25.0
        """mu, the weight of the variance term ([0]: 25)."""
        covariance_weight: Annotated[float, Field(ge=0)] = 1.0
        """nu, the weight of the covariance term ([0]: 1)."""
        gamma: Annotated[float, Field(gt=0)] = 1.0
        """Target standard deviation of each embedding column ([0]: 1)."""
        eps: Annotated[float, Field(gt=0)] = 1e-4
        """Added to each variance before the square root, for stability ([0]: 1e-4)."""
        proj_hidden_dim: Annotated[int, Field(gt=0)] = 512
        """Width of the expander's two hidden layers ([0]: 8192)."""
        proj_dim: Annotated[int, Field(gt=1)] = 512
        """Embedding width D ([0]: 8192)."""

    params: Params

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        h = params.proj_hidden_dim
        self.projector = mlp([backbone.feature_dim, h, h, params.proj_dim], last_bias=False)  # no term sees a shift
        self.last_terms: dict[str, Tensor] = {}

    def loss_terms(self, batch: Batch) -> dict[str, Tensor]:
        """Unweighted invariance, variance and covariance (scalars, with gradients) of the global batch."""
        z1, z2 = (self.projector(self.backbone(v)) for v in batch.views)
        return vicreg_terms(gather(z1), gather(z2), self.params.gamma, self.params.eps)

    def loss(self, batch: Batch) -> LossTerms:
        """``25 s + 25 v + 1 c`` of the two views (each (B, C, H, W)), with the unweighted s, v, c as its terms;
        sets ``last_terms``."""
        terms = self.loss_terms(batch)
        self.last_terms = {k: t.detach() for k, t in terms.items()}
        p = self.params
        total = (p.invariance_weight * terms["invariance"] + p.variance_weight * terms["variance"]
                 + p.covariance_weight * terms["covariance"])
        return LossTerms(total, terms)


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(VICReg)
