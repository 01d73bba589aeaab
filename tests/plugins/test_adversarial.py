"""The adversarial evaluator: FGSM / PGD on tiny separable images through planted and linear encoders."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pydantic
import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import EvalTask, ImageSet
from ssl_bench.plugins.evaluators.adversarial import SEED_EPSILONS, Adversarial, attack_loss, fgsm, metric_name, pgd

pytestmark = pytest.mark.usefixtures("one_thread")


class QuadrantEncoder(nn.Module):
    """Mean brightness of the four quadrants: (B, 3, H, W) -> (B, 4); separates :func:`quadrant_set`."""

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x.mean(dim=1, keepdim=True), 2).flatten(1)


class ConstantEncoder(nn.Module):
    """Ignores its input: (B, 3, H, W) -> ones (B, 8)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.new_ones(len(x), 8)


def labels_of(n: int, num_classes: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]


def quadrant_set(n: int, seed: int, key: str) -> ImageSet:
    """4 classes, 8 x 8 images: dark (60 +- 20) with quadrant ``label`` bright (190 +- 20)."""
    g = torch.Generator().manual_seed(seed)
    labels = labels_of(n, 4, seed)
    images = 60 + torch.randint(-20, 21, (n, 3, 8, 8), generator=g)
    for i, c in enumerate(labels.tolist()):
        r, q = divmod(c, 2)
        images[i, :, 4 * r:4 * r + 4, 4 * q:4 * q + 4] += 130
    return ImageSet(images.clamp(0, 255).to(torch.uint8), labels, ("a", "b", "c", "d"), key)


def brightness_set(n: int, seed: int, key: str) -> ImageSet:
    """2 classes, 3 x 6 x 6 images of brightness 0.4 (class 0) or 0.6 (class 1), shifted by U(-0.08, 0.08)
    per image (so margins differ) and U(-0.05, 0.05) per pixel."""
    g = torch.Generator().manual_seed(seed)
    labels = labels_of(n, 2, seed)
    shift = (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.16
    x = 0.4 + 0.2 * labels.view(n, 1, 1, 1).float() + shift + (torch.rand(n, 3, 6, 6, generator=g) - 0.5) * 0.1
    return ImageSet((x * 255).round().to(torch.uint8), labels, ("dark", "light"), key)


def make_task(encoder: nn.Module, fit: ImageSet, target: ImageSet, seed: int = 0) -> EvalTask:
    def no_cache(s: ImageSet) -> Tensor:
        raise AssertionError("adversarial must extract features with the encoder it attacks")

    return EvalTask(encoder, fit, target, fit.num_classes, no_cache, torch.device("cpu"), seed)


EPS = (0.0, 0.02, 0.05, 0.1, 0.2)


def run(task: EvalTask, hparams: dict[str, float] | None = None, **params: object) -> dict[str, float]:
    defaults: dict[str, object] = {"epsilons": EPS, "pgd_steps": 5}
    return Adversarial(Adversarial.Params.model_validate(defaults | params)).evaluate(task, hparams or {})


def linear_model(weight: Tensor) -> nn.Module:
    """Logits ``[0, <w, x>]`` of flattened images: a binary linear classifier."""

    class Model(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            score = x.flatten(1) @ weight
            return torch.stack([torch.zeros_like(score), score], dim=1)

    return Model()


def logit_gradient(loss: Callable[[Tensor, Tensor], Tensor], logits: Tensor, labels: Tensor) -> Tensor:
    z = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(z, labels), z)
    return grad


def test_attack_loss_points_where_cross_entropy_does() -> None:
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(64, 5, generator=g) * 3, torch.randint(0, 5, (64,), generator=g)
    ce = logit_gradient(lambda z, y: F.cross_entropy(z, y, reduction="sum"), logits, labels)
    ours = logit_gradient(attack_loss, logits, labels)
    p_y = logits.softmax(1).gather(1, labels.view(-1, 1))
    assert bool(((p_y > 0.5) & (p_y < 0.9)).any() and (p_y < 0.5).any())  # both branches are exercised
    torch.testing.assert_close(ours, ce * torch.where(p_y > 0.5, p_y / (1 - p_y), 1.0), rtol=1e-4, atol=1e-6)


def test_attack_loss_keeps_a_gradient_where_cross_entropy_underflows() -> None:
    logits, labels = torch.tensor([[150.0, 0.0, -10.0]]), torch.tensor([0])
    ce = logit_gradient(lambda z, y: F.cross_entropy(z, y, reduction="sum"), logits, labels)
    assert torch.equal(ce, torch.zeros_like(ce))  # what a plain cross-entropy attack would see
    ours = logit_gradient(attack_loss, logits, labels)
    assert ours[0, 0] < -0.5 and ours[0, 1] > 0.5  # lower the true logit, raise the runner-up


def test_fgsm_is_the_signed_gradient_step_clipped_to_the_unit_box() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3 * 4 * 4, generator=g)
    x, y = torch.rand(5, 3, 4, 4, generator=g), torch.tensor([0, 1, 0, 1, 1])
    adv = fgsm(linear_model(w), x, y, 0.1)
    # d CE / d score = p1 - y: class 0 rows move along +sign(w), class 1 rows along -sign(w)
    direction = torch.where(y.view(-1, 1, 1, 1) == 0, 1.0, -1.0) * w.sign().view(1, 3, 4, 4)
    torch.testing.assert_close(adv, (x + 0.1 * direction).clamp(0, 1))


def test_pgd_stays_in_the_ball_and_the_box() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(48, generator=g)
    x, y = torch.rand(6, 3, 4, 4, generator=g), torch.randint(0, 2, (6,), generator=g)
    adv = pgd(linear_model(w), x, y, 0.05, steps=7, step_size=0.02, random_start=True,
              generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 0.05 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() > 0.04  # it moved


def test_pgd_one_full_step_without_random_start_is_fgsm() -> None:
    g = torch.Generator().manual_seed(2)
    w = torch.randn(48, generator=g)
    x, y = torch.rand(6, 3, 4, 4, generator=g), torch.randint(0, 2, (6,), generator=g)
    model = linear_model(w)
    got = pgd(model, x, y, 0.1, steps=1, step_size=0.1, random_start=False, generator=torch.Generator())
    torch.testing.assert_close(got, fgsm(model, x, y, 0.1))


def test_pgd_random_start_is_seeded() -> None:
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(4, 3, 4, 4, generator=g), torch.randint(0, 2, (4,), generator=g)
    model = linear_model(torch.zeros(48))  # zero gradient: only the random start moves the images

    def attack(seed: int) -> Tensor:
        return pgd(model, x, y, 0.1, steps=2, step_size=0.05, random_start=True,
                   generator=torch.Generator().manual_seed(seed))

    assert torch.equal(attack(0), attack(0))
    assert not torch.equal(attack(0), attack(1))


def test_rows_are_well_formed() -> None:
    metrics = run(make_task(QuadrantEncoder(), quadrant_set(40, 1, "fit"), quadrant_set(20, 2, "target")))
    per_eps = {metric_name(a, e) for a in ("fgsm", "pgd") for e in EPS}
    assert set(metrics) == {"top1", "top2", "auc", "mean_class_acc", "fgsm_mean", "pgd_mean"} | per_eps
    assert "fgsm_eps0.050" in metrics and "pgd_eps0.200" in metrics
    assert all(isinstance(v, float) and 0.0 <= v <= 100.0 for v in metrics.values())
    assert metrics["fgsm_eps0.000"] == metrics["pgd_eps0.000"] == metrics["top1"]
    assert metrics["fgsm_mean"] == pytest.approx(sum(metrics[metric_name("fgsm", e)] for e in EPS) / len(EPS))


def test_default_grid_is_seed_002s() -> None:
    want = [0.275 * k / 9 for k in range(10)]
    assert len(SEED_EPSILONS) == 10
    assert all(abs(a - b) < 5e-4 for a, b in zip(SEED_EPSILONS, want))
    assert Adversarial.Params().epsilons == SEED_EPSILONS


def test_same_seed_same_metrics() -> None:
    def once() -> dict[str, float]:
        return run(make_task(QuadrantEncoder(), quadrant_set(40, 1, "fit"), quadrant_set(20, 2, "target"), seed=5))

    assert once() == once()


def test_planted_perfect_encoder_scores_100_clean() -> None:
    metrics = run(make_task(QuadrantEncoder(), quadrant_set(80, 1, "fit"), quadrant_set(40, 2, "target")),
                  {"lr": 0.1, "weight_decay": 0.0}, epsilons=(0.0,))
    assert metrics["top1"] == pytest.approx(100.0)


def test_constant_encoder_scores_chance_whatever_the_attack() -> None:
    metrics = run(make_task(ConstantEncoder(), quadrant_set(80, 1, "fit"), quadrant_set(40, 2, "target")))
    assert metrics["top1"] == pytest.approx(25.0)
    assert {metrics[metric_name(a, e)] for a in ("fgsm", "pgd") for e in EPS} == {25.0}


def test_attacks_lower_accuracy_monotonically_in_epsilon() -> None:
    """Identity encoder + a linear head on two separable brightness classes: a binary linear model, where
    FGSM is the optimal L-inf attack, so accuracy can only fall as epsilon grows, and PGD matches it."""
    task = make_task(nn.Flatten(), brightness_set(120, 1, "fit"), brightness_set(60, 2, "target"))
    grid = (0.0, 0.01, 0.02, 0.04, 0.08, 0.25)
    metrics = run(task, {"lr": 0.1, "weight_decay": 1e-3}, epsilons=grid, pgd_steps=10)
    for attack in ("fgsm", "pgd"):
        accs = [metrics[metric_name(attack, e)] for e in grid]
        assert accs[0] == pytest.approx(100.0)
        assert all(b <= a for a, b in itertools.pairwise(accs)), f"{attack}: {accs}"
        assert accs[-1] == pytest.approx(0.0)  # 0.25 per pixel moves every image past its margin (<= 0.18)
        assert sum(0.0 < a < 100.0 for a in accs) >= 2, f"{attack}: {accs}"  # a gradual fall, not one step
    assert all(metrics[metric_name("pgd", e)] <= metrics[metric_name("fgsm", e)] for e in grid)


def test_max_images_caps_the_attacked_rows() -> None:
    calls: list[int] = []

    class Counting(QuadrantEncoder):
        def forward(self, x: Tensor) -> Tensor:
            calls.append(len(x))
            return super().forward(x)

    task = make_task(Counting(), quadrant_set(40, 1, "fit"), quadrant_set(40, 2, "target"))
    run(task, max_images=8, attacks=("fgsm",), epsilons=(0.0, 0.1))
    assert calls == [40, 8, 8, 8]  # fit features, clean logits, FGSM gradient, attacked logits


def test_params_reject_colliding_names_and_unknown_hparams() -> None:
    with pytest.raises(pydantic.ValidationError):
        Adversarial.Params(epsilons=(0.0301, 0.0304))
    task = make_task(QuadrantEncoder(), quadrant_set(40, 1, "fit"), quadrant_set(20, 2, "target"))
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        run(task, {"k": 3.0})


def test_runs_under_inference_mode() -> None:
    def task() -> EvalTask:
        return make_task(QuadrantEncoder(), quadrant_set(40, 1, "fit"), quadrant_set(20, 2, "target"))

    with torch.inference_mode():
        inside = run(task(), {"lr": 0.1, "weight_decay": 0.0}, epsilons=(0.0, 0.3))
    assert inside == run(task(), {"lr": 0.1, "weight_decay": 0.0}, epsilons=(0.0, 0.3))
    assert inside["pgd_eps0.300"] < inside["top1"]
