"""Tests of the counting method: the contrastive counting loss, its margin, tiles and downsampling."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch
from ssl_bench.harness.plugins import collect, make_plugin_manager
from ssl_bench.harness.testing import build_method
from ssl_bench.plugins.methods.counting import FILTERS, Counting, counting_loss, resample


class Recorder(Backbone):
    """Per-sample features (no batch statistics); records its inputs."""

    name = "recorder"

    def __init__(self, dim: int = 5) -> None:
        super().__init__(Backbone.Params())
        self.conv = nn.Conv2d(3, dim, 3, padding=1)
        self.feature_dim = dim
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        return self.conv(x).mean(dim=(-2, -1))


def naive_counting_loss(down: torch.Tensor, tiles: torch.Tensor, margin: float, weight: float) -> float:
    """The loss of [0] one image at a time; y of image i is image i - 1 (image B - 1 for image 0)."""
    b = down.shape[0]
    total = 0.0
    for i in range(b):
        t = sum(tiles[i, j] for j in range(4))
        pos = sum(float(d) ** 2 for d in down[i] - t)
        neg = sum(float(d) ** 2 for d in down[(i - 1) % b] - t)
        total += pos + weight * max(0.0, margin - neg)
    return total / b


@pytest.mark.parametrize(("margin", "weight"), [(10.0, 1.0), (0.5, 3.0), (100.0, 0.2)])
def test_loss_matches_naive_loop(margin: float, weight: float) -> None:
    g = torch.Generator().manual_seed(0)
    down, tiles = torch.rand(6, 7, generator=g), torch.rand(6, 4, 7, generator=g)
    got = counting_loss(down, tiles, margin, weight).item()
    assert got == pytest.approx(naive_counting_loss(down, tiles, margin, weight), rel=1e-5)


def test_planted_counts_that_satisfy_the_relation_have_zero_loss() -> None:
    g = torch.Generator().manual_seed(1)
    tiles = torch.rand(5, 4, 3, generator=g) * 10
    tiles[:, :, 0] += torch.arange(5).view(5, 1) * 5.0  # consecutive images' sums differ by 20 > sqrt(10)
    down = tiles.sum(dim=1)  # the equivariance relation holds exactly
    assert counting_loss(down, tiles, margin=10.0).item() == 0.0
    # one image breaking the relation by delta costs delta^2 / B
    down[2, 1] += 0.5
    assert counting_loss(down, tiles, margin=10.0).item() == pytest.approx(0.25 / 5, rel=1e-5)


def test_margin_hinge() -> None:
    k = 4
    zeros = torch.zeros(3, k)
    # the trivial solution phi = 0 satisfies the relation but pays the full margin
    assert counting_loss(zeros, torch.zeros(3, 4, k), margin=10.0, contrast_weight=2.0).item() == pytest.approx(20.0)
    # relation satisfied, contrast pairs at squared distance 4 from each other's tile sums: inside M = 10
    tiles = torch.zeros(3, 4, k)
    tiles[:, 0, 0] = torch.tensor([0.0, 2.0, 4.0])  # sums 0, 2, 4; y of image i is image i - 1
    down = tiles.sum(dim=1).requires_grad_()
    loss = counting_loss(down, tiles, margin=10.0)
    expected = ((10 - 16) * 0 + (10 - 4) + (10 - 4)) / 3  # image 0's negative (image 2) is at 16 > M
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert down.grad is not None and down.grad.abs().sum() > 0  # inside the margin: pushed apart
    # every pair farther than M: no gradient from the hinge, the loss is the relation alone
    far = tiles * 10
    down_far = far.sum(dim=1).requires_grad_()
    loss_far = counting_loss(down_far, far, margin=10.0)
    loss_far.backward()
    assert loss_far.item() == 0.0 and down_far.grad is not None and down_far.grad.abs().sum() == 0


def test_downsample_filters_per_image() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(6, 3, 8, 8, generator=g)
    choice = torch.tensor([0, 1, 2, 0, 2, 1])
    out = resample(x, (4, 4), choice)
    assert torch.allclose(out[choice == 0], F.avg_pool2d(x[choice == 0], 2))  # area = 2x2 means
    for i, k in enumerate(choice.tolist()):
        if k > 0:
            ref = F.interpolate(x[i:i + 1], size=(4, 4), mode=FILTERS[k], align_corners=False, antialias=True)
            assert torch.allclose(out[i:i + 1], ref)


def test_backbone_sees_downsampled_images_then_quadrants_in_one_batch() -> None:
    torch.manual_seed(0)
    p = Counting.Params(filters=("area",), hidden_dim=6, count_dim=3, resolution="half")
    method = Counting(p, Recorder(), num_classes=10)
    x = torch.randn(3, 3, 8, 8)
    method.loss(Batch(views=[x], labels=torch.zeros(3, dtype=torch.long)))
    (seen,) = method.backbone.seen
    assert seen.shape == (15, 3, 4, 4)
    assert torch.allclose(seen[:3], F.avg_pool2d(x, 2))
    for i in range(3):
        for r in range(2):
            for c in range(2):
                assert torch.equal(seen[3 + 4 * i + 2 * r + c], x[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4])


def test_method_loss_matches_per_image_counts() -> None:
    torch.manual_seed(0)
    p = Counting.Params(filters=("bilinear",), hidden_dim=6, count_dim=3, margin=2.0, contrast_weight=0.5,
                        resolution="half")
    method = Counting(p, Recorder(), num_classes=10).eval()  # BN of the head in eval: per-image counts
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        loss = method.loss(Batch(views=[x], labels=torch.zeros(4, dtype=torch.long))).item()
        down = F.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False, antialias=True)
        phi_down = torch.stack([method.counts(down[i:i + 1])[0] for i in range(4)])
        phi_tiles = torch.stack([torch.stack([method.counts(x[i:i + 1, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4])[0]
                                              for r in range(2) for c in range(2)]) for i in range(4)])
    assert (phi_down >= 0).all() and (phi_tiles >= 0).all()  # counts are non-negative
    assert loss == pytest.approx(naive_counting_loss(phi_down, phi_tiles, 2.0, 0.5), rel=1e-4)


def test_filter_draws_are_seeded_and_advance() -> None:
    torch.manual_seed(0)
    a = Counting(Counting.Params(), Recorder(), num_classes=10)
    torch.manual_seed(0)
    b = Counting(Counting.Params(), Recorder(), num_classes=10)
    batch = Batch(views=[torch.randn(8, 3, 8, 8)], labels=torch.zeros(8, dtype=torch.long))
    assert torch.equal(a.loss(batch), b.loss(batch))
    assert int(a.draws[1]) == 1
    a.loss(batch)
    first, second = a.backbone.seen[0][:8], a.backbone.seen[1][:8]  # the downsampled images D x
    assert not torch.equal(first, second)  # the next step draws other filters for the same images


REGISTRY = collect(make_plugin_manager(load_entrypoints=False))


@pytest.mark.parametrize("backbone", ["convnet_small", "resnet18", "resnet18_cifar", "alexnet_bn"])
def test_trains_on_every_backbone(backbone: str) -> None:
    method = build_method(REGISTRY, "counting", backbone, params={"hidden_dim": 16, "count_dim": 8})
    loss = method.loss(Batch(views=[torch.randn(2, 3, 16, 16)], labels=torch.zeros(2, dtype=torch.long)))
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.backbone.parameters())


def test_view_resolution_keeps_the_view_as_d_x_and_upsamples_the_quadrants() -> None:
    p = Counting.Params(filters=("area",), hidden_dim=6, count_dim=3, resolution="view")
    method = Counting(p, Recorder(), num_classes=10)
    x = torch.randn(2, 3, 8, 8)
    method.loss(Batch(views=[x], labels=torch.zeros(2, dtype=torch.long)))
    (seen,) = method.backbone.seen
    assert seen.shape == (10, 3, 8, 8) and torch.equal(seen[:2], x)
    for i in range(2):
        for r in range(2):
            for c in range(2):  # area upsampling by 2 repeats every pixel of the quadrant 2 x 2 times
                quadrant = x[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4]
                expected = quadrant.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
                assert torch.equal(seen[2 + 4 * i + 2 * r + c], expected)


def test_params() -> None:
    p = Counting.Params()
    assert p.views == ("crop_flip",) and p.margin == 1000.0 and p.resolution == "half"
    assert set(p.filters) == set(FILTERS)
    for bad in ({"margin": 0}, {"contrast_weight": -1}, {"count_dim": 0}, {"filters": ("lanczos",)}):
        with pytest.raises(ValidationError):
            Counting.Params(**bad)
    with pytest.raises(ValueError, match="filter"):
        Counting(Counting.Params(filters=()), Recorder(), num_classes=10)


def test_normalised_counts_cannot_all_vanish() -> None:
    torch.manual_seed(0)
    method = Counting(Counting.Params(hidden_dim=6, count_dim=4), Recorder(), num_classes=10)
    with torch.no_grad():  # drive every pre-activation far below zero: [0]'s plain ReLU would output 0
        method.head[0][-1].bias.fill_(-100.0)
        phi = method.counts(torch.randn(10, 3, 8, 8))
    assert ((phi > 0).sum(dim=0) > 0).all()  # per count, some image of the batch is positive
    plain = Counting(Counting.Params(hidden_dim=6, count_dim=4, count_norm=False), Recorder(), num_classes=10)
    with torch.no_grad():
        plain.head[0][-1].bias.fill_(-100.0)
        assert (plain.counts(torch.randn(10, 3, 8, 8)) == 0).all()


def test_default_margin_makes_the_hinge_act_on_normalised_counts_at_init() -> None:
    """Normalised counts of different images start far apart (squared distance ~ count_dim): [0]'s
    M = 10 would leave the hinge inactive on every pair, the default margin keeps it acting on most."""
    torch.manual_seed(0)
    method = Counting(Counting.Params(filters=("area",)), Recorder(dim=32), num_classes=10)
    x = torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        tiles, down = method.inputs(x, torch.Generator().manual_seed(0))
        phi = method.counts(torch.cat([down, tiles.flatten(0, 1)]))
    total = phi[64:].reshape(64, 4, -1).sum(dim=1)
    negative = (phi[:64].roll(1, dims=0) - total).pow(2).sum(dim=1)  # |phi(D y) - sum_j phi(T_j x)|^2
    assert (negative > 10.0).all()
    assert (negative < method.params.margin).float().mean() > 0.9


def test_colour_jitter_is_per_input_and_off_by_default() -> None:
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(0)
    off = Counting(Counting.Params(filters=("area",), hidden_dim=6, count_dim=3), Recorder(), num_classes=10)
    assert torch.equal(off.jitter(x, torch.Generator().manual_seed(0)), x)
    p = Counting.Params(filters=("area",), hidden_dim=6, count_dim=3, jitter_strength=0.4, jitter_p=1.0)
    on = Counting(p, Recorder(), num_classes=10)
    on.loss(Batch(views=[x], labels=torch.zeros(2, dtype=torch.long)))
    off.loss(Batch(views=[x], labels=torch.zeros(2, dtype=torch.long)))
    jittered, plain = on.backbone.seen[0], off.backbone.seen[0]
    assert jittered.shape == plain.shape == (10, 3, 4, 4)  # D x and 4 tiles of each image, at half size
    assert all(not torch.allclose(jittered[i], plain[i], atol=1e-3) for i in range(10))  # D x and every tile
