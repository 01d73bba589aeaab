"""DINO: the loss against a naive loop over eq. 3, stop-gradient into the teacher, the centre's update, the
teacher temperature warm-up, the momentum schedule, the head, multi-crop, and 2 processes.
(Its conformance check runs in tests/test_conformance.py with every other method.)
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from ssl_bench.harness.pipeline.optim import build_optimizer
from ssl_bench.harness.pipeline.specs import OptimizerSpec
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.backbones.vit import ViTTinyCifar
from ssl_bench.plugins.methods.dino import DINO, DINOHead, batch_center, dino_loss
from tests.plugins.method_inputs import batch, check_cosine_momentum_step, views
from tests.plugins.two_processes import assert_same_gradients, gloo_group, gradients, run_two


def naive_dino(student, teacher, center, ts, tt) -> float:
    """Eq. 3 of [0] as loops: sum over pairs i != v of -sum_k Pt_i log Ps_v, averaged over samples and pairs."""
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == i:
                continue
            for b in range(t.shape[0]):
                te = [math.exp((float(t[b, k]) - float(center[0, k])) / tt) for k in range(t.shape[1])]
                se = [math.exp(float(s[b, k]) / ts) for k in range(s.shape[1])]
                total += -sum(te[k] / sum(te) * math.log(se[k] / sum(se)) for k in range(t.shape[1])) / t.shape[0]
            pairs += 1
    return total / pairs


def build(drift: bool = True, backbone=None, **params) -> DINO:
    """A tiny DINO on two views whose student has moved away from its teacher (when ``drift``)."""
    torch.manual_seed(0)
    backbone = backbone or ConvNetSmall(ConvNetSmall.Params(width=4, stages=2))
    defaults = {"views": ["swav_multicrop", "swav_multicrop"], "out_dim": 12, "hidden_dim": 16, "bottleneck_dim": 8}
    m = DINO(DINO.Params(**{**defaults, **params}), backbone, num_classes=4)
    if drift:
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for p in list(m.backbone.parameters()) + list(m.head.parameters()):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return m


@pytest.mark.parametrize(("n_views", "n_global", "ts", "tt"), [(2, 2, 0.1, 0.04), (4, 2, 0.1, 0.07), (3, 1, 0.5, 0.2)])
def test_loss_matches_naive_loop(n_views, n_global, ts, tt):
    g = torch.Generator().manual_seed(n_views)
    student = [torch.randn(3, 5, generator=g) for _ in range(n_views)]
    teacher = [torch.randn(3, 5, generator=g) for _ in range(n_global)]
    center = 0.3 * torch.randn(1, 5, generator=g)
    got = dino_loss(student, teacher, center, ts, tt).item()
    assert got == pytest.approx(naive_dino(student, teacher, center, ts, tt), rel=1e-5)


def test_known_values():
    k = 7
    flat = [torch.zeros(4, k)] * 3
    assert dino_loss(flat, flat[:2], torch.zeros(1, k), 0.1, 0.04).item() == pytest.approx(math.log(k), rel=1e-6)
    # a centre shared by every output makes no difference to the teacher's softmax
    g = torch.Generator().manual_seed(0)
    s, t = [torch.randn(4, k, generator=g) for _ in range(3)], [torch.randn(4, k, generator=g) for _ in range(2)]
    shifted = dino_loss(s, t, torch.full((1, k), 3.0), 0.1, 0.04)
    assert shifted.item() == pytest.approx(dino_loss(s, t, torch.zeros(1, k), 0.1, 0.04).item(), rel=1e-5)


def test_no_gradient_into_the_teacher_and_none_from_it():
    m = build()
    assert all(not p.requires_grad for p in m.teacher.parameters())
    m.loss(batch(views())).backward()
    assert all(p.grad is None for p in m.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.backbone.parameters())
    optimized = {id(p) for g in build_optimizer(OptimizerSpec(), m).param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in m.teacher.parameters()}
    # the teacher's outputs enter as constants: a loss over teacher logits alone has no graph
    s = [torch.randn(2, 4, requires_grad=True) for _ in range(2)]
    t = [torch.randn(2, 4, requires_grad=True) for _ in range(2)]
    dino_loss(s, t, torch.zeros(1, 4), 0.1, 0.04).backward()
    assert all(x.grad is None for x in t) and all(x.grad is not None for x in s)


def test_method_loss_matches_naive_with_teacher_on_global_views_only():
    m = build(views=["swav_multicrop", "swav_multicrop", "swav_multicrop_local"]).eval()
    x1, x2 = views()
    local = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    student = [m.head(m.backbone(v)).detach() for v in (x1, x2, local)]
    teacher = [m.teacher(v).detach() for v in (x1, x2)]
    with torch.no_grad():
        m.center.copy_(0.1 * torch.randn(1, 12, generator=torch.Generator().manual_seed(4)))
    loss = m.loss(batch([x1, x2, local]))
    assert loss.item() == pytest.approx(naive_dino(student, teacher, m.center, 0.1, 0.04), rel=1e-4)


def test_center_is_an_ema_of_the_global_views_teacher_outputs():
    m = build().eval()
    vs = views()
    c0 = torch.randn(1, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        m.center.copy_(c0)
        mean = torch.cat([m.teacher(v) for v in vs]).mean(dim=0, keepdim=True)
    m.loss(batch(vs))
    assert torch.equal(m.center, c0), "the centre moves after the optimizer step, not inside the loss"
    m.on_step_end(1, 10)
    assert torch.allclose(m.center, 0.9 * c0 + 0.1 * mean, atol=1e-6)
    assert torch.allclose(batch_center([torch.ones(2, 3), 3 * torch.ones(2, 3)]), torch.full((1, 3), 2.0))


def test_teacher_temperature_warms_up_linearly_then_stays():
    m = build(teacher_temp_start=0.04, teacher_temp=0.07, teacher_temp_warmup=0.1)
    assert m.teacher_temperature() == pytest.approx(0.04)  # step 0: the run's length is not known yet
    for step, want in [(1, 0.04 + 0.03 * 1 / 10), (5, 0.055), (10, 0.07), (60, 0.07)]:
        m.on_step_end(step, 100)
        assert m.teacher_temperature() == pytest.approx(want)
    assert build(teacher_temp_warmup=0.0, teacher_temp=0.05).teacher_temperature() == 0.05


def test_momentum_follows_the_cosine_schedule():
    m = build(momentum_base=0.9)
    check_cosine_momentum_step(m, list(m.backbone.parameters()) + list(m.head.parameters()), m.teacher)


def test_head_has_a_weight_normalised_last_layer():
    torch.manual_seed(0)
    head = DINOHead(6, 16, 8, 10)
    assert len([x for x in head.mlp if isinstance(x, torch.nn.Linear)]) == 3
    assert not head.last_g.requires_grad and torch.equal(head.last_g, torch.ones(10, 1))
    x = torch.randn(5, 6)
    z = F.normalize(head.mlp(x), dim=1)
    logits = head(x)
    assert torch.allclose(logits, z @ F.normalize(head.last_v, dim=1).T, atol=1e-6)
    assert logits.abs().max() <= 1 + 1e-5, "cosines: unit bottleneck, unit rows"
    with torch.no_grad():
        head.last_v.mul_(7.0)  # the scale of v does not matter
    assert torch.allclose(head(x), logits, atol=1e-6)
    assert DINOHead(6, 16, 8, 10, norm_last_layer=False).last_g.requires_grad
    head(x, freeze_last=True).sum().backward()
    assert head.last_v.grad is None and head.mlp[0].weight.grad is not None


def test_freeze_last_layer_steps():
    m = build(freeze_last_layer_steps=2)
    m.loss(batch(views())).backward()
    assert m.head.last_v.grad is None
    m.zero_grad()
    m.on_step_end(2, 10)
    m.loss(batch(views())).backward()
    assert m.head.last_v.grad is not None


def test_works_on_the_vit_with_local_crops_of_another_size():
    vit = ViTTinyCifar(ViTTinyCifar.Params(width=16, depth=2, heads=2))
    m = build(backbone=vit, views=["swav_multicrop", "swav_multicrop", "swav_multicrop_local"])
    vs = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), torch.randn(4, 3, 14, 14)]
    loss = m.loss(batch(vs))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in m.backbone.parameters())


def test_defaults():
    p = DINO.Params()
    assert p.views == ("swav_multicrop",) * 2 + ("swav_multicrop_local",) * 4 and p.n_global == 2
    assert (p.student_temp, p.teacher_temp_start, p.teacher_temp, p.center_momentum) == (0.1, 0.04, 0.07, 0.9)
    with pytest.raises(ValueError, match="n_global"):
        DINO.Params(views=["a", "b"], n_global=3)


def _in_process(rank: int, init: str, out: str) -> None:
    from ssl_bench.harness.pipeline.train import distributed_loss

    with gloo_group(rank, init):
        m = build().eval()
        ddp = distributed_loss(m, torch.device("cpu"))
        loss = ddp(batch([v[rank * 4:(rank + 1) * 4] for v in views()]))
        loss.backward()
        m.on_step_end(1, 10)
        torch.save({"loss": loss.detach(), "grads": gradients(m), "center": m.center.clone()}, f"{out}/rank{rank}.pt")


@pytest.mark.slow
def test_two_processes_on_halves_equal_one_process_on_the_batch(tmp_path, one_thread):
    ranks = run_two(_in_process, tmp_path)
    m = build().eval()
    loss = m.loss(batch(views()))
    loss.backward()
    assert (ranks[0]["loss"] + ranks[1]["loss"]).item() / 2 == pytest.approx(loss.item(), rel=1e-5)
    assert_same_gradients(ranks, m)
    m.on_step_end(1, 10)
    assert m.center.abs().sum() > 0
    for r in ranks:  # the centre is the global batch's in every process
        assert torch.allclose(r["center"], m.center, atol=1e-6)
    half = build().eval()
    half.loss(batch([v[:4] for v in views()]))
    half.on_step_end(1, 10)
    assert not torch.allclose(half.center, m.center, atol=1e-4)
