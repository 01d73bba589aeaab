"""MoCo v3: the loss against a naive loop over Algorithm 1, stop-gradient into the momentum encoder,
symmetry, the momentum schedule, and 2 processes.
(Its conformance check runs in tests/test_conformance.py with every other method.)
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch.nn import functional as F

from ssl_bench.harness.pipeline.optim import build_optimizer
from ssl_bench.harness.pipeline.specs import ComponentRef, DatasetRef, OptimizerSpec, PretrainSpec
from ssl_bench.harness.pipeline.train import pretrain
from ssl_bench.harness.testing import tiny_images
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.methods.moco_v3 import MoCoV3, moco_v3_contrastive
from tests.plugins.method_inputs import batch, check_cosine_momentum_step, views
from tests.plugins.two_processes import assert_same_gradients, loss_on_my_half, run_two


def naive_ctr(q, k, t, offset=0) -> float:
    """``ctr`` of Algorithm 1 as a loop: 2 t mean_i -log(exp(q_i.k_{o+i}/t) / sum_j exp(q_i.k_j/t)), unit q and k."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    total = 0.0
    for i in range(q.shape[0]):
        logits = [float(q[i] @ k[j]) / t for j in range(k.shape[0])]
        total += -math.log(math.exp(logits[offset + i]) / sum(math.exp(x) for x in logits))
    return 2 * t * total / q.shape[0]


def build(drift: bool = True, **params) -> MoCoV3:
    """A tiny MoCo v3 whose online network has moved away from its momentum encoder (when ``drift``)."""
    torch.manual_seed(0)
    backbone = ConvNetSmall(ConvNetSmall.Params(width=4, stages=2))
    defaults = {"proj_hidden_dim": 16, "proj_dim": 8, "pred_hidden_dim": 16}
    m = MoCoV3(MoCoV3.Params(**{**defaults, **params}), backbone, num_classes=4)
    if drift:
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for p in list(m.backbone.parameters()) + list(m.projector.parameters()):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return m


@pytest.mark.parametrize(("t", "offset"), [(0.2, 0), (1.0, 0), (0.5, 3)])
def test_contrastive_matches_naive_loop(t, offset):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(4, 5, generator=g), torch.randn(9, 5, generator=g)
    assert moco_v3_contrastive(q, k, t, offset).item() == pytest.approx(naive_ctr(q, k, t, offset), rel=1e-5)


def test_contrastive_known_values():
    q = torch.ones(3, 4)
    assert moco_v3_contrastive(q, torch.ones(5, 4), 0.5).item() == pytest.approx(2 * 0.5 * math.log(5), rel=1e-6)
    e = torch.eye(4)  # each key is its query, the others orthogonal: the loss vanishes as tau goes to 0
    assert moco_v3_contrastive(e, 3 * e, 0.01).item() == pytest.approx(0.0, abs=1e-6)


def test_method_loss_matches_naive_and_is_symmetric_in_views():
    m = build().eval()
    x1, x2 = views()
    q1, q2 = (m.predictor(m.projector(m.backbone(x))).detach() for x in (x1, x2))
    k1, k2 = m.momentum_encoder(x1).detach(), m.momentum_encoder(x2).detach()
    loss = m.loss(batch([x1, x2]))
    assert loss.item() == pytest.approx(naive_ctr(q1, k2, 0.2) + naive_ctr(q2, k1, 0.2), rel=1e-5)
    assert loss.item() == pytest.approx(m.loss(batch([x2, x1])).item(), rel=1e-6)


def test_no_gradient_into_the_momentum_encoder():
    m = build()
    assert all(not p.requires_grad for p in m.momentum_encoder.parameters())
    m.loss(batch(views())).backward()
    assert all(p.grad is None for p in m.momentum_encoder.parameters())
    assert all(p.grad is not None for p in m.predictor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.backbone.parameters())
    optimized = {id(p) for g in build_optimizer(OptimizerSpec(), m).param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in m.momentum_encoder.parameters()}


def test_momentum_follows_the_cosine_schedule():
    m = build(momentum_base=0.9)
    check_cosine_momentum_step(m, list(m.backbone.parameters()) + list(m.projector.parameters()), m.momentum_encoder)
    frozen = [p.clone() for p in m.momentum_encoder.parameters()]
    m.on_step_end(20, 20)  # m = 1 at the last step
    assert all(torch.equal(a, b) for a, b in zip(frozen, m.momentum_encoder.parameters()))


def test_checkpoint_keeps_the_momentum_encoder():
    m = build()
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    other = build(drift=False)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    for a, b in zip(other.momentum_encoder.state_dict().values(), m.momentum_encoder.state_dict().values()):
        assert torch.equal(a, b)


def test_architecture_and_defaults():
    m = build()
    assert len([x for x in m.projector if isinstance(x, torch.nn.Linear)]) == 3
    assert len([x for x in m.predictor if isinstance(x, torch.nn.Linear)]) == 2
    assert all(isinstance(h[-1], torch.nn.BatchNorm1d) and not h[-1].affine for h in (m.projector, m.predictor))
    p = MoCoV3.Params()
    assert (p.temperature, p.momentum_base, p.views) == (0.2, 0.99, ("byol", "byol_prime"))


def test_a_few_steps_of_the_training_loop(tmp_path):
    m = build()
    before = [p.clone() for p in m.momentum_encoder.parameters()]
    identity = lambda x, *, generator: x  # noqa: E731
    spec = PretrainSpec(dataset=DatasetRef(name="x"), backbone=ComponentRef(name="convnet_small"),
                        epochs=1, batch_size=8, optimizer=OptimizerSpec(lr=0.05))
    stats = pretrain(m, {"byol": identity, "byol_prime": identity}, tiny_images(24), spec, seed=0,
                     device=torch.device("cpu"), workdir=tmp_path, progress=False)
    assert stats.steps == 3 and math.isfinite(stats.final_loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, m.momentum_encoder.parameters()))


def _in_process(rank: int, init: str, out: str) -> None:
    loss_on_my_half(rank, init, out, build)


@pytest.mark.slow
def test_two_processes_on_halves_equal_one_process_on_the_batch(tmp_path, one_thread):
    ranks = run_two(_in_process, tmp_path)
    m = build().eval()
    loss = m.loss(batch(views()))
    loss.backward()
    # queries are local and keys global: the global loss is the mean of the per-process ones, as DDP's gradient
    assert (ranks[0]["loss"] + ranks[1]["loss"]).item() / 2 == pytest.approx(loss.item(), rel=1e-5)
    assert_same_gradients(ranks, m)
    local = build().eval()  # each half against its own keys only: a different loss
    halves = [local.loss(batch([v[i * 4:(i + 1) * 4] for v in views()])).item() for i in range(2)]
    assert abs(sum(halves) / 2 - loss.item()) > 1e-3
