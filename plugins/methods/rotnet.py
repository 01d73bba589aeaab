"""RotNet: learn features by predicting which of four quarter turns was applied to an image.

- [0] Gidaris, Singh, Komodakis. Unsupervised Representation Learning by Predicting Image Rotations.
  ICLR 2018, arXiv:1803.07728.

Every image of the batch enters the same batch in all four rotations (0, 90, 180, 270 degrees
counter-clockwise), as [0] found best (Sec. 2.2, "rotate all four in the same mini-batch"), so a step
of batch size B forwards 4B images. A 4-way classification head on the backbone's pooled features is
trained with cross-entropy on the rotation index; only the backbone is evaluated downstream.

Defaults: a linear head (``head = "mlp"`` adds one hidden Linear-BN-ReLU layer); views
``("crop_flip",)``, the random crop and flip [0] applies on CIFAR-10. Views must be square (a quarter
turn must keep the shape): a non-square view is a ``ValueError``. The views are already normalised;
rotating a normalised image is the same as normalising a rotated one (per-channel statistics).

Deviations from [0]:
    - [0] attaches its classifier to intermediate conv blocks of a NIN (CIFAR) or to AlexNet's fc
      layers (ImageNet); here the head sits on the backbone's globally pooled features, whatever the
      backbone, so the same method runs on every registered backbone.
    - The optimizer and schedule are chosen by the benchmark file (SGD, lr 0.1, step decay in [0]).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch, Method, MethodParams, Register, hookimpl
from ssl_bench.harness.kit.augment import all_rotations
from ssl_bench.harness.kit.heads import mlp_head

NUM_ROTATIONS = 4


def rotation_head(in_dim: int, kind: Literal["linear", "mlp"], hidden_dim: int) -> nn.Module:
    """The rotation classifier. Shape: (N, in_dim) -> (N, 4)."""
    if kind == "linear":
        return nn.Linear(in_dim, NUM_ROTATIONS)
    return mlp_head(in_dim, hidden_dim, NUM_ROTATIONS)


def rotation_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over the 4B rotated images.

    Args:
        logits: rotation scores, shape (4B, 4).
        labels: quarter turns of each row, int64 (4B,) in {0, 1, 2, 3}.

    Returns:
        Scalar loss; ``log(4)`` when the logits cannot tell the rotations of an image apart and
        are uniform, and at least ``log(4)`` whenever the four rotations of an image get one score.
    """
    return F.cross_entropy(logits, labels)


class RotNet(Method):
    """RotNet [0]: 4-way rotation classification of every image in all of its four rotations."""

    name = "rotnet"

    class Params(MethodParams):
        views: tuple[str] = ("crop_flip",)
        """The augmentation pipeline of the images that are then rotated; must give square images."""
        head: Literal["linear", "mlp"] = "linear"
        """Rotation classifier on the pooled features: one linear layer, or a 2-layer MLP."""
        hidden_dim: Annotated[int, Field(gt=0)] | None = None
        """Hidden width of the MLP head; None = the backbone's feature dimension. Unused when linear."""

    params: Params

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        hidden = params.hidden_dim or backbone.feature_dim
        self.head = rotation_head(backbone.feature_dim, params.head, hidden)

    def loss(self, batch: Batch) -> Tensor:
        """Cross-entropy of the rotation head over the view (B, C, S, S) in its 4 rotations (4B images)."""
        images, labels = all_rotations(batch.views[0])
        return rotation_loss(self.head(self.backbone(images)), labels)


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(RotNet)
