"""SwAV: Sinkhorn codes and the swapped loss against naive loops, invariants, multi-crop, queue,
prototype freezing, and the swav_multicrop pipelines."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch.nn import functional as F

from ssl_bench.harness.components import Batch
from ssl_bench.harness.pipeline.specs import ComponentRef, DatasetRef, OptimizerSpec, PretrainSpec
from ssl_bench.harness.pipeline.train import pretrain
from ssl_bench.harness.testing import tiny_images
from ssl_bench.plugins.augmentations.swav_multicrop import SwAVGlobalCrop, SwAVLocalCrop
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.methods import swav as swav_module
from ssl_bench.plugins.methods.swav import SwAV, sinkhorn, swapped_prediction_loss

ROOT = Path(__file__).resolve().parents[2]


def naive_sinkhorn(scores, epsilon, iterations):
    """[0]'s appendix algorithm with explicit loops over prototypes (rows) and samples (columns)."""
    n, k = len(scores), len(scores[0])
    q = [[math.exp(scores[b][j] / epsilon) for b in range(n)] for j in range(k)]  # (K, N)
    total = sum(sum(row) for row in q)
    q = [[v / total for v in row] for row in q]
    for _ in range(iterations):
        for j in range(k):
            r = sum(q[j])
            q[j] = [v / r / k for v in q[j]]
        for b in range(n):
            c = sum(q[j][b] for j in range(k))
            for j in range(k):
                q[j][b] = q[j][b] / c / n
    return [[q[j][b] * n for j in range(k)] for b in range(n)]


def naive_swapped_loss(scores, codes, t):
    """Eq. 2 of [0] as loops: -sum_k q_ik log p_vk, averaged over samples, other views, coded views."""
    total = 0.0
    for i, q in enumerate(codes):
        sub = 0.0
        others = [v for v in range(len(scores)) if v != i]
        for v in others:
            for b in range(q.shape[0]):
                logits = [float(x) / t for x in scores[v][b].detach()]
                lse = math.log(sum(math.exp(x) for x in logits))
                sub += -sum(float(q[b, k]) * (logits[k] - lse) for k in range(len(logits))) / q.shape[0]
        total += sub / len(others)
    return total / len(codes)


def build(**params) -> SwAV:
    torch.manual_seed(0)
    backbone = ConvNetSmall(ConvNetSmall.Params(width=4, stages=2))
    return SwAV(SwAV.Params(**{"num_prototypes": 5, "proj_dim": 8, **params}), backbone, num_classes=4)


def batch(n: int = 6, sizes: tuple[int, ...] = (8, 8), seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(views=[torch.randn(n, 3, s, s, generator=g) for s in sizes], labels=torch.zeros(n, dtype=torch.long))


def unit_scores(n: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, 4, generator=g), dim=1) @ F.normalize(torch.randn(k, 4, generator=g), dim=1).T


@pytest.mark.parametrize(("n", "k", "eps", "iters"), [(6, 4, 0.05, 3), (5, 7, 0.5, 1), (8, 3, 0.1, 10)])
def test_sinkhorn_matches_naive_loop(n, k, eps, iters):
    s = unit_scores(n, k)
    expected = torch.tensor(naive_sinkhorn(s.tolist(), eps, iters))
    assert torch.allclose(sinkhorn(s, eps, iters), expected, rtol=1e-4, atol=1e-6)


def test_codes_are_a_transport_plan():
    s = unit_scores(16, 4, seed=1)
    q = sinkhorn(s, 0.05, 3)
    assert q.dtype == torch.float32 and (q >= 0).all()
    assert torch.allclose(q.sum(dim=1), torch.ones(16), atol=1e-5)  # each sample's code: mass 1 (N * 1/N)
    # each prototype's mass tends to N/K (K x 1/K scaled by N); more iterations get closer
    errs = [(sinkhorn(s, 0.05, it).sum(dim=0) - 16 / 4).abs().max().item() for it in (1, 3, 200)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3
    assert errs[1] < (torch.softmax(s / 0.05, dim=1).sum(dim=0) - 4).abs().max()  # better than no balancing


def test_sinkhorn_permutation_equivariance_and_shift_invariance():
    s = unit_scores(9, 5, seed=2)
    q = sinkhorn(s, 0.05, 3)
    rows, cols = torch.randperm(9), torch.randperm(5)
    assert torch.allclose(sinkhorn(s[rows][:, cols], 0.05, 3), q[rows][:, cols], atol=1e-6)
    assert torch.allclose(sinkhorn(s + 10.0, 0.05, 3), q, atol=1e-6)  # exp(220) overflows without the max shift


def test_sinkhorn_has_no_gradient_and_runs_in_float32():
    s = unit_scores(6, 3).to(torch.bfloat16).requires_grad_()
    q = sinkhorn(s, 0.05, 3)
    assert q.dtype == torch.float32 and not q.requires_grad


TWO_RANKS = """
import sys, torch, torch.distributed as dist, torch.multiprocessing as mp
sys.path.insert(0, ROOT)
from ssl_bench.harness.components import Batch
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.methods.swav import SwAV, sinkhorn

def run(rank, out):
    dist.init_process_group("gloo", init_method=f"file://{out}/rdv", rank=rank, world_size=2)
    data = torch.load(f"{out}/data.pt")
    mine = slice(rank * 5, (rank + 1) * 5)
    torch.manual_seed(0)
    backbone = ConvNetSmall(ConvNetSmall.Params(width=4, stages=2))
    m = SwAV(SwAV.Params(num_prototypes=5, proj_dim=8, queue_size=10), backbone, num_classes=4).eval()
    m.loss(Batch(views=[v[mine] for v in data["views1"]], labels=torch.zeros(5, dtype=torch.long)))
    m.on_step_end(1, 10)  # fills the queue with the gathered embeddings of both processes
    loss = m.loss(Batch(views=[v[mine] for v in data["views2"]], labels=torch.zeros(5, dtype=torch.long)))
    torch.save({"codes": sinkhorn(data["scores"][mine], 0.05, 3), "loss": loss.detach(), "queue": m.queue},
               f"{out}/{rank}.pt")
    dist.destroy_process_group()

if __name__ == "__main__":
    mp.start_processes(run, args=(sys.argv[1],), nprocs=2, start_method="fork")  # fork: one torch import
"""


@pytest.mark.slow
def test_codes_queue_and_loss_use_the_global_batch_under_two_processes(tmp_path):
    """Two gloo processes, each with half of every batch, compute what one process does on all of it."""
    (tmp_path / "two_ranks.py").write_text(TWO_RANKS.replace("ROOT", repr(str(ROOT))))
    s = unit_scores(10, 4, seed=3)
    data = {"scores": s, "views1": batch(10, seed=1).views, "views2": batch(10, seed=2).views}
    torch.save(data, tmp_path / "data.pt")
    subprocess.run([sys.executable, str(tmp_path / "two_ranks.py"), str(tmp_path)], check=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    got = torch.cat([r["codes"] for r in ranks])
    assert torch.allclose(got, sinkhorn(s, 0.05, 3), atol=1e-6)
    assert not torch.allclose(got[:5], sinkhorn(s[:5], 0.05, 3), atol=1e-3)  # not the local problem
    m = build(queue_size=10).eval()
    m.loss(Batch(views=data["views1"], labels=torch.zeros(10, dtype=torch.long)))
    m.on_step_end(1, 10)
    loss = m.loss(Batch(views=data["views2"], labels=torch.zeros(10, dtype=torch.long)))
    assert all(torch.allclose(r["queue"], m.queue, atol=1e-5) for r in ranks)
    # DDP averages the per-process gradients, so the global loss is the mean of the local ones
    assert (ranks[0]["loss"] + ranks[1]["loss"]).item() / 2 == pytest.approx(loss.item(), rel=1e-4)


@pytest.mark.parametrize(("n_views", "n_coded"), [(2, 2), (4, 2), (3, 1)])
def test_swapped_loss_matches_naive_loop(n_views, n_coded):
    g = torch.Generator().manual_seed(n_views)
    scores = [torch.randn(4, 5, generator=g) for _ in range(n_views)]
    codes = [sinkhorn(s, 0.05, 3) for s in scores[:n_coded]]
    got = swapped_prediction_loss(scores, codes, 0.1).item()
    assert got == pytest.approx(naive_swapped_loss(scores, codes, 0.1), rel=1e-5)


def test_swapped_loss_known_values():
    codes = [torch.full((3, 4), 0.25)] * 2
    assert swapped_prediction_loss([torch.zeros(3, 4)] * 2, codes, 0.1).item() == pytest.approx(math.log(4))
    e = torch.eye(4)[:3]  # confident, correct predictions of one-hot codes: loss -> 0
    assert swapped_prediction_loss([e, e], [e, e], 0.01).item() == pytest.approx(0.0, abs=1e-6)


def test_params_validation():
    with pytest.raises(ValidationError):
        SwAV.Params(views=("swav_multicrop",))
    with pytest.raises(ValidationError):
        SwAV.Params(views=("swav_multicrop", "swav_multicrop"), n_global=3)
    assert SwAV.Params().views == ("swav_multicrop", "swav_multicrop") and SwAV.Params().n_global == 2


def test_prototypes_are_unit_and_renormalised_after_a_step():
    m = build(freeze_prototypes_steps=0)
    assert torch.allclose(m.prototypes.weight.norm(dim=1), torch.ones(5))
    assert m.prototypes.bias is None
    m.loss(batch()).backward()
    with torch.no_grad():
        m.prototypes.weight.sub_(m.prototypes.weight.grad * 10)
    m.on_step_end(1, 10)
    assert torch.allclose(m.prototypes.weight.norm(dim=1), torch.ones(5), atol=1e-6)


def test_prototypes_frozen_for_the_first_steps():
    m = build(freeze_prototypes_steps=2)
    for step, frozen in ((0, True), (1, True), (2, False)):
        m.steps_done.fill_(step)
        m.zero_grad(set_to_none=True)
        m.loss(batch()).backward()
        assert (m.prototypes.weight.grad is None) == frozen
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.backbone.parameters())


def test_multicrop_views_of_two_sizes_take_a_step():
    m = build(views=("swav_multicrop", "swav_multicrop", "swav_multicrop_local", "swav_multicrop_local"))
    x = tiny_images(6).images.float() / 255
    g = torch.Generator().manual_seed(0)
    kinds = (SwAVGlobalCrop, SwAVGlobalCrop, SwAVLocalCrop, SwAVLocalCrop)
    views = [cls(cls.Params())(x, generator=g) for cls in kinds]
    assert [v.shape[-1] for v in views] == [32, 32, 14, 14]
    loss = m.loss(Batch(views=views, labels=torch.zeros(6, dtype=torch.long)))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in m.backbone.parameters())
    # locals only predict: the loss is the mean over 2 coded views of the mean over 3 predicting views
    z = m.embed(views)
    scores = [zv @ m.prototypes.weight.T for zv in z]
    codes = [sinkhorn(s, 0.05, 3) for s in scores[:2]]
    assert loss.item() == pytest.approx(naive_swapped_loss(scores, codes, 0.1), rel=1e-4)


def test_same_size_views_share_one_forward_pass():
    m = build()
    calls = []
    m.backbone.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    m.loss(batch(n=6, sizes=(8, 8, 6, 6, 6)))
    assert calls == [12, 18]


def test_queue_fills_from_its_start_step_and_is_used_once_full(monkeypatch):
    m = build(queue_size=12, queue_start_steps=1)
    seen = []
    real = swav_module.sinkhorn
    monkeypatch.setattr(swav_module, "sinkhorn", lambda s, e, i: seen.append(s.shape[0]) or real(s, e, i))
    for step in range(4):
        seen.clear()
        m.loss(batch(seed=step)).backward()
        m.on_step_end(step + 1, 10)
        assert int(m.queue_rows) == min(12, 6 * step)  # step 0 is before the start: nothing enqueued
        assert seen == ([18, 18] if step == 3 else [6, 6])  # the queue joins the problem once full
    assert m.queue.shape == (2, 12, 8)
    assert torch.allclose(m.queue.norm(dim=2), torch.ones(2, 12), atol=1e-5)


def test_queue_changes_the_codes_and_checkpoints(monkeypatch):
    m = build(queue_size=6)
    m.eval()  # fixed BN statistics, so embeddings of one batch do not depend on what else is in it
    b = batch()
    m.loss(b)
    m.on_step_end(1, 10)
    z = m.embed(b.views)
    assert torch.allclose(m.queue[0], z[0], atol=1e-5) and torch.allclose(m.queue[1], z[1], atol=1e-5)
    captured = []
    real = swav_module.sinkhorn
    monkeypatch.setattr(swav_module, "sinkhorn", lambda s, e, i: captured.append(real(s, e, i)) or captured[-1])
    m.loss(batch(seed=1))
    assert captured[0].shape[0] == 12
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    other = build(queue_size=6)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(other.queue, m.queue) and int(other.queue_rows) == 6 and int(other.steps_done) == 1


def test_a_few_steps_of_the_training_loop_with_multicrop_and_queue(tmp_path):
    m = build(views=("swav_multicrop", "swav_multicrop", "swav_multicrop_local"), queue_size=16,
              freeze_prototypes_steps=1)
    pipelines = {cls.name: cls(cls.Params()) for cls in (SwAVGlobalCrop, SwAVLocalCrop)}
    spec = PretrainSpec(dataset=DatasetRef(name="x"), backbone=ComponentRef(name="convnet_small"),
                        epochs=1, batch_size=8, optimizer=OptimizerSpec(lr=0.05))
    protos = m.prototypes.weight.clone()
    stats = pretrain(m, pipelines, tiny_images(32), spec, seed=0, device=torch.device("cpu"),
                     workdir=tmp_path, progress=False)
    assert stats.steps == 4 and math.isfinite(stats.final_loss)
    assert int(m.steps_done) == 4 and int(m.queue_rows) == 16
    assert not torch.allclose(m.prototypes.weight, protos)  # trained after the frozen first step


# ---- pipelines ----------------------------------------------------------------------------------

def ramp(b: int = 16, size: int = 32) -> torch.Tensor:
    """Images whose red channel is the x coordinate and green the y coordinate, in [0, 1]."""
    xs = torch.linspace(0, 1, size)
    img = torch.stack([xs.expand(size, size), xs.view(-1, 1).expand(size, size), torch.zeros(size, size)])
    return img.expand(b, 3, size, size).clone()


def test_pipeline_shapes_and_size_params():
    x = torch.rand(4, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    assert SwAVGlobalCrop(SwAVGlobalCrop.Params())(x, generator=g).shape == (4, 3, 32, 32)
    assert SwAVLocalCrop(SwAVLocalCrop.Params())(x, generator=g).shape == (4, 3, 14, 14)
    assert SwAVLocalCrop(SwAVLocalCrop.Params())(torch.rand(2, 3, 224, 224), generator=g).shape[-1] == 96
    assert SwAVLocalCrop(SwAVLocalCrop.Params(side_fraction=0.5))(x, generator=g).shape[-1] == 16
    assert SwAVLocalCrop(SwAVLocalCrop.Params(size=10))(x, generator=g).shape[-1] == 10
    with pytest.raises(ValidationError):
        SwAVLocalCrop.Params(crop_scale_min=0.5)  # above crop_scale_max = 0.14


def test_local_crops_are_small_and_global_crops_large():
    plain = dict(jitter_p=0.0, grayscale_p=0.0, flip_p=0.0)
    g = torch.Generator().manual_seed(0)
    spans = {}
    for cls in (SwAVGlobalCrop, SwAVLocalCrop):
        out = cls(cls.Params(**plain))(ramp(64), generator=g)
        spans[cls.name] = (out[:, 0].amax(dim=(1, 2)) - out[:, 0].amin(dim=(1, 2)))  # crop width / image width
    # local: area <= 0.14 and aspect <= 4/3 gives a width of at most sqrt(0.14 * 4/3) ~ 0.43 of the image
    assert spans["swav_multicrop_local"].max() <= 0.45
    assert spans["swav_multicrop"].mean() > 0.6 and spans["swav_multicrop"].min() >= 0.3


@pytest.mark.parametrize("cls", [SwAVGlobalCrop, SwAVLocalCrop])
def test_pipelines_per_sample_and_deterministic(cls):
    aug = cls(cls.Params())
    x = torch.rand(1, 3, 32, 32).repeat(8, 1, 1, 1)
    a = aug(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, aug(x, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(a, aug(x, generator=torch.Generator().manual_seed(2)))
    assert len({tuple(v.flatten()[:20].tolist()) for v in a}) == 8  # every sample got its own parameters
    assert a.min() >= 0 and a.max() <= 1 and a.dtype == torch.float32
