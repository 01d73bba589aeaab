"""BYOL: an online network predicts a slow-moving target network's projection of another view.

- [0] Grill, Strub, Altché, Tallec, Richemond, Buchatskaya, Doersch, Pires, Guo, Azar, Piot,
  Kavukcuoglu, Munos, Valko. Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning.
  NeurIPS 2020, arXiv:2006.07733.

Online network: backbone -> projector -> predictor (both MLPs Linear-BN-ReLU-Linear, as [0]). Target
network: a copy of backbone -> projector that moves only by exponential moving average after every
optimizer step, with the decay rate on [0]'s cosine schedule
``tau = 1 - (1 - tau_base) * (cos(pi * k / K) + 1) / 2`` (k = step, K = total steps). The loss is
[0]'s symmetrised regression ``2 - 2 cos(p, z')``: view 1's prediction against view 2's target
projection plus the swapped pair, each averaged over the batch (eq. 2 and 3). The two directions are
returned beside their sum as named terms (a :class:`~ssl_bench.harness.LossTerms`, logged as
``loss/v1_to_v2`` and ``loss/v2_to_v1``).

Defaults and why (paper values scaled to CIFAR-size runs):
    Projector hidden 512 and output 128, predictor hidden 512 ([0]: 4096 and 256 on a 2048-d
    ResNet-50; small backbones have 128-512 features, and a 4096-wide MLP would dominate the compute
    of a CPU run). tau_base 0.99 ([0]: 0.996): short runs of a few hundred steps need a target that
    keeps up. Views ("byol", "byol_prime"): the two asymmetric augmentation pipelines of [0] (blur
    probability 1.0 / 0.1, solarisation 0 / 0.2). What was measured choosing these and the benchmark's
    optimizer is in leaderboard/findings.toml (``[methods] byol``).

Deviations from [0]:
    - The optimizer is chosen by the benchmark file ([0]: LARS, lr 0.2 x batch/256, wd 1.5e-6).
    - Only parameters are averaged; the target's BN running statistics are its own (it runs in
      training mode, on batch statistics, like the online network).
    - No negatives, so nothing is gathered across processes; batch norm is per process unless the
      benchmark synchronises it ([0] used cross-replica BN).
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch, LossTerms, Method, MethodParams, Register, hookimpl
from ssl_bench.harness.kit.heads import mlp_head
from ssl_bench.harness.kit.momentum import cosine_tau, ema_update, frozen_copy


def regression_loss(p: Tensor, z: Tensor) -> Tensor:
    """``2 - 2 cos(p, z)`` of [0], eq. 2, averaged over the batch; in [0, 4].

    Args:
        p: online predictions, shape (N, D).
        z: target projections, shape (N, D); treated as constants (no gradient flows into them).

    Returns:
        Scalar loss.
    """
    p = F.normalize(p.float(), dim=1)
    z = F.normalize(z.detach().float(), dim=1)
    return (2 - 2 * (p * z).sum(dim=1)).mean()


def byol_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """The symmetrised BYOL loss of [0], eq. 3: view 1 predicts view 2's target and vice versa.

    Args:
        p1, p2: online predictions of views 1 and 2, shape (N, D).
        z1, z2: target projections of views 1 and 2, shape (N, D).

    Returns:
        Scalar loss in [0, 8].
    """
    return regression_loss(p1, z2) + regression_loss(p2, z1)


class BYOL(Method):
    """BYOL [0]: online predictor regresses the EMA target's projection, symmetrised over views."""

    name = "byol"

    class Params(MethodParams):
        views: tuple[str, str] = ("byol", "byol_prime")
        """The two augmentation pipelines ([0]: T and T')."""
        proj_hidden_dim: Annotated[int, Field(gt=0)] = 512
        """Hidden width of the projector ([0]: 4096)."""
        proj_dim: Annotated[int, Field(gt=0)] = 128
        """Output dimension of the projector and predictor ([0]: 256)."""
        pred_hidden_dim: Annotated[int, Field(gt=0)] = 512
        """Hidden width of the predictor ([0]: 4096)."""
        tau_base: Annotated[float, Field(ge=0, le=1)] = 0.99
        """Target decay rate at step 0, rising to 1 on a cosine ([0]: 0.996)."""

    params: Params

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        self.projector = mlp_head(backbone.feature_dim, params.proj_hidden_dim, params.proj_dim)
        self.predictor = mlp_head(params.proj_dim, params.pred_hidden_dim, params.proj_dim)
        self.target = frozen_copy(nn.Sequential(backbone, self.projector))

    def loss(self, batch: Batch) -> LossTerms:
        """Symmetrised regression of each view's prediction onto the other view's target projection
        (:func:`byol_loss`), with its two directions as terms: ``v1_to_v2`` (view 1 predicts view 2's
        target) and ``v2_to_v1``."""
        x1, x2 = batch.views
        p1, p2 = (self.predictor(self.projector(self.backbone(x))) for x in (x1, x2))
        with torch.no_grad():
            z1, z2 = self.target(x1), self.target(x2)
        forward, backward = regression_loss(p1, z2), regression_loss(p2, z1)  # byol_loss's two terms, in its order
        return LossTerms(forward + backward, {"v1_to_v2": forward, "v2_to_v1": backward})

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Move the target towards the online backbone and projector with the scheduled tau."""
        tau = cosine_tau(self.params.tau_base, step, total_steps)
        ema_update(self.target, nn.Sequential(self.backbone, self.projector), tau)


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(BYOL)
