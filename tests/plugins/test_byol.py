from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from ssl_bench.harness.components import Batch
from ssl_bench.harness.kit.momentum import cosine_tau, ema_update, frozen_copy
from ssl_bench.harness.pipeline.optim import build_optimizer
from ssl_bench.harness.pipeline.specs import ComponentRef, DatasetRef, OptimizerSpec, PretrainSpec
from ssl_bench.harness.pipeline.train import pretrain
from ssl_bench.harness.testing import tiny_images
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.methods.byol import BYOL, byol_loss, regression_loss
from tests.plugins.method_inputs import check_cosine_momentum_step


def naive_byol(p1, p2, z1, z2):
    """Eq. 2-3 of BYOL as a loop: sum over both view orders of mean_i ||p_i/|p_i| - z_i/|z_i|||^2."""
    total = 0.0
    for p, z in ((p1, z2), (p2, z1)):
        acc = 0.0
        for i in range(p.shape[0]):
            pn = [float(v) / math.sqrt(sum(float(u) ** 2 for u in p[i])) for v in p[i]]
            zn = [float(v) / math.sqrt(sum(float(u) ** 2 for u in z[i])) for v in z[i]]
            acc += sum((a - b) ** 2 for a, b in zip(pn, zn))
        total += acc / p.shape[0]
    return total


def build(**params) -> BYOL:
    torch.manual_seed(0)
    backbone = ConvNetSmall(ConvNetSmall.Params(width=4, stages=2))
    return BYOL(BYOL.Params(proj_hidden_dim=16, proj_dim=8, pred_hidden_dim=16, **params), backbone, num_classes=4)


def batch(n: int = 6) -> Batch:
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(n, 3, 8, 8, generator=g) for _ in range(2)]
    return Batch(views=views, labels=torch.zeros(n, dtype=torch.long))


def test_loss_matches_naive_computation():
    g = torch.Generator().manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(5, 4, generator=g) for _ in range(4))
    assert byol_loss(p1, p2, z1, z2).item() == pytest.approx(naive_byol(p1, p2, z1, z2), rel=1e-5)


def test_loss_invariants():
    g = torch.Generator().manual_seed(1)
    p1, p2, z1, z2 = (torch.randn(6, 3, generator=g) for _ in range(4))
    assert torch.allclose(byol_loss(p1, p2, z1, z2), byol_loss(p2, p1, z2, z1))  # symmetric in the views
    assert regression_loss(p1, 3.0 * p1).item() == pytest.approx(0.0, abs=1e-6)  # same direction: 0
    assert regression_loss(p1, -0.5 * p1).item() == pytest.approx(4.0, rel=1e-6)  # opposite: the max, 4
    assert byol_loss(p1, p2, -p2, -p1).item() == pytest.approx(8.0, rel=1e-6)
    assert 0.0 <= byol_loss(p1, p2, z1, z2).item() <= 8.0


def test_no_gradient_into_targets():
    p, z = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    regression_loss(p, z).backward()
    assert p.grad is not None and z.grad is None


def test_ema_moves_target_by_exactly_one_minus_tau():
    online = nn.Linear(3, 2)
    target = frozen_copy(online)
    with torch.no_grad():
        online.weight.add_(1.0)
    before = target.weight.clone()
    ema_update(target, online, 0.75)
    assert torch.allclose(target.weight, 0.75 * before + 0.25 * online.weight)
    ema_update(target, online, 0.0)
    assert torch.equal(target.weight, online.weight)
    frozen = target.weight.clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    ema_update(target, online, 1.0)
    assert torch.equal(target.weight, frozen)
    with pytest.raises(ValueError):
        ema_update(target, online, 1.5)


def test_cosine_tau_schedule():
    assert cosine_tau(0.99, 0, 100) == pytest.approx(0.99)
    assert cosine_tau(0.99, 50, 100) == pytest.approx(0.995)
    assert cosine_tau(0.99, 100, 100) == pytest.approx(1.0)
    taus = [cosine_tau(0.996, k, 20) for k in range(21)]
    assert all(a <= b for a, b in zip(taus, taus[1:]))


def test_target_follows_schedule_in_on_step_end():
    m = build(tau_base=0.9)
    online = list(m.backbone.parameters()) + list(m.projector.parameters())
    with torch.no_grad():
        for p in online:
            p.add_(torch.randn_like(p))
    check_cosine_momentum_step(m, online, m.target)


def test_target_has_no_grad_and_is_not_optimized():
    m = build()
    assert all(not p.requires_grad for p in m.target.parameters())
    m.loss(batch()).backward()
    assert all(p.grad is None for p in m.target.parameters())
    assert all(p.grad is not None for p in m.predictor.parameters())
    optimized = {id(p) for g in build_optimizer(OptimizerSpec(), m).param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in m.target.parameters()}


def test_checkpoint_keeps_target():
    m = build()
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(1.0)
    m.on_step_end(1, 10)
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    other = BYOL(m.params, ConvNetSmall(ConvNetSmall.Params(width=4, stages=2)), num_classes=4)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    for a, b in zip(other.target.state_dict().values(), m.target.state_dict().values()):
        assert torch.equal(a, b)


def test_a_few_steps_of_the_training_loop(tmp_path):
    m = build()
    identity = lambda x, *, generator: x  # noqa: E731
    spec = PretrainSpec(dataset=DatasetRef(name="x"), backbone=ComponentRef(name="convnet_small"),
                        epochs=1, batch_size=8, optimizer=OptimizerSpec(lr=0.05))
    target0 = [p.clone() for p in m.target.parameters()]
    stats = pretrain(m, {"byol": identity, "byol_prime": identity}, tiny_images(24), spec, seed=0,
                     device=torch.device("cpu"), workdir=tmp_path, progress=False)
    assert stats.steps == 3 and math.isfinite(stats.final_loss)
    assert any(not torch.equal(a, b) for a, b in zip(target0, m.target.parameters()))
