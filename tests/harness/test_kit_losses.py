"""ssl_bench.harness.kit.losses against naive per-row loops and known values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from ssl_bench.harness.kit.losses import info_nce, nt_xent


def naive_info_nce(query: Tensor, keys: Tensor, t: float | None, positives: list[int] | None = None,
                   positive_keys: Tensor | None = None, exclude: Tensor | None = None) -> float:
    """Row by row: -log(exp(s+ / t) / sum over the row's counted candidates of exp(s / t))."""
    scale = 1.0 if t is None else t
    total = 0.0
    for i in range(query.shape[0]):
        scores = [float(query[i] @ keys[j]) / scale for j in range(keys.shape[0])
                  if exclude is None or not bool(exclude[i, j])]
        if positive_keys is not None:
            pos = float(query[i] @ positive_keys[i]) / scale
            scores.append(pos)
        else:
            j = i if positives is None else positives[i]
            assert exclude is None or not bool(exclude[i, j])
            pos = float(query[i] @ keys[j]) / scale
        total += -(pos - math.log(sum(math.exp(s) for s in scores)))
    return total / query.shape[0]


def randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("t", [0.07, 0.5, None])
def test_positives_among_the_keys_match_the_loop(t: float | None) -> None:
    q, k = F.normalize(randn(5, 4, seed=0), dim=1), F.normalize(randn(7, 4, seed=1), dim=1)
    assert info_nce(q, k, t).item() == pytest.approx(naive_info_nce(q, k, t), rel=1e-5)
    positives = [3, 0, 6, 6, 1]
    got = info_nce(q, k, t, positives=torch.tensor(positives))
    assert got.item() == pytest.approx(naive_info_nce(q, k, t, positives=positives), rel=1e-5)


def test_excluded_keys_do_not_count() -> None:
    q, k = randn(4, 3, seed=2), randn(6, 3, seed=3)
    exclude = randn(4, 6, seed=4) > 0.5
    exclude[torch.arange(4), torch.arange(4)] = False  # never the positive
    got = info_nce(q, k, 0.2, exclude=exclude).item()
    assert got == pytest.approx(naive_info_nce(q, k, 0.2, exclude=exclude), rel=1e-5)
    assert got < info_nce(q, k, 0.2).item()  # fewer negatives, smaller loss


@pytest.mark.parametrize("t", [0.1, 1.0, None])
def test_separate_positive_keys_match_the_loop(t: float | None) -> None:
    q, pos, negs = randn(5, 4, seed=5), randn(5, 4, seed=6), randn(8, 4, seed=7)
    exclude = randn(5, 8, seed=8) > 1.0
    for mask in (None, exclude):
        got = info_nce(q, negs, t, positive_keys=pos, exclude=mask).item()
        assert got == pytest.approx(naive_info_nce(q, negs, t, positive_keys=pos, exclude=mask), rel=1e-5)


def test_known_values() -> None:
    q = torch.ones(3, 2)
    assert info_nce(q, torch.ones(9, 2), 0.5).item() == pytest.approx(math.log(9), rel=1e-6)  # all scores equal
    assert info_nce(q, torch.ones(9, 2), 0.5, positive_keys=q).item() == pytest.approx(math.log(10), rel=1e-6)
    e = torch.eye(4)
    assert info_nce(e, e, 0.01).item() == pytest.approx(0.0, abs=1e-6)  # each query on its own key only
    # two keys, scores 1 (positive) and 0 at t = 1: -log(e / (e + 1)) = log(1 + 1/e)
    got = info_nce(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 1.0)
    assert got.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_nt_xent_is_info_nce_over_both_views() -> None:
    z1, z2 = randn(4, 3, seed=9), randn(4, 3, seed=10)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    positives = [4, 5, 6, 7, 0, 1, 2, 3]
    expected = naive_info_nce(z, z, 0.5, positives=positives, exclude=torch.eye(8, dtype=torch.bool))
    assert nt_xent(z1, z2, 0.5).item() == pytest.approx(expected, rel=1e-5)
    same = torch.ones(5, 3)
    assert nt_xent(same, same, 0.5).item() == pytest.approx(math.log(9), rel=1e-6)  # 2N - 1 equal candidates


def test_gradients_flow_to_query_and_keys() -> None:
    q, k = randn(3, 4, seed=11).requires_grad_(), randn(5, 4, seed=12).requires_grad_()
    info_nce(q, k, 0.2).backward()
    assert q.grad is not None and k.grad is not None and q.grad.abs().sum() > 0 and k.grad.abs().sum() > 0


def test_positives_and_positive_keys_together_are_an_error() -> None:
    q = randn(2, 3, seed=13)
    with pytest.raises(ValueError, match="not both"):
        info_nce(q, q, 0.1, positives=torch.tensor([0, 1]), positive_keys=q)
