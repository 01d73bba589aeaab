from __future__ import annotations

import io
import math

import pytest
import torch
from torch.nn import functional as F

from ssl_bench.harness.components import Batch
from ssl_bench.harness.pipeline.optim import build_optimizer
from ssl_bench.harness.pipeline.specs import ComponentRef, DatasetRef, OptimizerSpec, PretrainSpec
from ssl_bench.harness.pipeline.train import pretrain
from ssl_bench.harness.testing import tiny_images
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.methods.moco import MoCoV2, moco_infonce


def naive_infonce(q, k, queue, t):
    """Eq. 1 of MoCo as a loop: -log(exp(q.k+/t) / (exp(q.k+/t) + sum_neg exp(q.n/t)))."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ n) / t) for n in queue)
        total += -math.log(pos / (pos + neg))
    return total / q.shape[0]


def build(**params) -> MoCoV2:
    torch.manual_seed(0)
    backbone = ConvNetSmall(ConvNetSmall.Params(width=4, stages=2))
    return MoCoV2(MoCoV2.Params(**params), backbone, num_classes=4)


def batch(n: int = 6, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(n, 3, 8, 8, generator=g) for _ in range(2)]
    return Batch(views=views, labels=torch.zeros(n, dtype=torch.long))


@pytest.mark.parametrize("t", [0.07, 0.2, 1.0])
def test_infonce_matches_naive_loop(t):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    queue = F.normalize(torch.randn(7, 4, generator=g), dim=1)
    assert moco_infonce(q, k, queue, t).item() == pytest.approx(naive_infonce(q, k, queue, t), rel=1e-5)


def test_infonce_known_values():
    q = torch.ones(3, 4)
    queue = F.normalize(torch.ones(9, 4), dim=1)
    assert moco_infonce(q, q, queue, 0.5).item() == pytest.approx(math.log(10), rel=1e-6)  # all equal
    e = torch.eye(4)
    # positive = query, negatives orthogonal: the loss vanishes as the temperature goes to 0
    assert moco_infonce(e[:2], e[:2], e[2:], 0.01).item() == pytest.approx(0.0, abs=1e-6)


def test_infonce_only_query_gets_gradient():
    q = torch.randn(4, 3, requires_grad=True)
    k = torch.randn(4, 3)
    moco_infonce(q, k, F.normalize(torch.randn(5, 3), dim=1), 0.2).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_enqueue_wraps_around():
    m = build(queue_size=5, proj_dim=2)
    a = F.normalize(torch.randn(3, 2), dim=1)
    b = F.normalize(torch.randn(3, 2), dim=1)
    old = m.queue.clone()
    m.enqueue(a)
    assert int(m.queue_ptr) == 3 and torch.equal(m.queue[:3], a) and torch.equal(m.queue[3:], old[3:])
    m.enqueue(b)
    assert int(m.queue_ptr) == 1
    assert torch.equal(m.queue[3:], b[:2]) and torch.equal(m.queue[:1], b[2:]) and torch.equal(m.queue[1:3], a[1:])
    c = F.normalize(torch.randn(12, 2), dim=1)  # more keys than rows: the newest K survive
    m.enqueue(c)
    assert int(m.queue_ptr) == 1 and set(map(tuple, m.queue.tolist())) == set(map(tuple, c[-5:].tolist()))


def test_step_enqueues_both_keys_when_symmetric():
    for symmetric, expected in ((True, 12), (False, 6)):
        m = build(queue_size=64, symmetric=symmetric)
        m.loss(batch()).backward()
        m.on_step_end(1, 10)
        assert int(m.queue_ptr) == expected
        assert torch.allclose(m.queue[:expected].norm(dim=1), torch.ones(expected))


def test_key_encoder_has_no_grad_and_is_not_optimized():
    m = build()
    assert all(not p.requires_grad for p in m.key_encoder.parameters())
    m.loss(batch()).backward()
    assert all(p.grad is None for p in m.key_encoder.parameters())
    assert any(p.grad is not None for p in m.backbone.parameters())
    optimized = {id(p) for g in build_optimizer(OptimizerSpec(), m).param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in m.key_encoder.parameters()}
    assert {id(p) for p in m.backbone.parameters()} <= optimized


def test_momentum_update_moves_keys_by_exactly_one_minus_m():
    m = build(momentum=0.9)
    online = list(m.backbone.parameters()) + list(m.projector.parameters())
    with torch.no_grad():
        for p in online:
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in m.key_encoder.parameters()]
    m.on_step_end(1, 10)
    for k0, k1, o in zip(before, m.key_encoder.parameters(), online):
        assert torch.allclose(k1, 0.9 * k0 + 0.1 * o, atol=1e-6)


def test_split_bn_unshuffles_keys():
    m = build(key_bn_splits=3).eval()  # eval: BN uses running stats, so splitting changes nothing
    x = torch.randn(9, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(m.keys(x), m.key_encoder(x), atol=1e-6)
    m.train()  # in training, sub-batch statistics differ from whole-batch ones
    with torch.no_grad():
        assert not torch.allclose(m.keys(x), m.key_encoder(x), atol=1e-4)


def test_checkpoint_keeps_queue_pointer_and_key_encoder():
    m = build(queue_size=32)
    m.loss(batch()).backward()
    m.on_step_end(1, 10)
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    other = MoCoV2(m.params, ConvNetSmall(ConvNetSmall.Params(width=4, stages=2)), num_classes=4)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(other.queue, m.queue) and int(other.queue_ptr) == int(m.queue_ptr) == 12
    for a, b in zip(other.key_encoder.state_dict().values(), m.key_encoder.state_dict().values()):
        assert torch.equal(a, b)


def test_a_few_steps_of_the_training_loop(tmp_path):
    m = build(queue_size=50)
    identity = lambda x, *, generator: x  # noqa: E731
    spec = PretrainSpec(dataset=DatasetRef(name="x"), backbone=ComponentRef(name="convnet_small"),
                        epochs=1, batch_size=8, optimizer=OptimizerSpec(lr=0.05))
    queue0 = m.queue.clone()
    stats = pretrain(m, {"moco_v2": identity}, tiny_images(24), spec, seed=0,
                     device=torch.device("cpu"), workdir=tmp_path, progress=False)
    assert stats.steps == 3 and math.isfinite(stats.final_loss)
    assert int(m.queue_ptr) == (3 * 16) % 50 and not torch.equal(m.queue, queue0)
