"""Tests of the colorization method: gamut bins, soft-encoding, rebalancing, the two losses."""

from __future__ import annotations

import io
import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch
from ssl_bench.harness.data import normalize
from ssl_bench.harness.errors import BenchError
from ssl_bench.harness.kit.augment import AB_SCALE, rgb_to_lab
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.methods.colorization import (
    Colorization,
    first_rgb_conv,
    gamut_bins,
    grey_input,
    make_colour_blind,
    rebalance_weights,
    soft_encode,
    to_rgb,
)


class Recorder(Backbone):
    """Per-sample features of the mean of each channel; records the images it is given."""

    name = "recorder"

    def __init__(self) -> None:
        super().__init__(Backbone.Params())
        self.fc = nn.Linear(3, 4)
        self.feature_dim = 4
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        return self.fc(x.mean(dim=(-2, -1)))


def build(backbone: Backbone | None = None, **params) -> Colorization:
    torch.manual_seed(0)
    backbone = backbone or ConvNetSmall(ConvNetSmall.Params(width=8, stages=2))
    return Colorization(Colorization.Params(**params), backbone, num_classes=10)


def views(n: int = 4, size: int = 16, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(views=[normalize(torch.rand(n, 3, size, size, generator=g))], labels=torch.zeros(n, dtype=torch.long))


def naive_soft_encode(value: list[float], bins: list[list[float]], k: int, sigma: float) -> list[float]:
    dists = [(math.dist(value, c), q) for q, c in enumerate(bins)]
    dists.sort()
    out = [0.0] * len(bins)
    raw = [math.exp(-d * d / (2 * sigma * sigma)) for d, _ in dists[:k]]
    for (_, q), r in zip(dists[:k], raw):
        out[q] = r / sum(raw)
    return out


def naive_weights(counts: list[float], bins: list[list[float]], lam: float, sigma: float) -> list[float]:
    """Eq. 4 of [0] as loops: smooth p with a Gaussian, mix with uniform, invert, normalise E_p~[w] = 1."""
    total = sum(counts)
    p = [c / total for c in counts]
    smooth = [sum(math.exp(-math.dist(a, b) ** 2 / (2 * sigma * sigma)) * p[j] for j, b in enumerate(bins))
              for a in bins]
    smooth = [s / sum(smooth) for s in smooth]
    w = [1 / ((1 - lam) * s + lam / len(bins)) for s in smooth]
    norm = sum(s * x for s, x in zip(smooth, w))
    return [x / norm for x in w]


def test_gamut_bins_cover_srgb_on_the_grid() -> None:
    bins = gamut_bins(10.0)
    assert bins.ndim == 2 and bins.shape[1] == 2 and len(bins) == len(torch.unique(bins, dim=0))
    assert torch.equal(bins, torch.round(bins / 10) * 10)  # centres on the grid
    assert (bins == 0).all(dim=1).any()  # grey is in gamut
    assert 150 < len(bins) < 22**2  # a proper subset of the full [-110, 110]^2 grid
    ab = rgb_to_lab(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))[0, 1:].reshape(2, -1).T
    assert torch.cdist(ab, bins).min(dim=1).values.max() <= 5 * math.sqrt(2) + 1e-4  # every colour inside a bin
    assert len(gamut_bins(20.0)) < len(bins)


@pytest.mark.parametrize(("k", "sigma"), [(5, 5.0), (1, 5.0), (3, 12.0)])
def test_soft_encode_matches_naive_loop(k: int, sigma: float) -> None:
    bins = gamut_bins(10.0)
    g = torch.Generator().manual_seed(0)
    ab = (torch.rand(12, 2, generator=g) - 0.5) * 160
    targets, nearest = soft_encode(ab, bins, k, sigma)
    assert targets.shape == (12, len(bins))
    assert torch.allclose(targets.sum(dim=1), torch.ones(12), atol=1e-6)
    assert torch.equal(nearest, torch.cdist(ab, bins).argmin(dim=1))
    assert torch.equal((targets > 0).sum(dim=1), torch.full((12,), k))
    for i in range(12):
        expected = naive_soft_encode(ab[i].tolist(), bins.tolist(), k, sigma)
        assert targets[i].tolist() == pytest.approx(expected, abs=1e-6)
        assert int(targets[i].argmax()) == int(nearest[i])  # the nearest bin gets the largest share


def test_soft_encode_of_grey_known_values() -> None:
    bins = gamut_bins(10.0)
    grey = int((bins == 0).all(dim=1).nonzero())
    targets, nearest = soft_encode(torch.zeros(1, 2), bins, 5, 5.0)
    assert int(nearest) == grey
    # itself at distance 0 and its 4 grid neighbours at distance 10: weights 1 and exp(-2), normalised
    assert targets[0, grey].item() == pytest.approx(1 / (1 + 4 * math.exp(-2)), rel=1e-5)
    neighbours = torch.cdist(bins, bins[grey:grey + 1])[:, 0].isclose(torch.tensor(10.0))
    assert targets[0, neighbours].tolist() == pytest.approx([math.exp(-2) / (1 + 4 * math.exp(-2))] * 4, rel=1e-5)


@pytest.mark.parametrize("lam", [0.5, 0.1, 1.0])
def test_rebalance_weights_match_naive_loop_and_have_expectation_one(lam: float) -> None:
    bins = gamut_bins(10.0)
    g = torch.Generator().manual_seed(1)
    counts = torch.randint(0, 50, (len(bins),), generator=g).double() * (torch.rand(len(bins), generator=g) < 0.3)
    weights, smooth = rebalance_weights(counts, bins, lam, 5.0)
    expected = naive_weights(counts.tolist(), bins.tolist(), lam, 5.0)
    assert weights.tolist() == pytest.approx(expected, rel=1e-4)
    assert float((smooth * weights).sum()) == pytest.approx(1.0, rel=1e-5)
    if lam == 1.0:
        assert torch.allclose(weights, torch.ones_like(weights), atol=1e-5)
    else:  # rarer colours weigh more
        order = smooth.argsort()
        assert (weights[order].diff() <= 1e-4).all()


def naive_loss(method: Colorization, x: torch.Tensor) -> float:
    """Eq. 2 of [0] pixel by pixel: -w(q*) sum_q Z_q log Z^_q, with Z the soft-encoded pooled ab."""
    p = method.params
    lab = rgb_to_lab(to_rgb(x))
    size = (x.shape[-2] // p.output_stride, x.shape[-1] // p.output_stride)
    ab = F.adaptive_avg_pool2d(lab[:, 1:], size)
    logits = method.predict(grey_input(lab[:, :1]), size)
    bins = method.bins.tolist()
    weights = naive_weights(method.bin_counts.tolist(), bins, p.rebalance_lambda, p.sigma) if p.rebalance else None
    total, n = 0.0, 0
    for i in range(x.shape[0]):
        for r in range(size[0]):
            for c in range(size[1]):
                value = ab[i, :, r, c].tolist()
                z = naive_soft_encode(value, bins, p.neighbours, p.sigma)
                logp = F.log_softmax(logits[i, :, r, c], dim=0).tolist()
                ce = -sum(zq * lq for zq, lq in zip(z, logp))
                nearest = min(range(len(bins)), key=lambda q: math.dist(value, bins[q]))
                total += ce * (weights[nearest] if weights else 1.0)
                n += 1
    return total / n


@pytest.mark.parametrize("rebalance", [True, False])
def test_classification_loss_matches_naive_loop(rebalance: bool) -> None:
    method = build(rebalance=rebalance).eval()
    method.bin_counts.copy_(torch.arange(len(method.bins)).double() % 7)
    batch = views(n=2)
    with torch.no_grad():
        loss = method.loss(batch).item()
        assert loss == pytest.approx(naive_loss(method, batch.views[0]), rel=1e-4)


def test_regression_loss_matches_naive_loop() -> None:
    method = build(target="regression").eval()
    batch = views(n=2)
    x = batch.views[0]
    with torch.no_grad():
        lab = rgb_to_lab(to_rgb(x))
        pred = method.predict(grey_input(lab[:, :1]), (4, 4))
        assert pred.shape == (2, 2, 4, 4)
        total = 0.0
        for i in range(2):
            for r in range(4):
                for c in range(4):
                    target = lab[i, 1:, 4 * r:4 * r + 4, 4 * c:4 * c + 4].mean(dim=(-2, -1)) / AB_SCALE
                    total += 0.5 * float((pred[i, :, r, c] - target).square().sum())
        assert method.loss(batch).item() == pytest.approx(total / 32, rel=1e-4)


def test_uniform_prediction_costs_log_q() -> None:
    method = build(rebalance=False).eval()
    for p in method.decoder.parameters():
        nn.init.zeros_(p)
    with torch.no_grad():
        assert method.loss(views()).item() == pytest.approx(math.log(len(method.bins)), rel=1e-5)


def test_running_counts_update_in_training_only_and_are_checkpointed() -> None:
    method = build().train()
    batch = views(n=3)
    method.loss(batch)
    assert method.bin_counts.sum().item() == 3 * 4 * 4  # one nearest bin per predicted pixel
    first = method.bin_counts.clone()
    method.loss(batch)
    assert torch.equal(method.bin_counts, 2 * first)  # the same batch counts the same bins again
    method.eval()
    method.loss(batch)
    assert torch.equal(method.bin_counts, 2 * first)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    fresh = build()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(fresh.bin_counts, method.bin_counts) and torch.equal(fresh.bins, method.bins)


def test_backbone_sees_the_normalised_grey_image_of_the_lightness() -> None:
    recorder = Recorder()
    method = build(backbone=recorder, grey_stem=False)
    batch = views(n=2)
    method.loss(batch)
    (seen,) = recorder.seen
    assert seen.shape == (2, 3, 16, 16)
    rgb = to_rgb(seen)
    assert torch.allclose(rgb[:, 0], rgb[:, 1], atol=1e-5) and torch.allclose(rgb[:, 0], rgb[:, 2], atol=1e-5)
    lab_seen, lab_view = rgb_to_lab(rgb), rgb_to_lab(to_rgb(batch.views[0]))
    assert torch.allclose(lab_seen[:, 0], lab_view[:, 0], atol=1e-2)  # same lightness
    assert lab_seen[:, 1:].abs().max() < 1e-2  # no colour


def test_gradients_reach_the_backbone_and_params_validate() -> None:
    method = build()
    method.loss(views()).backward()
    assert all(p.grad is not None for p in method.backbone.parameters())
    with pytest.raises(ValidationError):
        Colorization.Params(target="rgb")
    with pytest.raises(ValidationError):
        Colorization.Params(rebalance_lambda=0.0)
    with pytest.raises(ValueError):
        build(neighbours=10_000)


def same_intensity_pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two normalised batches (2, 3, 8, 8) whose unnormalised R + G + B agree pixel by pixel, colours differ."""
    g = torch.Generator().manual_seed(seed)
    a = 0.2 + 0.6 * torch.rand(2, 3, 8, 8, generator=g)
    shift = 0.1 * torch.randn(2, 3, 8, 8, generator=g)
    b = a + shift - shift.mean(dim=1, keepdim=True)
    return normalize(a), normalize(b)


def stem_response(method: Colorization, x: torch.Tensor) -> torch.Tensor:
    conv = first_rgb_conv(method.backbone)
    assert conv is not None
    return conv(x)


def test_grey_stem_sees_intensity_only_before_and_after_steps() -> None:
    method = build()
    a, b = same_intensity_pair()
    assert not torch.allclose(a, b)
    with torch.no_grad():
        assert torch.allclose(stem_response(method, a), stem_response(method, b), atol=1e-5)
    opt = torch.optim.SGD(method.parameters(), lr=0.5, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        method.loss(views()).backward()
        opt.step()
    with torch.no_grad():  # the step alone leaves the colour-blind subspace ...
        assert not torch.allclose(stem_response(method, a), stem_response(method, b), atol=1e-5)
        method.on_step_end(2, 10)  # ... and the hook projects back
        assert torch.allclose(stem_response(method, a), stem_response(method, b), atol=1e-5)


def test_make_colour_blind_is_an_orthogonal_projection() -> None:
    conv = nn.Conv2d(3, 4, 3)
    w = conv.weight.detach().clone()
    make_colour_blind(conv)
    once = conv.weight.detach().clone()
    make_colour_blind(conv)
    assert torch.allclose(conv.weight, once, atol=1e-7)  # idempotent
    s = torch.tensor([0.229, 0.224, 0.225])
    for o in range(4):
        for i in range(3):
            for j in range(3):
                v = w[o, :, i, j]
                assert once[o, :, i, j].tolist() == pytest.approx((s * float(v @ s) / float(s @ s)).tolist(), abs=1e-6)
    assert float(((w - once) * once).sum()) == pytest.approx(0.0, abs=1e-5)  # residual orthogonal to the image


def test_grey_stem_off_keeps_the_backbone_and_needs_a_conv_when_on() -> None:
    torch.manual_seed(0)
    fresh = ConvNetSmall(ConvNetSmall.Params(width=8, stages=2))
    method = build(grey_stem=False)
    assert torch.equal(first_rgb_conv(method.backbone).weight, first_rgb_conv(fresh).weight)
    with pytest.raises(BenchError, match="grey_stem"):
        build(backbone=Recorder())
