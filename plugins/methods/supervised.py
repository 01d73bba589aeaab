"""Supervised baseline: the backbone trained with labels and cross-entropy.

The upper reference of every table in the studies (the transfer study: "supervised" rows; the survey's
"supervised" baselines). It sees the same images, budget and optimizer as the SSL methods, with the
standard crop-and-flip augmentation, and only its backbone is evaluated downstream.

It reads labels (``uses_labels``), so it trains on the pretraining split less the validation rows that
its evaluations (and a pretraining sweep) choose hyper-parameters on: where an evaluation sweeps on the
pretraining dataset, the labels of those rows would otherwise have shaped the encoder its probe is
chosen for. The SSL methods read no labels and train on every row.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch, Method, MethodParams, Register, hookimpl


class Supervised(Method):
    """Cross-entropy on the pretraining dataset's labels through a linear classifier."""

    name = "supervised"
    uses_labels = True

    class Params(MethodParams):
        views: tuple[str] = ("crop_flip",)
        """The augmentation pipeline of the training images."""
        label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
        """Label smoothing of the cross-entropy."""

    params: Params

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        self.classifier = nn.Linear(backbone.feature_dim, num_classes)

    def loss(self, batch: Batch) -> Tensor:
        """Cross-entropy of the classifier on the single view (B, C, H, W) against ``batch.labels``."""
        logits = self.classifier(self.backbone(batch.views[0]))
        return F.cross_entropy(logits, batch.labels, label_smoothing=self.params.label_smoothing)


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(Supervised)
