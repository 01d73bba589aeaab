"""MoCo v3: queries with a predictor against a momentum encoder's keys of the same batch, no queue.

- [0] Chen, Xie, He. An Empirical Study of Training Self-Supervised Vision Transformers. ICCV 2021,
  arXiv:2104.02057.

The query encoder is the backbone, a 3-layer projector and a 2-layer predictor (BN on every layer, the
output layers' without affine parameters, as [0]'s code); the momentum (key) encoder is a copy of the
backbone and projector that moves only by ``key <- m * key + (1 - m) * query`` after each optimizer step,
with m rising from ``momentum_base`` to 1 on a cosine (BYOL's schedule, which [0] uses for ResNets).
The loss is [0]'s Algorithm 1: ``ctr(q1, k2) + ctr(q2, k1)``, where ``ctr(q, k)`` is the InfoNCE of each
L2-normalised query against every key of the global batch (its own image's key is the positive),
multiplied by ``2 * tau``.

Defaults and why (paper values scaled to CIFAR-size runs):
    temperature 0.2: [0] uses 1.0 for ResNet-50 with 4096-image batches and 0.2 for ViTs; with a few
    hundred keys per batch, logits in [-1, 1] (tau 1) barely separate the positive, and 0.2 is also MoCo
    v2's (here) and the usual CIFAR choice. momentum_base 0.99, cosine-increased to 1, as [0]'s ResNet
    recipe. Projector 512-512-128 and predictor hidden 512 ([0]: 4096-4096-256 and 4096). Views ("byol",
    "byol_prime"): [0] trains with BYOL's asymmetric pair (blur 1.0 / 0.1, solarisation 0 / 0.2).

Deviations from [0]:
    - tau 0.2, not [0]'s 1.0 for ResNets (above).
    - The projector has 3 layers, as [0]'s text; [0]'s code gives ResNets a 2-layer one.
    - The optimizer is chosen by the benchmark file ([0]: LARS for ResNets, AdamW for ViTs).
    - The momentum update runs in :meth:`on_step_end`, after the optimizer step; [0] does it at the start
      of the next forward, which is the same sequence.
    - Keys are gathered through :func:`harness.gather` (they carry no gradient), queries stay local, as
      [0]; batch norm is per process unless the benchmark synchronises it ([0] used synchronised BN).
    - The loss is computed in float32 whatever the autocast precision.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch, Method, MethodParams, Register, gather, hookimpl, rank
from ssl_bench.harness.kit.losses import info_nce
from ssl_bench.harness.kit.mlp import mlp
from ssl_bench.harness.kit.momentum import cosine_tau, ema_update, frozen_copy


def moco_v3_contrastive(q: Tensor, k: Tensor, temperature: float, offset: int = 0) -> Tensor:
    """``ctr`` of [0], Algorithm 1: ``2 tau`` times the InfoNCE of each query against all keys.

    Args:
        q: this process's queries, L2-normalised here. Shape: (N, D).
        k: the keys of the global batch, L2-normalised here; key ``offset + i`` is query i's positive.
            Shape: (M, D), M >= offset + N.
        temperature: tau (> 0).
        offset: index of this process's first key (rank * N); 0 in a single process.

    Returns:
        Scalar loss, the mean over the N queries.
    """
    q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
    positives = torch.arange(offset, offset + q.shape[0], device=q.device)
    return 2 * temperature * info_nce(q, k, temperature, positives=positives)


class MoCoV3(Method):
    """MoCo v3 [0]: predictor queries against in-batch momentum keys, symmetrised, no queue."""

    name = "moco_v3"

    class Params(MethodParams):
        views: tuple[str, str] = ("byol", "byol_prime")
        """The two augmentation pipelines ([0]: BYOL's T and T')."""
        temperature: Annotated[float, Field(gt=0)] = 0.2
        """Softmax temperature tau ([0]: 1.0 for ResNet-50, 0.2 for ViTs)."""
        momentum_base: Annotated[float, Field(ge=0, le=1)] = 0.99
        """Momentum m at step 0, rising to 1 on a cosine ([0]: 0.99)."""
        proj_hidden_dim: Annotated[int, Field(gt=0)] = 512
        """Width of the projector's hidden layers ([0]: 4096)."""
        proj_dim: Annotated[int, Field(gt=0)] = 128
        """Output width of the projector and predictor ([0]: 256)."""
        pred_hidden_dim: Annotated[int, Field(gt=0)] = 512
        """Hidden width of the predictor ([0]: 4096)."""

    params: Params

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        h, d = params.proj_hidden_dim, params.proj_dim
        self.projector = mlp([backbone.feature_dim, h, h, d], last_bn=True, last_affine=False)
        self.predictor = mlp([d, params.pred_hidden_dim, d], last_bn=True, last_affine=False)
        self.momentum_encoder = frozen_copy(nn.Sequential(backbone, self.projector))

    def loss(self, batch: Batch) -> Tensor:
        """``ctr(q1, k2) + ctr(q2, k1)`` of the two views (each (B, C, H, W)) against the global batch's keys."""
        x1, x2 = batch.views
        q1, q2 = (self.predictor(self.projector(self.backbone(x))) for x in (x1, x2))
        with torch.no_grad():
            k1, k2 = gather(self.momentum_encoder(x1)), gather(self.momentum_encoder(x2))
        offset, t = rank() * q1.shape[0], self.params.temperature
        return moco_v3_contrastive(q1, k2, t, offset) + moco_v3_contrastive(q2, k1, t, offset)

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Move the momentum encoder towards the backbone and projector with the scheduled momentum."""
        m = cosine_tau(self.params.momentum_base, step, total_steps)
        ema_update(self.momentum_encoder, nn.Sequential(self.backbone, self.projector), m)


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(MoCoV3)
