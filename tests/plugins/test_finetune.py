"""The finetune evaluator on tiny images with a planted colour signal."""

from __future__ import annotations

import math

import pluggy
import pytest
import torch
from torch import Tensor, nn

import ssl_bench.harness.hookspecs
import ssl_bench.harness.plugins
from ssl_bench.harness import EvalTask, ImageSet
from ssl_bench.harness.data import normalize, to_float
from ssl_bench.harness.kit.labels import label_fraction_indices
from ssl_bench.harness.pipeline.optim import lr_factor
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.evaluators import finetune
from ssl_bench.plugins.evaluators.finetune import SCHEDULES, FineTune, batches

NUM_CLASSES = 4
COLOURS = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])
SEEN: list[Tensor] = []
"""Training inputs seen by :class:`Recorder` (module level, so the evaluator's deep copy shares it)."""


pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(nn.Module):
    """Identity that records every batch it sees in train mode."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            SEEN.append(x.detach().clone())
        return x


def tiny_encoder(seed: int = 0, record: bool = False) -> nn.Module:
    """conv-BN-ReLU, global pool, flatten: (B, 3, H, W) -> (B, 8), no ``feature_dim`` attribute."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [Recorder()] if record else []
    layers += [nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
               nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers).eval().requires_grad_(False)  # as the runner hands it over


def colour_images(n: int, seed: int, key: str) -> ImageSet:
    """Balanced labels; each image is its class colour plus uniform noise of +-40 (3 x 16 x 16)."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % NUM_CLASSES)[torch.randperm(n, generator=g)]
    noise = torch.randint(-40, 41, (n, 3, 16, 16), generator=g)
    images = (COLOURS[labels].view(n, 3, 1, 1) + noise).clamp(0, 255).to(torch.uint8)
    return ImageSet(images, labels, tuple(f"c{i}" for i in range(NUM_CLASSES)), key)


def make_task(encoder: nn.Module | None = None, seed: int = 0, n_fit: int = 40, n_target: int = 20) -> EvalTask:
    fit, target = colour_images(n_fit, 1, "fit"), colour_images(n_target, 2, "target")

    def no_features(_: ImageSet) -> Tensor:
        raise AssertionError("finetune runs the network, not cached features")

    return EvalTask(encoder if encoder is not None else tiny_encoder(), fit, target, NUM_CLASSES, no_features,
                    torch.device("cpu"), seed)


FAST = {"epochs": 15, "batch_size": 10}
HP = {"lr": 0.05, "weight_decay": 0.0}


def evaluator(**params: object) -> FineTune:
    return FineTune(FineTune.Params.model_validate(FAST | params))


def test_learns_planted_signal_and_reports_all_metrics() -> None:
    metrics = evaluator().evaluate(make_task(), HP)
    assert set(metrics) == {"top1", "top2", "auc", "mean_class_acc"}
    assert metrics["top1"] >= 90.0
    assert metrics["auc"] >= 95.0
    assert all(isinstance(v, float) and 0.0 <= v <= 100.0 for v in metrics.values())


def test_default_grid_cells_run() -> None:
    task = make_task()
    for lr in FineTune.search_space["lr"]:
        for wd in FineTune.search_space["weight_decay"]:
            metrics = evaluator(epochs=2).evaluate(task, {"lr": lr, "weight_decay": wd})
            assert all(math.isfinite(v) for v in metrics.values())


def test_encoder_is_not_modified() -> None:
    task = make_task()
    before = {k: v.clone() for k, v in task.encoder.state_dict().items()}
    evaluator(epochs=3).evaluate(task, HP)
    after = task.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not task.encoder.training
    assert not any(p.requires_grad for p in task.encoder.parameters())


def test_full_finetune_moves_the_copy_and_frozen_backbone_does_not() -> None:
    task = make_task()
    reference = task.encoder.state_dict()
    for frozen in (False, True):
        model, diverged = evaluator(epochs=3, freeze_backbone=frozen).finetune(task, HP)
        assert not diverged
        copy = model.encoder.state_dict()  # weights and batch-norm running statistics
        same = all(torch.equal(copy[k], reference[k]) for k in reference)
        assert same is frozen
        assert model.head.weight.abs().sum() > 0


def test_frozen_backbone_still_learns_a_probe() -> None:
    metrics = evaluator(freeze_backbone=True).evaluate(make_task(), {"lr": 0.1, "weight_decay": 0.0})
    assert metrics["top1"] >= 75.0


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0])
def test_trains_on_the_nested_label_fraction(fraction: float) -> None:
    task = make_task(tiny_encoder(record=True), seed=3)
    SEEN.clear()
    evaluator(epochs=2, augment=False, label_fraction=fraction).evaluate(task, HP)
    seen = torch.cat(SEEN)
    want = label_fraction_indices(task.fit.labels, fraction, seed=3)
    assert len(seen) == 2 * len(want)  # every labelled row once per epoch, nothing else
    fit = normalize(to_float(task.fit.images))
    rows = {int((fit - x).abs().flatten(1).sum(1).argmin()) for x in seen}
    assert rows == set(want.tolist())
    smaller = label_fraction_indices(task.fit.labels, fraction / 2, seed=3)
    assert set(smaller.tolist()) <= rows  # nested across fractions


def test_same_seed_same_result_other_seed_differs() -> None:
    ev = evaluator(epochs=3, dropout=0.3)
    m1, m2 = ev.finetune(make_task(seed=5), HP)[0], ev.finetune(make_task(seed=5), HP)[0]
    m3 = ev.finetune(make_task(seed=6), HP)[0]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert not torch.equal(m1.head.weight, m3.head.weight)
    assert ev.evaluate(make_task(seed=5), HP) == ev.evaluate(make_task(seed=5), HP)


def test_global_rng_state_is_restored() -> None:
    task = make_task()  # seeds the encoder's init: build it first
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    evaluator(epochs=1).evaluate(task, HP)
    assert torch.equal(torch.rand(3), expected)


def test_runs_under_inference_mode() -> None:
    with torch.inference_mode():
        metrics = evaluator().evaluate(make_task(), HP)
    assert metrics["top1"] >= 90.0


def test_convnet_small_backbone() -> None:
    torch.manual_seed(0)
    encoder = ConvNetSmall(ConvNetSmall.Params(width=4, stages=2)).eval().requires_grad_(False)
    metrics = evaluator(epochs=10, schedule="cosine").evaluate(make_task(encoder), HP)
    assert metrics["top1"] >= 75.0


def test_divergence_gives_nan_metrics() -> None:
    metrics = evaluator(epochs=2).evaluate(make_task(), {"lr": 1e30, "weight_decay": 0.0})
    assert metrics and all(math.isnan(v) for v in metrics.values())


def test_schedules() -> None:
    spe, total = 5, 100  # steps per epoch, 20 epochs
    exp = [lr_factor(SCHEDULES["exponential"], s, total, spe) for s in (0, 49, 50, 99)]
    assert exp == pytest.approx([1.0, 1.0, 0.9, 0.9])  # x0.9 every 10 epochs
    cos = [lr_factor(SCHEDULES["cosine"], s, total, spe) for s in (0, 50, 99)]
    assert cos[0] == pytest.approx(1.0) and cos[1] == pytest.approx(0.5) and cos[2] < 0.01


def test_batches_never_leave_a_single_row() -> None:
    assert [len(b) for b in batches(torch.arange(21), 10)] == [10, 11]
    assert [len(b) for b in batches(torch.arange(22), 10)] == [10, 10, 2]
    assert [len(b) for b in batches(torch.arange(1), 10)] == [1]


def test_rejects_unknown_hparams_and_bad_params() -> None:
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        evaluator().evaluate(make_task(), {"k": 3})
    for bad in ({"label_fraction": 0.0}, {"label_fraction": 1.5}, {"dropout": 1.0}, {"schedule": "step"},
                {"epochs": 0}, {"unknown": 1}):
        with pytest.raises(ValueError):
            FineTune.Params.model_validate(bad)


def test_registration() -> None:
    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(ssl_bench.harness.hookspecs)
    pm.register(finetune)
    registry = ssl_bench.harness.plugins.collect(pm)
    assert registry.names("evaluators") == ["finetune"]
    assert registry.get("evaluators", "finetune") is FineTune
    assert "ssl_bench.plugins.evaluators.finetune" in ssl_bench.harness.plugins.DEFAULT_PLUGINS


def test_freeze_stages_keeps_the_first_stages_and_trains_the_rest() -> None:
    torch.manual_seed(0)
    encoder = ConvNetSmall(ConvNetSmall.Params(width=4, stages=3)).eval().requires_grad_(False)
    task = make_task(encoder)
    model, diverged = evaluator(epochs=2, freeze_stages=2).finetune(task, HP)
    assert not diverged
    before, after = encoder.stage_modules(), model.encoder.stage_modules()
    for k, (old, new) in enumerate(zip(before, after)):
        same = all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))
        assert same is (k < 2), f"stage {k + 1}"


def test_freeze_stages_needs_a_backbone() -> None:
    with pytest.raises(ValueError, match="freeze_stages needs a Backbone"):
        evaluator(epochs=1, freeze_stages=1).finetune(make_task(), HP)
