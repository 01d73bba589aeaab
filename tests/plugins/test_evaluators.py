"""The knn and linear evaluators on hand-built tasks with planted features."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pluggy
import pytest
import torch
from torch import Tensor, nn

import ssl_bench.harness.hookspecs
import ssl_bench.harness.plugins
from ssl_bench.harness import EvalTask, Evaluator, ImageSet
from ssl_bench.plugins.evaluators import knn, linear
from ssl_bench.plugins.evaluators.knn import KNN, knn_scores
from ssl_bench.plugins.evaluators.linear import Linear, train_linear

pytestmark = pytest.mark.usefixtures("one_thread")


class NoEncoder(nn.Module):
    """An encoder that fails if anyone runs it: evaluators must use the cached features."""

    def forward(self, x: Tensor) -> Tensor:
        raise AssertionError("evaluators must read task.features, not run the encoder")


def balanced_labels(n: int, num_classes: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.arange(n).remainder(num_classes)[torch.randperm(n, generator=g)]


def image_set(labels: Tensor, num_classes: int, key: str) -> ImageSet:
    images = torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8)
    return ImageSet(images, labels, tuple(f"c{i}" for i in range(num_classes)), key)


def make_task(fit_x: Tensor, fit_y: Tensor, target_x: Tensor, target_y: Tensor, num_classes: int,
              seed: int = 0) -> EvalTask:
    fit, target = image_set(fit_y, num_classes, "fit"), image_set(target_y, num_classes, "target")
    feats = {"fit": fit_x, "target": target_x}
    return EvalTask(NoEncoder(), fit, target, num_classes, lambda s: feats[s.key], torch.device("cpu"), seed)


def planted_task(num_classes: int, noise: float, *, dim: int = 32, n_fit: int = 500, n_target: int = 200,
                 seed: int = 0) -> EvalTask:
    """Features = one-hot(label) in the first ``num_classes`` dims + Gaussian noise of std ``noise``."""
    g = torch.Generator().manual_seed(seed)

    def feats(y: Tensor) -> Tensor:
        x = torch.randn(len(y), dim, generator=g) * noise
        x[torch.arange(len(y)), y] += 1.0
        return x

    fit_y, target_y = balanced_labels(n_fit, num_classes, seed), balanced_labels(n_target, num_classes, seed + 1)
    return make_task(feats(fit_y), fit_y, feats(target_y), target_y, num_classes, seed)


def constant_task(num_classes: int = 10) -> EvalTask:
    fit_y, target_y = balanced_labels(400, num_classes, 0), balanced_labels(200, num_classes, 1)
    return make_task(torch.ones(400, 16), fit_y, torch.ones(200, 16), target_y, num_classes)


EVALUATORS: list[tuple[type[Evaluator], Mapping[str, float]]] = [
    (KNN, {}),
    (Linear, {"lr": 0.1, "weight_decay": 0.0}),
]


def run(cls: type[Evaluator], task: EvalTask, hparams: Mapping[str, float], **params: float) -> dict[str, float]:
    return cls(cls.Params(**params)).evaluate(task, hparams)


@pytest.mark.parametrize(("cls", "hparams"), EVALUATORS)
def test_planted_perfect_encoder_scores_100(cls: type[Evaluator], hparams: Mapping[str, float]) -> None:
    metrics = run(cls, planted_task(10, noise=0.05), hparams)
    assert metrics["top1"] == pytest.approx(100.0)
    assert metrics["top5"] == pytest.approx(100.0)


@pytest.mark.parametrize(("cls", "hparams"), EVALUATORS)
def test_constant_encoder_scores_chance(cls: type[Evaluator], hparams: Mapping[str, float]) -> None:
    metrics = run(cls, constant_task(10), hparams)
    assert metrics["top1"] == pytest.approx(10.0, abs=5.0)
    assert metrics["top5"] == pytest.approx(50.0, abs=10.0)


@pytest.mark.parametrize(("cls", "hparams"), EVALUATORS)
def test_noisy_features_score_between_chance_and_perfect(cls: type[Evaluator], hparams: Mapping[str, float]) -> None:
    top1 = run(cls, planted_task(10, noise=0.6), hparams)["top1"]
    assert 20.0 < top1 < 99.0


@pytest.mark.parametrize(("cls", "hparams"), EVALUATORS)
def test_same_seed_same_metrics(cls: type[Evaluator], hparams: Mapping[str, float]) -> None:
    first = run(cls, planted_task(10, noise=0.6, seed=3), hparams)
    second = run(cls, planted_task(10, noise=0.6, seed=3), hparams)
    assert first == second


def test_linear_training_is_seeded() -> None:
    task = planted_task(10, noise=0.6)
    x, y = task.features(task.fit), task.fit.labels

    def weights(seed: int) -> Tensor:
        model = train_linear(x, y, num_classes=10, lr=0.1, weight_decay=1e-4, epochs=3, batch_size=64,
                             momentum=0.9, generator=torch.Generator().manual_seed(seed))
        return model.weight.detach()

    assert torch.equal(weights(0), weights(0))
    assert not torch.equal(weights(0), weights(1))


def reference_linear(x: Tensor, y: Tensor, *, num_classes: int, lr: float, weight_decay: float, epochs: int,
                     batch_size: int, seed: int) -> nn.Linear:
    """nn.Linear + autograd + torch.optim.SGD with the same shuffling and cosine schedule."""
    model = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    opt = torch.optim.SGD([{"params": [model.weight], "weight_decay": weight_decay},
                           {"params": [model.bias], "weight_decay": 0.0}], lr=lr, momentum=0.9, nesterov=False)
    g = torch.Generator().manual_seed(seed)
    total, step = epochs * math.ceil(len(x) / batch_size), 0
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            step += 1
    return model


@pytest.mark.parametrize(("weight_decay", "batch_size"), [(0.0, 64), (1e-2, 50), (1e-3, 1000)])
def test_linear_training_matches_autograd_sgd(weight_decay: float, batch_size: int) -> None:
    task = planted_task(5, noise=0.8, n_fit=230, dim=12)
    x, y = task.features(task.fit), task.fit.labels
    got = train_linear(x, y, num_classes=5, lr=0.5, weight_decay=weight_decay, epochs=4, batch_size=batch_size,
                       momentum=0.9, generator=torch.Generator().manual_seed(7))
    want = reference_linear(x, y, num_classes=5, lr=0.5, weight_decay=weight_decay, epochs=4,
                            batch_size=batch_size, seed=7)
    assert got.weight.abs().max() > 0.1  # it moved
    torch.testing.assert_close(got.weight, want.weight.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.bias, want.bias.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("cls", "hparams"), EVALUATORS)
def test_evaluators_run_under_inference_mode(cls: type[Evaluator], hparams: Mapping[str, float]) -> None:
    with torch.inference_mode():
        metrics = run(cls, planted_task(10, noise=0.05), hparams)
    assert metrics["top1"] == pytest.approx(100.0)


@pytest.mark.parametrize(("cls", "hparams"), EVALUATORS)
@pytest.mark.parametrize(("num_classes", "keys"), [(2, {"top1", "auc", "mean_class_acc"}),
                                                     (4, {"top1", "top2", "auc", "mean_class_acc"}),
                                                     (10, {"top1", "top2", "top5", "auc", "mean_class_acc"})])
def test_metric_keys(cls: type[Evaluator], hparams: Mapping[str, float], num_classes: int, keys: set[str]) -> None:
    metrics = run(cls, planted_task(num_classes, noise=0.6, n_fit=100, n_target=40), hparams)
    assert set(metrics) == keys
    assert all(isinstance(v, float) and 0.0 <= v <= 100.0 for v in metrics.values())


def naive_knn(fit_x: Tensor, fit_y: Tensor, target_x: Tensor, num_classes: int, k: int, t: float) -> Tensor:
    def unit(v: list[float]) -> list[float]:
        norm = math.sqrt(sum(a * a for a in v))
        return [a / norm for a in v]

    fit = [unit(r) for r in fit_x.tolist()]
    out = []
    for row in target_x.tolist():
        q = unit(row)
        sims = sorted(((sum(a * b for a, b in zip(q, f)), int(c)) for f, c in zip(fit, fit_y.tolist())), reverse=True)
        votes = [0.0] * num_classes
        for s, c in sims[:k]:
            votes[c] += math.exp(s / t)
        out.append(votes)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize(("k", "chunk_size"), [(1, 3), (5, 2), (7, 1024), (100, 4)])
def test_knn_scores_match_naive_loop(k: int, chunk_size: int) -> None:
    g = torch.Generator().manual_seed(k)
    fit_x, target_x = torch.randn(30, 5, generator=g), torch.randn(7, 5, generator=g)
    fit_y = torch.randint(0, 4, (30,), generator=g)
    got = knn_scores(fit_x, fit_y, target_x, num_classes=4, k=k, temperature=0.1, chunk_size=chunk_size)
    want = naive_knn(fit_x, fit_y, target_x, 4, min(k, 30), 0.1)
    assert got.shape == (7, 4)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)
    assert torch.equal(got.argmax(1), want.argmax(1))


def neighbours_task() -> EvalTask:
    """One target of class 0 whose single nearest neighbour is class 0, next ten are class 1."""
    fit_x = torch.cat([torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.1]]).repeat(10, 1)])
    fit_y = torch.tensor([0] + [1] * 10)
    return make_task(fit_x, fit_y, torch.tensor([[1.0, 0.0]]), torch.tensor([0]), 2)


def test_knn_hparams_override_params() -> None:
    task = neighbours_task()
    assert run(KNN, task, {})["top1"] == 0.0  # k=20 (capped at 11): ten class-1 votes win
    assert run(KNN, task, {"k": 1})["top1"] == 100.0
    assert run(KNN, task, {"k": 1.0})["top1"] == 100.0  # Optuna may hand floats
    assert run(KNN, task, {}, k=1)["top1"] == 100.0
    assert run(KNN, task, {"k": 11, "temperature": 1e-3})["top1"] == 100.0  # sharp votes: nearest dominates
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        run(KNN, task, {"lr": 0.1})


def test_linear_rejects_unknown_hparams() -> None:
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        run(Linear, planted_task(4, noise=0.1, n_fit=40, n_target=8), {"k": 5})


def test_linear_default_grid_runs() -> None:
    task = planted_task(4, noise=0.3, n_fit=80, n_target=40)
    for lr in Linear.search_space["lr"]:
        for wd in Linear.search_space["weight_decay"]:
            metrics = run(Linear, task, {"lr": lr, "weight_decay": wd}, epochs=10)
            assert all(math.isfinite(v) for v in metrics.values())
            assert metrics["top1"] > 50.0


def test_params_validate_bounds() -> None:
    with pytest.raises(ValueError):
        KNN.Params(k=0)
    with pytest.raises(ValueError):
        KNN.Params(temperature=0.0)
    with pytest.raises(ValueError):
        Linear.Params(epochs=0)
    with pytest.raises(ValueError):
        Linear.Params(unknown=1)


def test_registration() -> None:
    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(ssl_bench.harness.hookspecs)
    pm.register(knn)
    pm.register(linear)
    registry = ssl_bench.harness.plugins.collect(pm)
    assert registry.names("evaluators") == ["knn", "linear"]
    assert registry.get("evaluators", "knn") is KNN
    assert registry.get("evaluators", "linear") is Linear
