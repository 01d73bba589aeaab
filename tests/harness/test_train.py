from __future__ import annotations

import pytest
import torch

from ssl_bench.harness.errors import BenchError
from ssl_bench.harness.pipeline.specs import ComponentRef, DatasetRef, OptimizerSpec, PretrainSpec
from ssl_bench.harness.pipeline.train import CHECKPOINT, pretrain
from ssl_bench.harness.testing import build_method, tiny_images


class Interrupt(Exception):
    pass


def spec(**kw):
    return PretrainSpec(dataset=DatasetRef(name="x"), backbone=ComponentRef(name="convnet_small"),
                        epochs=2, batch_size=8, checkpoint_every_steps=3, optimizer=OptimizerSpec(lr=0.05), **kw)


def pipelines(registry, method):
    return {n: registry.get("augmentations", n)(registry.get("augmentations", n).Params()) for n in method.views}


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, bench_registry):
    data = tiny_images(32)
    straight = build_method(bench_registry, "simclr")
    stats = pretrain(straight, pipelines(bench_registry, straight), data, spec(), seed=0,
                     device=torch.device("cpu"), workdir=tmp_path / "a", progress=False)
    assert stats.steps == 8 and len(stats.epoch_losses) == 2

    broken = build_method(bench_registry, "simclr")

    def stop_at_step_5(step, total):
        if step == 5:
            raise Interrupt

    broken.on_step_end = stop_at_step_5
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
