"""Barlow Twins: the loss against a naive loop over eq. 1-2, its invariants, and 2 processes.
(Its conformance check runs in tests/test_conformance.py with every other method.)
"""

from __future__ import annotations

import math

import pytest
import torch

from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.methods.barlow_twins import BarlowTwins, barlow_twins_loss, cross_correlation
from tests.plugins.method_inputs import batch, views
from tests.plugins.two_processes import assert_same_gradients, loss_on_my_half, run_two

HADAMARD = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
"""Columns 2-4: zero mean, unit biased variance, mutually orthogonal: standardised and decorrelated."""


def naive_barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lam: float, eps: float = 1e-5) -> float:
    """Eq. 1-2 of [0] as loops: standardise each column (biased variance + eps), then sum over C's entries."""
    n, d = z1.shape

    def columns(z: torch.Tensor) -> list[list[float]]:
        out = []
        for j in range(d):
            col = [float(z[b, j]) for b in range(n)]
            mean = sum(col) / n
            var = sum((x - mean) ** 2 for x in col) / n
            out.append([(x - mean) / math.sqrt(var + eps) for x in col])
        return out

    a, b = columns(z1), columns(z2)
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[i][k] * b[j][k] for k in range(n)) / n
            total += (1 - c) ** 2 if i == j else lam * c**2
    return total


def build(**params) -> BarlowTwins:
    torch.manual_seed(0)
    backbone = ConvNetSmall(ConvNetSmall.Params(width=4, stages=2))
    return BarlowTwins(BarlowTwins.Params(**{"proj_hidden_dim": 16, "proj_dim": 8, **params}), backbone, num_classes=4)


@pytest.mark.parametrize(("n", "d", "lam"), [(6, 4, 5e-3), (5, 7, 0.08), (9, 3, 1.0)])
def test_loss_matches_naive_loop(n, d, lam):
    g = torch.Generator().manual_seed(n)
    z1, z2 = torch.randn(n, d, generator=g), 3 * torch.randn(n, d, generator=g) + 1
    assert barlow_twins_loss(z1, z2, lam).item() == pytest.approx(naive_barlow_twins(z1, z2, lam), rel=1e-5)


def test_symmetric_in_views_and_invariant_to_column_affine_maps():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(10, 5, generator=g), torch.randn(10, 5, generator=g)
    loss = barlow_twins_loss(z1, z2, 0.1)
    assert torch.allclose(loss, barlow_twins_loss(z2, z1, 0.1))
    scale, shift = torch.rand(5, generator=g) + 0.5, torch.randn(5, generator=g)
    assert torch.allclose(barlow_twins_loss(z1 * scale + shift, z2, 0.1), loss, rtol=1e-5)


def test_identical_views_cost_lambda_times_off_diagonal_squares():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(12, 4, generator=g)
    corr = torch.corrcoef(z.T.double())  # identical standardised views: C is the correlation matrix
    off = (corr.pow(2).sum() - corr.diagonal().pow(2).sum()).item()
    for lam in (5e-3, 0.5):
        assert barlow_twins_loss(z, z.clone(), lam).item() == pytest.approx(lam * off, rel=1e-4)


def test_known_values():
    z = HADAMARD[:, 1:]  # standardised, decorrelated: C = I
    assert torch.allclose(cross_correlation(z, z), torch.eye(3), atol=1e-5)
    assert barlow_twins_loss(z, z, 5e-3).item() == pytest.approx(0.0, abs=1e-8)
    assert barlow_twins_loss(z, -z, 5e-3).item() == pytest.approx(3 * 4.0, rel=1e-4)  # C = -I: (1 - (-1))^2 x 3


def test_no_stop_gradient_both_views_get_gradients():
    z1, z2 = torch.randn(6, 3, requires_grad=True), torch.randn(6, 3, requires_grad=True)
    barlow_twins_loss(z1, z2, 0.1).backward()
    assert z1.grad is not None and z2.grad is not None and z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_lambda_defaults_to_paper_lambda_times_dim():
    assert BarlowTwins.Params().lambda_offdiag is None
    assert build(proj_dim=512).lambda_offdiag == pytest.approx(5e-3 * 8192 / 512)
    assert build(proj_dim=8192).lambda_offdiag == pytest.approx(5e-3)
    assert build(lambda_offdiag=0.3).lambda_offdiag == 0.3
    assert BarlowTwins.Params().views == ("byol", "byol_prime")


def test_method_loss_is_the_loss_of_its_projections():
    m = build().eval()
    vs = views()
    z1, z2 = (m.projector(m.backbone(v)) for v in vs)
    assert m.loss(batch(vs)).item() == pytest.approx(barlow_twins_loss(z1, z2, m.lambda_offdiag).item(), rel=1e-6)
    assert len([x for x in m.projector if isinstance(x, torch.nn.Linear)]) == 3


def _in_process(rank: int, init: str, out: str) -> None:
    loss_on_my_half(rank, init, out, build)


@pytest.mark.slow
def test_two_processes_on_halves_equal_one_process_on_the_batch(tmp_path, one_thread):
    ranks = run_two(_in_process, tmp_path)
    m = build().eval()
    loss = m.loss(batch(views()))
    loss.backward()
    for r in ranks:  # every process evaluates the loss of the global batch, and DDP averages its gradient
        assert r["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    assert_same_gradients(ranks, m)
    half = build().eval().loss(batch([v[:4] for v in views()]))
    assert abs(half.item() - loss.item()) > 1e-3  # the statistics of the other half matter
