"""VICReg: the three terms against naive loops over eq. 1-6, invariants, the exposed terms, 2 processes.
(Its conformance check runs in tests/test_conformance.py with every other method.)
"""

from __future__ import annotations

import math

import pytest
import torch

from ssl_bench.harness.pipeline.train import distributed_loss
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.methods.vicreg import VICReg, vicreg_terms
from tests.plugins.method_inputs import batch, views
from tests.plugins.two_processes import assert_same_gradients, gloo_group, gradients, run_two

HADAMARD = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
"""Columns 2-4: zero mean, mutually orthogonal, unbiased standard deviation sqrt(4/3)."""


def naive_vicreg(z1: torch.Tensor, z2: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> dict[str, float]:
    """Eq. 1-6 of [0] as loops, normalised as [0]'s code: s over N*D entries, (v(Z) + v(Z')) / 2, c(Z) + c(Z')."""
    n, d = z1.shape
    a, b = z1.tolist(), z2.tolist()

    def variance(z: list[list[float]]) -> float:
        total = 0.0
        for j in range(d):
            mean = sum(z[i][j] for i in range(n)) / n
            var = sum((z[i][j] - mean) ** 2 for i in range(n)) / (n - 1)
            total += max(0.0, gamma - math.sqrt(var + eps))
        return total / d

    def covariance(z: list[list[float]]) -> float:
        means = [sum(z[i][j] for i in range(n)) / n for j in range(d)]
        total = 0.0
        for j in range(d):
            for k in range(d):
                if j != k:
                    cov = sum((z[i][j] - means[j]) * (z[i][k] - means[k]) for i in range(n)) / (n - 1)
                    total += cov**2
        return total / d

    invariance = sum((a[i][j] - b[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
    return {"invariance": invariance, "variance": (variance(a) + variance(b)) / 2,
            "covariance": covariance(a) + covariance(b)}


def build(**params) -> VICReg:
    torch.manual_seed(0)
    backbone = ConvNetSmall(ConvNetSmall.Params(width=4, stages=2))
    return VICReg(VICReg.Params(**{"proj_hidden_dim": 16, "proj_dim": 8, **params}), backbone, num_classes=4)


@pytest.mark.parametrize(("n", "d", "scale"), [(6, 4, 0.3), (5, 7, 1.0), (9, 3, 2.0)])
def test_terms_match_naive_loops(n, d, scale):
    g = torch.Generator().manual_seed(n)
    z1, z2 = scale * torch.randn(n, d, generator=g), scale * torch.randn(n, d, generator=g) + 1  # hinge on and off
    got, want = vicreg_terms(z1, z2), naive_vicreg(z1, z2)
    for key in ("invariance", "variance", "covariance"):
        assert got[key].item() == pytest.approx(want[key], rel=1e-5, abs=1e-7), key


def test_symmetric_in_views_and_shift_invariant_regularisers():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(10, 5, generator=g), torch.randn(10, 5, generator=g)
    t, swapped = vicreg_terms(z1, z2), vicreg_terms(z2, z1)
    assert all(torch.allclose(t[k], swapped[k]) for k in t)
    shifted = vicreg_terms(z1 + 3.0, z2 + 3.0)
    assert all(torch.allclose(t[k], shifted[k], rtol=1e-4, atol=1e-6) for k in t)  # s: the shift cancels


def test_known_values():
    z = 2 * HADAMARD[:, 1:]  # std 2 sqrt(4/3) > gamma in every column, no covariance
    assert all(v.item() == pytest.approx(0.0, abs=1e-6) for v in vicreg_terms(z, z.clone()).values())
    collapsed = torch.ones(6, 4)  # a constant embedding: the hinge is gamma - sqrt(eps) in every column
    t = vicreg_terms(collapsed, collapsed)
    assert t["variance"].item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-6)
    assert t["covariance"].item() == 0.0 and t["invariance"].item() == 0.0
    assert vicreg_terms(z, z + 1.5)["invariance"].item() == pytest.approx(1.5**2)


def test_no_stop_gradient_both_views_get_gradients():
    z1, z2 = torch.randn(6, 3, requires_grad=True), torch.randn(6, 3, requires_grad=True)
    sum(vicreg_terms(z1, z2).values()).backward()
    assert z1.grad is not None and z2.grad is not None and z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_loss_is_the_weighted_sum_of_the_exposed_terms():
    m = build(invariance_weight=2.0, variance_weight=3.0, covariance_weight=0.5).eval()
    vs = views()
    terms = m.loss_terms(batch(vs))
    loss = m.loss(batch(vs))
    assert loss.item() == pytest.approx(2 * terms["invariance"].item() + 3 * terms["variance"].item()
                                        + 0.5 * terms["covariance"].item(), rel=1e-6)
    assert m.last_terms.keys() == {"invariance", "variance", "covariance"}
    assert all(not t.requires_grad and torch.allclose(t, terms[k]) for k, t in m.last_terms.items())
    z1, z2 = (m.projector(m.backbone(v)) for v in vs)
    naive = naive_vicreg(z1.detach(), z2.detach())
    assert all(terms[k].item() == pytest.approx(naive[k], rel=1e-5) for k in naive)


def test_defaults_are_the_papers():
    p = VICReg.Params()
    assert (p.invariance_weight, p.variance_weight, p.covariance_weight, p.gamma, p.eps) == (25, 25, 1, 1, 1e-4)
    assert p.views == ("byol", "byol_prime")
    assert len([x for x in build().projector if isinstance(x, torch.nn.Linear)]) == 3


def _in_process(rank: int, init: str, out: str) -> None:
    with gloo_group(rank, init):
        m = build().eval()  # eval: batch norm on running statistics, the same function in 1 and 2 processes
        ddp = distributed_loss(m, torch.device("cpu"))  # kept alive until backward
        loss = ddp(batch([v[rank * 4:(rank + 1) * 4] for v in views()]))
        loss.backward()
        grads = gradients(m)
        torch.save({"loss": loss.detach(), "terms": m.last_terms, "grads": grads}, f"{out}/rank{rank}.pt")


@pytest.mark.slow
def test_two_processes_on_halves_equal_one_process_on_the_batch(tmp_path, one_thread):
    ranks = run_two(_in_process, tmp_path)
    m = build().eval()
    loss = m.loss(batch(views()))
    loss.backward()
    for r in ranks:  # every process evaluates the loss of the global batch, and DDP averages its gradient
        assert r["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
        assert all(r["terms"][k].item() == pytest.approx(t.item(), rel=1e-5) for k, t in m.last_terms.items())
    assert_same_gradients(ranks, m)
    half = build().eval().loss(batch([v[:4] for v in views()]))
    assert abs(half.item() - loss.item()) > 1e-3  # the statistics of the other half matter
