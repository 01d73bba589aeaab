"""SimCLR: contrastive learning with NT-Xent between two augmented views of each image.

- [0] Chen, Kornblith, Norouzi, Hinton. A Simple Framework for Contrastive Learning of Visual
  Representations. ICML 2020, arXiv:2002.05709.

Defaults: temperature 0.5 and a 2-layer MLP head (hidden = feature dim, output 128), as [0] used for
CIFAR-10 (appendix B.9). The transfer study uses temperature 0.7, the SimCLR-vs-RotNet study a
2048-d output. Study variants are views, not code: v1 = ("simclr", "simclr"), v2.1 = ("simclr",
"jigsaw_2x2"), v2.2 = ("simclr+jigsaw_2x2", "jigsaw_2x2"). The loss is
:func:`ssl_bench.harness.kit.losses.nt_xent`.

Deviations from [0]: the optimizer is chosen by the benchmark file (LARS in [0]); negatives come from
the global batch through :func:`harness.gather` exactly as in [0], but batch norm is not synchronised
across processes unless the benchmark asks for it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import Tensor

from ssl_bench.harness import Backbone, Batch, Method, MethodParams, Register, gather, hookimpl
from ssl_bench.harness.kit.heads import mlp_head
from ssl_bench.harness.kit.losses import nt_xent


class SimCLR(Method):
    """SimCLR [0]: two views per image, MLP projection, NT-Xent over the (global) batch."""

    name = "simclr"

    class Params(MethodParams):
        views: tuple[str, str] = ("simclr", "simclr")
        """The two augmentation pipelines (v1: simclr + simclr)."""
        temperature: Annotated[float, Field(gt=0)] = 0.5
        """Softmax temperature of NT-Xent ([0] uses 0.5 on CIFAR-10; the transfer study 0.7)."""
        proj_hidden_dim: Annotated[int, Field(gt=0)] | None = None
        """Hidden width of the projection MLP; None = the backbone's feature dimension, as in [0]."""
        proj_dim: Annotated[int, Field(gt=0)] = 128
        """Output dimension of the projection MLP."""

    params: Params

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        hidden = params.proj_hidden_dim or backbone.feature_dim
        self.projector = mlp_head(backbone.feature_dim, hidden, params.proj_dim)

    def loss(self, batch: Batch) -> Tensor:
        """NT-Xent between the projections of the two views (each (B, C, H, W))."""
        z1, z2 = (self.projector(self.backbone(v)) for v in batch.views)
        return nt_xent(gather(z1), gather(z2), self.params.temperature)


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(SimCLR)
