"""SimSiam: the loss against a naive loop over eq. 1-4, stop-gradient and symmetry.

No 2-process test: SimSiam gathers nothing (no negatives, no batch statistics outside batch norm), so its
per-process losses are means whose DDP-averaged gradient is the global batch's by construction.
(Its conformance check runs in tests/test_conformance.py with every other method.)
"""

from __future__ import annotations

import math

import pytest
import torch

from ssl_bench.harness.components import Batch
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.methods.simsiam import SimSiam, negative_cosine, simsiam_loss


def naive_simsiam(p1, p2, z1, z2) -> float:
    """Eq. 1-2 of [0] as loops: D(p, z) = -mean_i p_i . z_i / (|p_i| |z_i|), symmetrised with halves."""

    def d(p, z) -> float:
        total = 0.0
        for i in range(p.shape[0]):
            dot = sum(float(a) * float(b) for a, b in zip(p[i], z[i]))
            norm_p = math.sqrt(sum(float(a) ** 2 for a in p[i]))
            norm_z = math.sqrt(sum(float(b) ** 2 for b in z[i]))
            total += -dot / (norm_p * norm_z)
        return total / p.shape[0]

    return d(p1, z2) / 2 + d(p2, z1) / 2


def build(**params) -> SimSiam:
    torch.manual_seed(0)
    backbone = ConvNetSmall(ConvNetSmall.Params(width=4, stages=2))
    defaults = {"proj_hidden_dim": 16, "proj_dim": 8, "pred_hidden_dim": 4}
    return SimSiam(SimSiam.Params(**{**defaults, **params}), backbone, num_classes=4)


def batch(n: int = 6, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(n, 3, 8, 8, generator=g) for _ in range(2)]
    return Batch(views=views, labels=torch.zeros(n, dtype=torch.long))


def test_loss_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(5, 4, generator=g) for _ in range(4))
    assert simsiam_loss(p1, p2, z1, z2).item() == pytest.approx(naive_simsiam(p1, p2, z1, z2), rel=1e-5)


def test_symmetric_in_views_and_known_values():
    g = torch.Generator().manual_seed(1)
    p1, p2, z1, z2 = (torch.randn(6, 3, generator=g) for _ in range(4))
    assert torch.allclose(simsiam_loss(p1, p2, z1, z2), simsiam_loss(p2, p1, z2, z1))
    assert simsiam_loss(p1, p2, 2 * p2, 0.5 * p1).item() == pytest.approx(-1.0, rel=1e-6)  # aligned: the minimum
    assert simsiam_loss(p1, p2, -p2, -p1).item() == pytest.approx(1.0, rel=1e-6)  # opposite: the maximum
    assert -1.0 <= simsiam_loss(p1, p2, z1, z2).item() <= 1.0


def test_stop_gradient_on_the_targets():
    p, z = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    negative_cosine(p, z).backward()
    assert p.grad is not None and z.grad is None


def test_gradient_reaches_a_projection_only_through_its_prediction():
    """dL/dz1 is the gradient through p1 = h(z1) alone: z1 as the target of p2 contributes nothing."""
    m = build().eval()
    z1, z2 = torch.randn(6, 8, requires_grad=True), torch.randn(6, 8, requires_grad=True)
    (g_full,) = torch.autograd.grad(simsiam_loss(m.predictor(z1), m.predictor(z2), z1, z2), z1)
    (g_pred,) = torch.autograd.grad(negative_cosine(m.predictor(z1), z2) / 2, z1)
    assert torch.allclose(g_full, g_pred, atol=1e-7)


def test_method_loss_and_gradients():
    m = build().eval()
    b = batch()
    z1, z2 = (m.projector(m.backbone(v)) for v in b.views)
    expected = naive_simsiam(m.predictor(z1).detach(), m.predictor(z2).detach(), z1.detach(), z2.detach())
    loss = m.loss(b)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in m.predictor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.backbone.parameters())


def test_architecture_and_defaults():
    m = build()
    assert len([x for x in m.projector if isinstance(x, torch.nn.Linear)]) == 3
    assert isinstance(m.projector[-1], torch.nn.BatchNorm1d) and not m.projector[-1].affine  # BN on the output
    assert [x.out_features for x in m.predictor if isinstance(x, torch.nn.Linear)] == [4, 8]  # bottleneck
    assert not any(isinstance(x, torch.nn.BatchNorm1d) for x in m.predictor[-1:])
    p = SimSiam.Params()
    assert p.views == ("moco_v2", "moco_v2") and p.pred_hidden_dim * 4 == p.proj_dim

