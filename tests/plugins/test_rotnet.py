"""Tests of the RotNet method: batch layout, labels, chance-level loss, head options."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch
from ssl_bench.plugins.methods.rotnet import RotNet


class FlattenLinear(Backbone):
    """Per-sample features (no batch statistics) that see the pixel layout; records its input."""

    name = "flatten_linear"

    def __init__(self, size: int = 6, dim: int = 5) -> None:
        super().__init__(Backbone.Params())
        self.fc = nn.Linear(3 * size * size, dim)
        self.feature_dim = dim
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return self.fc(x.flatten(1))


class ChannelMean(Backbone):
    """Rotation-invariant features: the mean of each channel."""

    name = "channel_mean"

    def __init__(self) -> None:
        super().__init__(Backbone.Params())
        self.feature_dim = 3
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1)) * self.scale


def views(b: int = 4, size: int = 6, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(views=[torch.randn(b, 3, size, size, generator=g)], labels=torch.zeros(b, dtype=torch.long))


def naive_rotnet_loss(method: RotNet, x: torch.Tensor) -> float:
    """Mean over images and quarter turns of -log p(turn | image turned by it), one image at a time."""
    total = 0.0
    for i in range(x.shape[0]):
        for r in range(4):
            turned = torch.rot90(x[i:i + 1], r, dims=(-2, -1))
            logits = method.head(method.backbone(turned))[0]
            total -= float(F.log_softmax(logits, dim=0)[r])
    return total / (4 * x.shape[0])


def test_batch_holds_every_image_in_every_rotation() -> None:
    torch.manual_seed(0)
    method = RotNet(RotNet.Params(), FlattenLinear(), num_classes=10)
    batch = views(b=3)
    method.loss(batch)
    seen, x = method.backbone.seen, batch.views[0]
    assert seen.shape == (12, 3, 6, 6)
    for r in range(4):
        for i in range(3):  # rotation-major: row r * B + i is image i turned r times
            assert torch.equal(seen[r * 3 + i], torch.rot90(x[i], r, dims=(-2, -1)))


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_loss_matches_naive_loop(head: str) -> None:
    torch.manual_seed(0)
    method = RotNet(RotNet.Params(head=head, hidden_dim=7), FlattenLinear(), num_classes=10).eval()
    batch = views(b=5)
    with torch.no_grad():
        assert method.loss(batch).item() == pytest.approx(naive_rotnet_loss(method, batch.views[0]), rel=1e-5)


def test_rotation_invariant_features_cannot_beat_chance() -> None:
    torch.manual_seed(0)
    method = RotNet(RotNet.Params(), ChannelMean(), num_classes=10)
    batch = views(b=8)
    assert method.loss(batch).item() >= math.log(4) - 1e-6  # one score for the 4 turns of an image
    nn.init.zeros_(method.head.weight)
    nn.init.zeros_(method.head.bias)
    assert method.loss(batch).item() == pytest.approx(math.log(4), rel=1e-6)


def test_layout_sensitive_features_learn_the_rotation() -> None:
    torch.manual_seed(0)
    method = RotNet(RotNet.Params(), FlattenLinear(size=4, dim=16), num_classes=10)
    opt = torch.optim.SGD(method.parameters(), lr=0.1)
    batch = views(b=8, size=4)
    first = method.loss(batch).item()
    for _ in range(50):
        opt.zero_grad()
        loss = method.loss(batch)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_non_square_views_are_rejected() -> None:
    method = RotNet(RotNet.Params(), ChannelMean(), num_classes=10)
    with pytest.raises(ValueError, match="square"):
        method.loss(Batch(views=[torch.randn(2, 3, 6, 8)], labels=torch.zeros(2, dtype=torch.long)))


def test_params() -> None:
    assert RotNet.Params().views == ("crop_flip",) and RotNet.Params().head == "linear"
    with pytest.raises(ValidationError):
        RotNet.Params(head="conv")
    with pytest.raises(ValidationError):
        RotNet.Params(hidden_dim=0)
    method = RotNet(RotNet.Params(head="mlp"), FlattenLinear(dim=5), num_classes=10)
    assert method.head[0].out_features == 5 and method.head[-1].out_features == 4
