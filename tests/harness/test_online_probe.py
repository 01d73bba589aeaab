"""The online linear probe trained beside pretraining: it learns, and it changes nothing of the encoder's training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssl_bench.harness.errors import BenchError
from ssl_bench.harness.pipeline.checkpoint import REQUIRED_KEYS
from ssl_bench.harness.pipeline.online_probe import HEAD_FILE, OnlineProbe, OnlineProbeSpec, read_head
from ssl_bench.harness.pipeline.optim import lr_factor
from ssl_bench.harness.pipeline.specs import ComponentRef, DatasetRef, OptimizerSpec, PretrainSpec, ScheduleSpec
from ssl_bench.harness.pipeline.train import CHECKPOINT, pretrain
from ssl_bench.harness.testing import build_method, tiny_images
from tests.interrupt import Interrupt, stop_at

CPU = torch.device("cpu")


def spec(**kw):
    kw = {"epochs": 2, "batch_size": 8, "checkpoint_every_steps": 3, "optimizer": OptimizerSpec(lr=0.05),
          "precision": "fp32"} | kw
    return PretrainSpec(dataset=DatasetRef(name="x"), backbone=ComponentRef(name="convnet_small"), **kw)


def pipelines(registry, method):
    return {n: registry.get("augmentations", n)(registry.get("augmentations", n).Params()) for n in method.views}


def probe_for(method, seed=0, lr=0.1):
    return OnlineProbe(OnlineProbeSpec(lr=lr), method.backbone.feature_dim, 4, seed=seed, device=CPU)


def train(registry, method, workdir, probe=None, **kw):
    return pretrain(method, pipelines(registry, method), tiny_images(32), spec(**kw), seed=0, device=CPU,
                    workdir=workdir, progress=False, probe=probe)


def test_the_encoder_trains_bit_for_bit_the_same_with_and_without_the_probe(tmp_path, bench_registry, one_thread):
    plain = build_method(bench_registry, "simclr")
    keys = set(plain.state_dict())
    stats = train(bench_registry, plain, tmp_path / "a")
    rng_plain = torch.get_rng_state()
    probed = build_method(bench_registry, "simclr")
    probe = probe_for(probed)
    start = probe.head.weight.detach().clone()
    stats2 = train(bench_registry, probed, tmp_path / "b", probe)
    assert torch.equal(torch.get_rng_state(), rng_plain)  # the probe drew nothing from the global RNG
    assert stats2.steps == stats.steps == 8 and stats2.epoch_losses == stats.epoch_losses
    assert set(probed.state_dict()) == keys  # the head is not part of the method
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, probed.state_dict()[name]), name
    assert not probe.problem and not torch.equal(probe.head.weight.detach(), start)  # the head did train
    assert not probed.backbone._forward_hooks  # the hook is gone after the run


@pytest.mark.parametrize("schedule", ["method", "constant"])
def test_the_heads_lr_follows_the_methods_schedule_unless_constant(tmp_path, bench_registry, one_thread, schedule):
    method = build_method(bench_registry, "simclr")
    probe = OnlineProbe(OnlineProbeSpec(lr=0.1, schedule=schedule), method.backbone.feature_dim, 4, seed=0,
                        device=CPU)
    seen: list[float] = []
    step = probe.optimizer.step
    probe.optimizer.step = lambda: (seen.append(probe.optimizer.param_groups[0]["lr"]), step())[1]  # type: ignore
    train(bench_registry, method, tmp_path, probe, schedule=ScheduleSpec(name="cosine"))
    factors = [lr_factor(ScheduleSpec(name="cosine"), s, 8, 4) for s in range(8)]
    expected = [0.1 * f for f in factors] if schedule == "method" else [0.1] * 8
    assert seen == pytest.approx(expected) and (schedule == "constant" or seen[-1] < 0.02)


def test_an_unknown_schedule_is_refused():
    class Params:
        lr = 0.1
        schedule = "linear"

    with pytest.raises(BenchError, match="schedule must be one of method, constant, got 'linear'"):
        OnlineProbeSpec.of(Params())


def test_the_head_is_initialised_from_its_own_generator():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = OnlineProbe(OnlineProbeSpec(lr=0.1), 16, 3, seed=0, device=CPU)
    assert torch.equal(torch.get_rng_state(), before)
    b = OnlineProbe(OnlineProbeSpec(lr=0.1), 16, 3, seed=0, device=CPU)
    c = OnlineProbe(OnlineProbeSpec(lr=0.1), 16, 3, seed=1, device=CPU)
    assert torch.equal(a.head.weight, b.head.weight) and not torch.equal(a.head.weight, c.head.weight)
    assert a.head.weight.abs().max() <= 1 / 16**0.5


def coded_images(n: int, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 3, 8, 8) whose mean colour codes their class, and the classes (n,)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    images = torch.rand(n, 3, 8, 8, generator=g) * 0.2
    images[:, 0] += labels.view(-1, 1, 1).float() / classes
    return images, labels


def test_the_head_learns_the_labels_from_the_first_view_features():
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 8))
    probe = OnlineProbe(OnlineProbeSpec(lr=0.5), 8, 4, seed=0, device=CPU)
    probe.attach(backbone)
    for step in range(300):
        x, y = coded_images(32, seed=step)
        probe.expect(x)
        with torch.no_grad():
            backbone(x)  # the method's forward pass: the hook keeps its features
        probe.step(y)
    x, y = coded_images(256, seed=999)
    with torch.no_grad():
        accuracy = (probe.head(backbone(x)).argmax(1) == y).float().mean()
    assert accuracy > 0.9
    assert all(p.grad is None for p in backbone.parameters())  # nothing flowed back to the encoder


def test_the_hook_keeps_the_first_views_rows_of_a_concatenated_call_and_refuses_tiles(tmp_path):
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    probe = OnlineProbe(OnlineProbeSpec(lr=0.1), 5, 4, seed=0, device=CPU)
    probe.attach(backbone)
    v1, v2 = torch.rand(6, 3, 8, 8), torch.rand(6, 3, 8, 8)
    probe.expect(v1)
    backbone(torch.cat([v1, v2]))  # forward_by_size: both views in one call
    backbone(v2)  # a later call of the step is not read
    assert torch.allclose(probe._features, backbone(v1).detach(), atol=1e-5)
    probe.step(torch.arange(6) % 4)
    tiles = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    refused = OnlineProbe(OnlineProbeSpec(lr=0.1), 5, 4, seed=0, device=CPU)
    refused.attach(tiles)
    refused.expect(v1)
    tiles(torch.rand(24, 3, 4, 4))  # Jigsaw-like tiles: not the first view's images
    refused.step(torch.arange(6) % 4)
    assert "never ran its backbone" in refused.problem and refused.head_state() is None
    assert refused.save(tmp_path) is None and not (tmp_path / HEAD_FILE).exists()


def test_bf16_features_train_a_float32_head():
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 8))
    probe = OnlineProbe(OnlineProbeSpec(lr=0.1), 8, 4, seed=0, device=CPU)
    probe.attach(backbone)
    x, y = coded_images(16)
    probe.expect(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        backbone(x)
    assert probe._features.dtype == torch.bfloat16
    probe.step(y)
    assert probe.head.weight.dtype == torch.float32 and torch.isfinite(probe.head.weight).all()


def test_unlabelled_rows_are_ignored():
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 8))
    probe = OnlineProbe(OnlineProbeSpec(lr=0.1), 8, 4, seed=0, device=CPU)
    start = probe.head.weight.detach().clone()
    probe.attach(backbone)
    x, _ = coded_images(16)
    probe.expect(x)
    backbone(x)
    probe.step(torch.full((16,), -1))  # no labels at all: no update, and nothing turns NaN
    assert torch.equal(probe.head.weight.detach(), start)


def test_a_resumed_run_trains_the_same_head_as_an_uninterrupted_one(tmp_path, bench_registry, one_thread):
    straight = build_method(bench_registry, "simclr")
    probe = probe_for(straight)
    train(bench_registry, straight, tmp_path / "a", probe)

    broken = build_method(bench_registry, "simclr")

    stop_at(broken, 5)
    with pytest.raises(Interrupt):
        train(bench_registry, broken, tmp_path / "b", probe_for(broken))
    saved = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)
    assert set(saved) == {*REQUIRED_KEYS, "online_probe"}  # written at step 3, with the head and its optimizer

    resumed = build_method(bench_registry, "simclr", seed=99)
    probe2 = probe_for(resumed, seed=7)  # another init: the checkpoint must win
    stats = train(bench_registry, resumed, tmp_path / "b", probe2)
    assert stats.resumed_from_step == 3 and stats.steps == 8
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    for name, tensor in probe.head.state_dict().items():
        assert torch.equal(tensor, probe2.head.state_dict()[name]), name
    assert probe2.optimizer.state_dict()["state"]  # its momentum buffers came back too


def test_a_checkpoint_without_the_probe_is_not_resumed_by_a_run_with_one(tmp_path, bench_registry, one_thread):
    broken = build_method(bench_registry, "simclr")

    stop_at(broken, 4)
    with pytest.raises(Interrupt):
        train(bench_registry, broken, tmp_path / "b")
    assert set(torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)) == set(REQUIRED_KEYS)
    probed = build_method(bench_registry, "simclr")
    stats = train(bench_registry, probed, tmp_path / "b", probe_for(probed))
    assert stats.resumed_from_step == 0 and (tmp_path / "b" / (CHECKPOINT + ".discarded")).exists()


def test_the_saved_head_reads_back_and_a_foreign_file_is_refused(tmp_path):
    probe = OnlineProbe(OnlineProbeSpec(lr=0.1), 6, 3, seed=0, device=CPU)
    path = probe.save(tmp_path)
    assert path == tmp_path / HEAD_FILE
    head = read_head(path)
    assert torch.equal(head["weight"], probe.head.weight.detach()) and head["bias"].shape == (3,)
    assert read_head(tmp_path / "absent.pt") is None
    torch.save({"weight": torch.zeros(3, 6)}, tmp_path / "bad.pt")
    with pytest.raises(BenchError, match="not an online head"):
        read_head(tmp_path / "bad.pt")
