from __future__ import annotations

import io
import math

import pytest
import torch
from torch.nn import functional as F

from ssl_bench.harness.components import Batch, instantiate_method
from ssl_bench.harness.data import normalize
from ssl_bench.harness.errors import BenchError
from ssl_bench.harness.kit.augment.lab import lab_to_rgb, merge_lab, rgb_to_l_ab, rgb_to_lab
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.methods.cmc import CMC, cmc_terms, contrast, denormalize, lab_views


def naive_direction(anchors, candidates, t, exclude=None):
    """-log(exp(a_i.c_i/t) / sum_j exp(a_i.c_j/t)), skipping excluded j, averaged over anchors i."""
    a, c = F.normalize(anchors, dim=1), F.normalize(candidates, dim=1)
    total = 0.0
    for i in range(a.shape[0]):
        denom = sum(math.exp(float(a[i] @ c[j]) / t) for j in range(c.shape[0])
                    if exclude is None or not bool(exclude[i, j]))
        total += -math.log(math.exp(float(a[i] @ c[i]) / t) / denom)
    return total / a.shape[0]


def build(**params) -> CMC:
    torch.manual_seed(0)
    backbone = ConvNetSmall(ConvNetSmall.Params(width=8, stages=2))
    return CMC(CMC.Params(**params), backbone, num_classes=4, num_samples=16)


def crops(n: int = 6, seed: int = 0) -> torch.Tensor:
    return normalize(torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("t", [0.07, 0.5, 2.0])
def test_terms_match_naive_loops(t):
    g = torch.Generator().manual_seed(0)
    z_l, z_ab = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    l_to_ab, ab_to_l = cmc_terms(z_l, z_ab, t)
    assert l_to_ab.item() == pytest.approx(naive_direction(z_l, z_ab, t), rel=1e-5)
    assert ab_to_l.item() == pytest.approx(naive_direction(z_ab, z_l, t), rel=1e-5)


def test_bank_terms_match_naive_loops_with_exclusion():
    g = torch.Generator().manual_seed(1)
    z_l, z_ab = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    bank_l, bank_ab = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    exclude = torch.zeros(4, 6, dtype=torch.bool)
    exclude[0, 2] = exclude[3, 5] = True
    full = F.pad(exclude, (4, 0))
    l_to_ab, ab_to_l = cmc_terms(z_l, z_ab, 0.2, bank_l, bank_ab, exclude)
    assert l_to_ab.item() == pytest.approx(naive_direction(z_l, torch.cat([z_ab, bank_ab]), 0.2, full), rel=1e-5)
    assert ab_to_l.item() == pytest.approx(naive_direction(z_ab, torch.cat([z_l, bank_l]), 0.2, full), rel=1e-5)
    # excluding a bank row lowers the loss (one fewer negative)
    assert l_to_ab < cmc_terms(z_l, z_ab, 0.2, bank_l, bank_ab)[0]


def test_swapping_views_swaps_terms():
    g = torch.Generator().manual_seed(2)
    z_l, z_ab = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    a, b = cmc_terms(z_l, z_ab, 0.07)
    b2, a2 = cmc_terms(z_ab, z_l, 0.07)
    assert torch.allclose(a, a2) and torch.allclose(b, b2) and not torch.allclose(a, b)


def test_temperature_limits():
    e = torch.eye(4)
    # positives identical, negatives orthogonal: the loss vanishes as t -> 0
    assert sum(cmc_terms(e, e, 0.01)).item() == pytest.approx(0.0, abs=1e-6)
    # as t -> infinity every candidate is equally likely: log(M) per direction
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 4, generator=g)
    assert contrast(z, torch.randn(9, 4, generator=g), 1e6).item() == pytest.approx(math.log(9), rel=1e-4)
    # all embeddings equal: log(N) at any temperature
    assert contrast(torch.ones(3, 2), torch.ones(3, 2), 0.07).item() == pytest.approx(math.log(3), rel=1e-5)


def test_denormalize_inverts_normalize():
    x = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(denormalize(normalize(x)), x, atol=1e-6)


def test_views_round_trip_to_rgb():
    rgb = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    l_view, ab_view = lab_views(normalize(rgb), "grey")
    assert l_view.shape == ab_view.shape == (3, 3, 8, 8)
    grey = denormalize(l_view)
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-5) and torch.allclose(grey[:, 1], grey[:, 2], atol=1e-5)
    light, ab = rgb_to_l_ab(rgb)
    recovered_l = rgb_to_lab(grey)[:, :1] / 50 - 1  # L* of the grey image is the crop's L*
    assert torch.allclose(recovered_l, light, atol=1e-3)
    assert torch.allclose(rgb_to_lab(grey)[:, 1:], torch.zeros_like(ab), atol=1e-2)  # no colour left
    assert torch.equal(ab_view[:, 2], torch.zeros_like(ab_view[:, 2]))
    assert torch.allclose(lab_to_rgb(merge_lab(recovered_l, ab_view[:, :2])), rgb, atol=1e-3)
    l_raw, ab_raw = lab_views(normalize(rgb), "l")
    assert torch.allclose(l_raw, light.expand(-1, 3, -1, -1), atol=1e-5) and torch.equal(ab_raw, ab_view)


def test_l_view_ignores_colour_and_ab_view_ignores_lightness():
    g = torch.Generator().manual_seed(6)
    light = 30 + 40 * torch.rand(2, 1, 6, 6, generator=g)  # in-gamut colours: mid lightness, mild chroma
    ab1, ab2 = (30 * torch.rand(2, 2, 6, 6, generator=g) - 15 for _ in range(2))
    rgb1, rgb2 = (lab_to_rgb(merge_lab(light, ab, scaled=False)) for ab in (ab1, ab2))
    (l1, c1), (l2, c2) = lab_views(normalize(rgb1)), lab_views(normalize(rgb2))
    assert torch.allclose(l1, l2, atol=1e-3)  # same L*, other colours: the same L input
    assert not torch.allclose(c1, c2, atol=1e-2)
    brighter = lab_to_rgb(merge_lab(light + 10, ab1, scaled=False))  # same colour, other L*
    l3, c3 = lab_views(normalize(brighter))
    assert torch.allclose(c1, c3, atol=1e-3) and not torch.allclose(l1, l3, atol=1e-2)


def test_two_encoders_of_one_class_and_gradients_reach_both():
    m = build()
    assert type(m.ab_encoder) is type(m.backbone) and m.ab_encoder.params == m.backbone.params
    assert not torch.equal(next(m.ab_encoder.parameters()), next(m.backbone.parameters()))
    m.loss(Batch(views=[crops()], labels=torch.zeros(6, dtype=torch.long))).backward()
    for module in (m.backbone, m.ab_encoder, m.head_l, m.head_ab):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_method_loss_is_the_sum_of_both_directions():
    m = build(head="linear").eval()
    x = crops()
    with torch.no_grad():
        z_l, z_ab = m.embed(x)
        loss = m.loss(Batch(views=[x], labels=torch.zeros(6, dtype=torch.long)))
    assert loss.item() == pytest.approx(naive_direction(z_l, z_ab, 0.07) + naive_direction(z_ab, z_l, 0.07), rel=1e-5)


def test_bank_needs_num_samples_and_indices():
    with pytest.raises(BenchError):
        CMC(CMC.Params(negatives="bank"), ConvNetSmall(ConvNetSmall.Params(width=8, stages=2)), num_classes=4)
    with pytest.raises(BenchError):
        build(negatives="bank").loss(Batch(views=[crops()], labels=torch.zeros(6, dtype=torch.long)))
    assert "bank_l" not in build().state_dict()


def test_bank_update_is_ema_of_normalised_rows():
    m = build(negatives="bank", proj_dim=4)
    assert m.bank_l.shape == m.bank_ab.shape == (16, 4)
    assert torch.allclose(m.bank_l.norm(dim=1), torch.ones(16))
    before_l, before_ab = m.bank_l.clone(), m.bank_ab.clone()
    idx = torch.tensor([3, 7])
    z_l, z_ab = torch.randn(2, 4), torch.randn(2, 4)
    m.update_bank(idx, z_l, z_ab)
    expected = F.normalize(0.5 * before_l[idx] + 0.5 * F.normalize(z_l, dim=1), dim=1)
    assert torch.allclose(m.bank_l[idx], expected, atol=1e-6)
    assert torch.allclose(m.bank_ab[idx], F.normalize(0.5 * before_ab[idx] + 0.5 * F.normalize(z_ab, dim=1), dim=1))
    rest = torch.ones(16, dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(m.bank_l[rest], before_l[rest]) and torch.equal(m.bank_ab[rest], before_ab[rest])


def test_bank_step_writes_the_batch_rows_and_checkpoints():
    m = build(negatives="bank", bank_negatives=8)
    before = m.bank_ab.clone()
    idx = torch.tensor([0, 2, 4, 6, 8, 10])
    loss = m.loss(Batch(views=[crops()], labels=torch.zeros(6, dtype=torch.long), indices=idx))
    assert torch.isfinite(loss)
    assert torch.equal(m.bank_ab, before)  # untouched until the optimizer step is done
    loss.backward()
    m.on_step_end(1, 10)
    changed = (m.bank_ab != before).any(dim=1)
    assert changed.nonzero().flatten().tolist() == idx.tolist()
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    other = build(negatives="bank", bank_negatives=8)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(other.bank_ab, m.bank_ab) and torch.equal(other.bank_l, m.bank_l)


def test_instantiate_method_passes_num_samples():
    backbone = ConvNetSmall(ConvNetSmall.Params(width=8, stages=2))
    m = instantiate_method(CMC, CMC.Params(negatives="bank"), backbone, num_classes=4, num_samples=20)
    assert m.bank_l.shape[0] == 20

