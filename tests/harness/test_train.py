from __future__ import annotations

import pytest
import torch

from ssl_bench.harness.errors import BenchError
from ssl_bench.harness.pipeline.specs import ComponentRef, DatasetRef, OptimizerSpec, PretrainSpec
from ssl_bench.harness.pipeline.train import CHECKPOINT, pretrain
from ssl_bench.harness.testing import build_method, tiny_images
from tests.interrupt import Interrupt, stop_at


def spec(**kw):
    kw = {"epochs": 2, "batch_size": 8, "checkpoint_every_steps": 3, "optimizer": OptimizerSpec(lr=0.05)} | kw
    return PretrainSpec(dataset=DatasetRef(name="x"), backbone=ComponentRef(name="convnet_small"), **kw)


def pipelines(registry, method):
    return {n: registry.get("augmentations", n)(registry.get("augmentations", n).Params()) for n in method.views}


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, bench_registry):
    data = tiny_images(32)
    straight = build_method(bench_registry, "simclr")
    stats = pretrain(straight, pipelines(bench_registry, straight), data, spec(), seed=0,
                     device=torch.device("cpu"), workdir=tmp_path / "a", progress=False)
    assert stats.steps == 8 and len(stats.epoch_losses) == 2

    broken = build_method(bench_registry, "simclr")

    stop_at(broken, 5)
    with pytest.raises(Interrupt):
        pretrain(broken, pipelines(bench_registry, broken), data, spec(), seed=0,
                 device=torch.device("cpu"), workdir=tmp_path / "b", progress=False)
    assert (tmp_path / "b" / CHECKPOINT).exists()  # written at step 3

    resumed = build_method(bench_registry, "simclr", seed=99)  # different init: the checkpoint must win
    stats2 = pretrain(resumed, pipelines(bench_registry, resumed), data, spec(), seed=0,
                      device=torch.device("cpu"), workdir=tmp_path / "b", progress=False)
    assert stats2.resumed_from_step == 3 and stats2.steps == 8
    assert stats2.epoch_losses == pytest.approx(stats.epoch_losses, rel=1e-5)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_diverging_loss_is_a_clear_error(tmp_path, bench_registry):
    method = build_method(bench_registry, "simclr")
    method.loss = lambda batch: torch.tensor(float("nan"), requires_grad=True)
    with pytest.raises(BenchError, match="loss is not finite"):
        pretrain(method, pipelines(bench_registry, method), tiny_images(16), spec(), seed=0,
                 device=torch.device("cpu"), workdir=tmp_path, progress=False)


class NanAt:
    """A loss that turns NaN at one step (counting calls from 1), finite before and after."""

    def __init__(self, method, step):
        self.method, self.step, self.calls = method, step, 0
        self.real = method.loss

    def __call__(self, batch):
        self.calls += 1
        loss = self.real(batch)
        return loss * float("nan") if self.calls == self.step else loss


def test_a_loss_that_turns_nan_at_step_3_fails_at_step_3_before_its_update(tmp_path, bench_registry):
    method = build_method(bench_registry, "simclr")
    method.loss = NanAt(method, 3)
    with pytest.raises(BenchError, match=r"not finite at step 3 of 4 \(epoch 2\): loss = nan; lower the learning"):
        pretrain(method, pipelines(bench_registry, method), tiny_images(16), spec(), seed=0,
                 device=torch.device("cpu"), workdir=tmp_path, progress=False)
    assert method.loss.calls == 3  # stopped there, not at the end of the epoch
    assert all(torch.isfinite(p).all() for p in method.parameters())  # the NaN step never updated the weights


def test_a_loss_not_finite_at_the_first_step_does_not_blame_the_learning_rate(tmp_path, bench_registry):
    method = build_method(bench_registry, "simclr")
    method.loss = lambda batch: torch.tensor(float("inf"), requires_grad=True)
    with pytest.raises(BenchError, match=r"at step 1 of 4 \(epoch 1\): loss = inf; that is before any update") as err:
        pretrain(method, pipelines(bench_registry, method), tiny_images(16), spec(), seed=0,
                 device=torch.device("cpu"), workdir=tmp_path, progress=False)
    assert "learning rate is not the cause" in str(err.value) and "lower the" not in str(err.value)


def test_deferred_checks_on_cuda_still_name_the_first_bad_step(tmp_path, bench_registry, monkeypatch):
    """On CUDA the losses are checked in groups (one sync each); the same CPU run with that policy forced."""
    import ssl_bench.harness.pipeline.train as train

    monkeypatch.setattr(train, "_checks_each_step", lambda device, world: False)
    monkeypatch.setattr(train, "FINITE_CHECK_EVERY", 100)
    method = build_method(bench_registry, "simclr")
    method.loss = NanAt(method, 3)
    with pytest.raises(BenchError, match=r"not finite at step 3 of 4 \(epoch 2\): loss = nan") as err:
        pretrain(method, pipelines(bench_registry, method), tiny_images(16),
                 spec(checkpoint_every_steps=100), seed=0, device=torch.device("cpu"), workdir=tmp_path,
                 progress=False)
    assert method.loss.calls == 4 and "lower the learning rate" in str(err.value)  # found at the epoch's end
    assert not (tmp_path / CHECKPOINT).exists()


def test_a_float_loss_is_a_clear_error(tmp_path, bench_registry):
    method = build_method(bench_registry, "simclr")
    method.loss = lambda batch: 0.5
    with pytest.raises(BenchError, match=r"simclr.loss must return a scalar Tensor .*got float"):
        pretrain(method, pipelines(bench_registry, method), tiny_images(16), spec(), seed=0,
                 device=torch.device("cpu"), workdir=tmp_path, progress=False)
