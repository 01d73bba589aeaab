"""NNCLR: nearest neighbours and the loss against naive loops, the support queue, stop-gradient through the
neighbours, symmetry, and 2 processes.
(Its conformance check runs in tests/test_conformance.py with every other method.)
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch.nn import functional as F

from ssl_bench.harness.pipeline.specs import ComponentRef, DatasetRef, OptimizerSpec, PretrainSpec
from ssl_bench.harness.pipeline.train import distributed_loss, pretrain
from ssl_bench.harness.testing import tiny_images
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.methods.nnclr import NNCLR, nearest_neighbours, nnclr_loss
from tests.plugins.method_inputs import batch, views
from tests.plugins.two_processes import assert_same_gradients, gloo_group, gradients, run_two


def naive_nn(z, queue) -> torch.Tensor:
    """NN(z_i, Q) of [0] as loops: the queue row of least Euclidean distance to the normalised z_i."""
    out = []
    for i in range(z.shape[0]):
        zi = [float(v) / math.sqrt(sum(float(u) ** 2 for u in z[i])) for v in z[i]]
        dists = [sum((a - float(b)) ** 2 for a, b in zip(zi, q)) for q in queue]
        out.append(queue[dists.index(min(dists))])
    return torch.stack(out)


def naive_loss(nn, p, t, offset=0) -> float:
    """[0]'s loss as a loop: mean_i -log(exp(nn_i.p_{o+i}/t) / sum_k exp(nn_i.p_k/t)), p normalised."""
    p = F.normalize(p, dim=1)
    total = 0.0
    for i in range(nn.shape[0]):
        logits = [float(nn[i] @ p[k]) / t for k in range(p.shape[0])]
        total += -math.log(math.exp(logits[offset + i]) / sum(math.exp(x) for x in logits))
    return total / nn.shape[0]


def build(**params) -> NNCLR:
    torch.manual_seed(0)
    backbone = ConvNetSmall(ConvNetSmall.Params(width=4, stages=2))
    defaults = {"proj_hidden_dim": 16, "proj_dim": 8, "pred_hidden_dim": 16, "queue_size": 12}
    return NNCLR(NNCLR.Params(**{**defaults, **params}), backbone, num_classes=4)


def test_nearest_neighbours_match_naive_loop():
    g = torch.Generator().manual_seed(0)
    z, queue = torch.randn(7, 5, generator=g), F.normalize(torch.randn(20, 5, generator=g), dim=1)
    assert torch.equal(nearest_neighbours(z, queue), naive_nn(z, queue))
    assert torch.equal(nearest_neighbours(3 * queue[[4, 2]] + 1e-3, queue), queue[[4, 2]])  # a row finds itself


@pytest.mark.parametrize(("t", "offset"), [(0.1, 0), (0.5, 0), (1.0, 2)])
def test_loss_matches_naive_loop(t, offset):
    g = torch.Generator().manual_seed(1)
    nn, p = F.normalize(torch.randn(4, 5, generator=g), dim=1), torch.randn(7, 5, generator=g)
    assert nnclr_loss(nn, p, t, offset).item() == pytest.approx(naive_loss(nn, p, t, offset), rel=1e-5)


def test_known_values():
    nn = F.normalize(torch.ones(3, 4), dim=1)
    assert nnclr_loss(nn, torch.ones(3, 4), 0.1).item() == pytest.approx(math.log(3), rel=1e-6)  # all equal
    e = torch.eye(4)
    assert nnclr_loss(e, 2 * e, 0.01).item() == pytest.approx(0.0, abs=1e-6)


def test_method_loss_matches_naive_and_is_symmetric_in_views():
    m = build().eval()
    x1, x2 = views()
    z1, z2 = (m.projector(m.backbone(x)).detach() for x in (x1, x2))
    p1, p2 = m.predictor(z1).detach(), m.predictor(z2).detach()
    expected = (naive_loss(naive_nn(z1, m.queue), p2, 0.1) + naive_loss(naive_nn(z2, m.queue), p1, 0.1)) / 2
    assert m.loss(batch([x1, x2])).item() == pytest.approx(expected, rel=1e-5)
    assert m.loss(batch([x2, x1])).item() == pytest.approx(expected, rel=1e-5)
    m.queue.copy_(F.normalize(torch.cat([z1, z1[:4]]), dim=1))  # the batch itself in the queue: NN(z1_i) = z1_i
    assert torch.allclose(nearest_neighbours(z1, m.queue), F.normalize(z1, dim=1))


def test_gradient_only_through_the_predictions():
    z = torch.randn(5, 4, requires_grad=True)
    assert not nearest_neighbours(z, F.normalize(torch.randn(6, 4), dim=1)).requires_grad
    m = build()
    assert "queue" in dict(m.named_buffers()) and "queue" not in dict(m.named_parameters())
    loss = m.loss(batch(views()))
    loss.backward()
    assert all(p.grad is not None for p in m.predictor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.backbone.parameters())


def test_queue_is_a_fifo_of_first_view_projections():
    m = build(queue_size=12).eval()
    vs = views()
    z1 = F.normalize(m.projector(m.backbone(vs[0])).detach(), dim=1)
    old = m.queue.clone()
    m.loss(batch(vs))
    assert torch.equal(m.queue, old)  # read, not written, during the loss
    m.on_step_end(1, 10)
    assert torch.allclose(m.queue[:8], z1, atol=1e-6) and torch.equal(m.queue[8:], old[8:])
    assert int(m.queue_ptr) == 8
    m.loss(batch(vs))
    m.on_step_end(2, 10)  # wraps around: rows 8-11 then 0-3
    assert torch.allclose(m.queue[8:], z1[:4], atol=1e-6) and torch.allclose(m.queue[:4], z1[4:], atol=1e-6)
    assert int(m.queue_ptr) == 4
    m.on_step_end(3, 10)  # nothing pending: unchanged
    assert int(m.queue_ptr) == 4
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    other = build(queue_size=12)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(other.queue, m.queue) and int(other.queue_ptr) == 4


def test_defaults():
    p = NNCLR.Params()
    assert (p.temperature, p.views) == (0.1, ("byol", "byol_prime"))
    m = build()
    assert len([x for x in m.projector if isinstance(x, torch.nn.Linear)]) == 3
    assert isinstance(m.projector[-1], torch.nn.BatchNorm1d)
    assert torch.allclose(m.queue.norm(dim=1), torch.ones(12))


def test_a_few_steps_of_the_training_loop(tmp_path):
    m = build()
    identity = lambda x, *, generator: x  # noqa: E731
    spec = PretrainSpec(dataset=DatasetRef(name="x"), backbone=ComponentRef(name="convnet_small"),
                        epochs=1, batch_size=8, optimizer=OptimizerSpec(lr=0.05))
    stats = pretrain(m, {"byol": identity, "byol_prime": identity}, tiny_images(24), spec, seed=0,
                     device=torch.device("cpu"), workdir=tmp_path, progress=False)
    assert stats.steps == 3 and math.isfinite(stats.final_loss)
    assert int(m.queue_ptr) == 24 % 12  # 3 steps of 8 first views, wrapped around the 12 rows


def _in_process(rank: int, init: str, out: str) -> None:
    with gloo_group(rank, init):
        m = build().eval()  # eval: batch norm on running statistics, the same function in 1 and 2 processes
        mine = slice(rank * 4, (rank + 1) * 4)
        with torch.no_grad():
            m.loss(batch([v[mine] for v in views(seed=2)]))
        m.on_step_end(1, 10)  # fills the queue with the first views of both processes
        ddp = distributed_loss(m, torch.device("cpu"))  # kept alive until backward
        loss = ddp(batch([v[mine] for v in views()]))
        loss.backward()
        grads = gradients(m)
        torch.save({"loss": loss.detach(), "grads": grads, "queue": m.queue}, f"{out}/rank{rank}.pt")


@pytest.mark.slow
def test_two_processes_on_halves_equal_one_process_on_the_batch(tmp_path, one_thread):
    ranks = run_two(_in_process, tmp_path)
    m = build().eval()
    with torch.no_grad():
        m.loss(batch(views(seed=2)))
    m.on_step_end(1, 10)
    loss = m.loss(batch(views()))
    loss.backward()
    # anchors are local and candidates global: the global loss is the mean of the per-process ones
    assert (ranks[0]["loss"] + ranks[1]["loss"]).item() / 2 == pytest.approx(loss.item(), rel=1e-5)
    for r in ranks:
        assert torch.allclose(r["queue"], m.queue, atol=1e-6)
    assert_same_gradients(ranks, m)
    local = build().eval()  # each half against its own candidates only: a different loss
    local.queue.copy_(m.queue)
    halves = [local.loss(batch([v[i * 4:(i + 1) * 4] for v in views()])).item() for i in range(2)]
    assert abs(sum(halves) / 2 - loss.item()) > 1e-3
