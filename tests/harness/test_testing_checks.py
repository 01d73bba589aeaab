"""The shipped checks catch the bugs a first plugin has: each deliberately broken component fails its check.

The five bugs the one-step checks missed (issue 17): a loss that turns NaN at step 3, a tensor created on
the CPU inside ``loss`` (visible on CUDA only), an invariance-only loss that collapses, an evaluator
returning fractions instead of percent, and one that ignores its features and returns 100. Every
failure names the component and says what to fix; the built-in components still pass (see
tests/test_conformance.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from ssl_bench.harness import (
    Batch,
    DataContext,
    Dataset,
    EvalTask,
    Evaluator,
    ImageSet,
    Method,
    MethodParams,
    hookimpl,
)
from ssl_bench.harness.kit.losses import nt_xent
from ssl_bench.harness.kit.metrics import classification_metrics
from ssl_bench.harness.plugins import collect, make_plugin_manager
from ssl_bench.harness.testing import check_dataset, check_evaluator, check_method, tiny_images

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="a CPU tensor inside loss only shows on CUDA")


class Contrastive(Method):
    """A correct two-view contrastive method (NT-Xent on the backbone's features), the base of the bugs."""

    name = "t_contrastive"

    class Params(MethodParams):
        views: tuple[str, str] = ("simclr", "simclr")
        temperature: float = 0.5

    def features(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        z1, z2 = (self.backbone(v) for v in batch.views)
        return z1, z2

    def loss(self, batch: Batch) -> torch.Tensor:
        return nt_xent(*self.features(batch), self.params.temperature)


class NanAtStep3(Contrastive):
    """Finite at steps 1 and 2, NaN at step 3 (counted by ``on_step_end``)."""

    name = "t_nan_at_step_3"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.done = 0

    def loss(self, batch):
        loss = super().loss(batch)
        return loss * float("nan") if self.done == 2 else loss

    def on_step_end(self, step, total_steps):
        self.done = step


class CpuTensorInLoss(Contrastive):
    """Builds the targets of a cross-entropy on the CPU: ``torch.arange(n)`` without ``device=``."""

    name = "t_cpu_tensor"

    def loss(self, batch):
        z1, z2 = (F.normalize(z, dim=1) for z in self.features(batch))
        return F.cross_entropy(z1 @ z2.T / 0.5, torch.arange(len(z1)))


class CpuLoss(Contrastive):
    """Computes its loss on the CPU and returns it there."""

    name = "t_cpu_loss"

    def loss(self, batch):
        return super().loss(batch).cpu()


class InvarianceOnly(Contrastive):
    """Pulls the two views together and nothing keeps images apart: a constant minimises it."""

    name = "t_invariance_only"

    def loss(self, batch):
        z1, z2 = (F.normalize(z, dim=1) for z in self.features(batch))
        return -(z1 * z2).sum(dim=1).mean()


class FloatLoss(Contrastive):
    """Returns ``loss.item()``."""

    name = "t_float_loss"

    def loss(self, batch):
        return super().loss(batch).item()


class Centroid(Evaluator):
    """A correct nearest-centroid evaluator on cached features."""

    name = "t_centroid"

    def scores(self, task: EvalTask) -> torch.Tensor:
        fit, target = task.features(task.fit).float(), task.features(task.target).float()
        centroids = torch.stack([fit[task.fit.labels == c].mean(0) for c in range(task.num_classes)])
        return -torch.cdist(target, centroids)

    def evaluate(self, task, hparams):
        return classification_metrics(self.scores(task).cpu(), task.target.labels, task.num_classes)


class Fractions(Centroid):
    """Right answers, as fractions of one."""

    name = "t_fractions"

    def evaluate(self, task, hparams):
        return {k: v / 100 for k, v in super().evaluate(task, hparams).items()}


class IgnoresFeatures(Evaluator):
    """Never looks at the features: 100 on the one-hot features the old check used."""

    name = "t_ignores_features"

    def evaluate(self, task, hparams):
        return {"top1": 100.0}


class ScoresFit(Centroid):
    """Scores the images it was fitted on."""

    name = "t_scores_fit"

    def evaluate(self, task, hparams):
        fit = task.features(task.fit).float()
        centroids = torch.stack([fit[task.fit.labels == c].mean(0) for c in range(task.num_classes)])
        return classification_metrics(-torch.cdist(fit, centroids).cpu(), task.fit.labels, task.num_classes)


class Squares(Dataset):
    """A small dataset that gets every rule right."""

    name = "t_squares"

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        data = tiny_images(8, size=8, seed=0 if split == "train" else 1)
        return ImageSet(data.images, data.labels, data.classes, f"t_squares:{split}")


class OneKey(Squares):
    """Gives every split the same key."""

    name = "t_one_key"

    def load(self, split, ctx):
        data = super().load(split, ctx)
        return ImageSet(data.images, data.labels, data.classes, "t_one_key")


class Grey(Squares):
    """Returns one channel."""

    name = "t_grey"

    def load(self, split, ctx):
        data = super().load(split, ctx)
        return ImageSet(data.images[:, :1].contiguous(), data.labels, data.classes, data.key)


class Broken:
    @hookimpl
    def bench_register_methods(self, register):
        for cls in (Contrastive, NanAtStep3, CpuTensorInLoss, CpuLoss, InvarianceOnly, FloatLoss):
            register(cls)

    @hookimpl
    def bench_register_evaluators(self, register):
        for cls in (Centroid, Fractions, IgnoresFeatures, ScoresFit):
            register(cls)

    @hookimpl
    def bench_register_datasets(self, register):
        for cls in (Squares, OneKey, Grey):
            register(cls)


@pytest.fixture(scope="module")
def registry():
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(Broken(), name="test-broken")
    return collect(pm)


def test_a_correct_method_and_evaluator_pass(registry, one_thread):
    check_method(registry, "t_contrastive", device="cpu")
    check_evaluator(registry, "t_centroid", device="cpu")


def test_a_loss_that_turns_nan_at_step_3_is_caught_at_step_3(registry, one_thread):
    with pytest.raises(AssertionError, match=r"t_nan_at_step_3: loss is not finite at step 3 of 20 \(nan\); guard"):
        check_method(registry, "t_nan_at_step_3", device="cpu")


@cuda
@pytest.mark.parametrize("name, message", [
    ("t_cpu_tensor", r"t_cpu_tensor: loss mixes devices at step 1 .*torch.arange\(n, device=z.device\)"),
    ("t_cpu_loss", r"t_cpu_loss: loss is on cpu but the views are on cuda"),
])
def test_a_tensor_made_on_the_cpu_inside_loss_is_caught_on_cuda(registry, name, message):
    with pytest.raises(AssertionError, match=message):
        check_method(registry, name, device="cuda")


def test_an_invariance_only_loss_is_caught_collapsing(registry, one_thread):
    with pytest.raises(AssertionError, match=r"t_invariance_only: the backbone's features collapse: .* fell from"):
        check_method(registry, "t_invariance_only", device="cpu")
    check_method(registry, "t_invariance_only", device="cpu", collapse_steps=0)  # the other checks pass


def test_a_float_loss_is_a_clear_failure_not_an_attribute_error(registry):
    with pytest.raises(AssertionError, match=r"t_float_loss: loss returned a float, not a Tensor; return the scalar"):
        check_method(registry, "t_float_loss", device="cpu")


def test_check_method_takes_params_and_names_bad_ones(registry, one_thread):
    check_method(registry, "t_contrastive", params={"temperature": 0.2}, steps=5, collapse_steps=0, device="cpu")
    with pytest.raises(AssertionError, match=r"t_contrastive: params \{'temprature': 0.2\} do not validate"):
        check_method(registry, "t_contrastive", params={"temprature": 0.2})


def test_fractions_instead_of_percent_are_caught(registry):
    with pytest.raises(AssertionError, match=r"t_fractions: metrics look like fractions .* report percent"):
        check_evaluator(registry, "t_fractions", device="cpu")


@pytest.mark.parametrize("name", ["t_ignores_features", "t_scores_fit"])
def test_an_evaluator_that_ignores_its_features_is_caught(registry, name):
    with pytest.raises(AssertionError, match=rf"{name}: top1 = 100 where the features allow about 75%"):
        check_evaluator(registry, name, device="cpu")


def test_check_dataset_passes_a_correct_dataset_and_the_built_in_ones(registry, tmp_path: Path):
    ctx = DataContext(root=tmp_path, cache_dir=tmp_path / "cache")
    check_dataset(registry, "t_squares", ctx=ctx)
    check_dataset(registry, "shapes", params={"n_train": 16, "n_test": 8}, ctx=ctx)


@pytest.mark.parametrize("name, message", [
    ("t_one_key", r"t_one_key: splits share a key"),
    ("t_grey", r"t_grey: load\('train'\): images have 1 channels; .* convert to RGB"),
])
def test_check_dataset_names_what_is_wrong(registry, tmp_path: Path, name, message):
    with pytest.raises(AssertionError, match=message):
        check_dataset(registry, name, ctx=DataContext(root=tmp_path, cache_dir=tmp_path / "cache"))
