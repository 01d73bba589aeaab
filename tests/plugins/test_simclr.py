from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from ssl_bench.plugins.methods.simclr import nt_xent


def naive_nt_xent(z1, z2, t):
    """Eq. 1 of SimCLR written as a loop over the 2N anchors."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        num = math.exp(float(z[i] @ z[j]) / t)
        den = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n2) if k != i)
        total += -math.log(num / den)
    return total / n2


@pytest.mark.parametrize("t", [0.1, 0.5, 0.7])
def test_matches_naive_loop(t):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert nt_xent(z1, z2, t).item() == pytest.approx(naive_nt_xent(z1, z2, t), rel=1e-5)


def test_symmetric_in_views():
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    assert torch.allclose(nt_xent(z1, z2, 0.5), nt_xent(z2, z1, 0.5))


def test_perfect_pairs_at_low_temperature_cost_nothing():
    z = torch.eye(4)
    assert nt_xent(z, z.clone(), 0.01).item() == pytest.approx(0.0, abs=1e-6)


def test_uniform_embeddings_cost_log_of_candidates():
    z = torch.ones(5, 3)  # every similarity equal: loss = log(2N - 1)
    assert nt_xent(z, z, 0.5).item() == pytest.approx(math.log(9), rel=1e-6)
