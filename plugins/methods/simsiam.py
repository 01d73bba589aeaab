"""SimSiam: a predictor matches the other view's projection, with a stop-gradient and nothing else.

- [0] Chen, He. Exploring Simple Siamese Representation Learning. CVPR 2021, arXiv:2011.10566.

One backbone and a 3-layer projector f (Linear-BN-ReLU twice, then Linear-BN) embed both views; a
2-layer bottleneck predictor h (Linear-BN-ReLU, Linear) maps each projection z to p. The loss (eq. 4)
is the symmetrised negative cosine ``D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2`` with
``D(p, z) = -cos(p, z)`` averaged over the batch, in [-1, 1]; ``sg`` stops the gradient, the one thing
([0], sec. 4.1) that keeps the outputs from collapsing. No negatives, no momentum encoder.

Defaults and why (paper values scaled to CIFAR-size runs):
    Projector 512-512-512 and predictor hidden 128 ([0]: 2048-2048-2048 and 512 on a 2048-d ResNet-50;
    the predictor keeps [0]'s 4x bottleneck). The projector's output batch norm has no affine parameters,
    as [0]'s code. Views ("moco_v2", "moco_v2"): [0] uses MoCo v2's symmetric augmentation (crop 0.2..1,
    jitter 0.4/0.4/0.4/0.1 at 0.8, grayscale 0.2, blur at 0.5), which is exactly that pipeline.

Deviations from [0]:
    - The optimizer and schedule are chosen by the benchmark file and apply to the predictor too ([0]:
      SGD, lr 0.05 x batch / 256, wd 1e-4, cosine decay, with the predictor kept at the base lr).
    - Nothing crosses processes: the loss is a mean over samples, so the DDP-averaged gradient of the
      per-process losses is the global batch's, and :func:`harness.gather` is not needed. Batch norm is
      per process unless the benchmark synchronises it ([0] used synchronised BN).
    - The loss is computed in float32 whatever the autocast precision.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import Tensor
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch, Method, MethodParams, Register, hookimpl
from ssl_bench.harness.kit.mlp import mlp


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """Eq. 1 and 3 of [0]: ``-mean_i cos(p_i, sg(z_i))``; no gradient reaches ``z``.

    Args:
        p: predictions. Shape: (N, D).
        z: target projections, detached here. Shape: (N, D).

    Returns:
        Scalar in [-1, 1].
    """
    p = F.normalize(p.float(), dim=1)
    z = F.normalize(z.detach().float(), dim=1)
    return -(p * z).sum(dim=1).mean()


def simsiam_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """Eq. 4 of [0]: ``D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2``. Shapes: (N, D) x 4 -> (), in [-1, 1]."""
    return negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2


class SimSiam(Method):
    """SimSiam [0]: predictor onto the other view's stop-gradient projection, symmetrised."""

    name = "simsiam"

    class Params(MethodParams):
        views: tuple[str, str] = ("moco_v2", "moco_v2")
        """The two augmentation pipelines ([0]: MoCo v2's, for both views)."""
        proj_hidden_dim: Annotated[int, Field(gt=0)] = 512
        """Width of the projector's two hidden layers ([0]: 2048)."""
        proj_dim: Annotated[int, Field(gt=0)] = 512
        """Output width of the projector and the predictor ([0]: 2048)."""
        pred_hidden_dim: Annotated[int, Field(gt=0)] = 128
        """Bottleneck width of the predictor ([0]: 512, a quarter of proj_dim)."""

    params: Params

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        h, d = params.proj_hidden_dim, params.proj_dim
        self.projector = mlp([backbone.feature_dim, h, h, d], last_bn=True, last_affine=False)
        self.predictor = mlp([d, params.pred_hidden_dim, d])

    def loss(self, batch: Batch) -> Tensor:
        """Symmetrised negative cosine of each view's prediction and the other's projection (views (B, C, H, W))."""
        z1, z2 = (self.projector(self.backbone(v)) for v in batch.views)
        return simsiam_loss(self.predictor(z1), self.predictor(z2), z1, z2)


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(SimSiam)
