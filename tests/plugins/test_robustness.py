"""The robustness evaluator: degradation ops and accuracy under them on tiny planted tasks."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import EvalTask, ImageSet
from ssl_bench.plugins.evaluators.robustness import DEGRADATIONS, Robustness, degrade

pytestmark = pytest.mark.usefixtures("one_thread")

LEVELS = {"blur": (0.5, 1.0, 2.0), "downsample": (0.75, 0.5, 0.25), "jpeg": (75.0, 30.0, 10.0),
          "noise": (0.04, 0.08, 0.16)}


class QuadrantEncoder(nn.Module):
    """Mean brightness of the four quadrants: (B, 3, H, W) -> (B, 4); separates :func:`quadrant_set`."""

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x.mean(dim=1, keepdim=True), 2).flatten(1)


class ConstantEncoder(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.new_ones(len(x), 8)


class TextureEncoder(nn.Module):
    """Mean absolute horizontal and vertical pixel differences, and the mean: (B, 3, H, W) -> (B, 3)."""

    def forward(self, x: Tensor) -> Tensor:
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(1, 2, 3))
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))
        return torch.stack([dx, dy, x.mean(dim=(1, 2, 3))], dim=1)


def labels_of(n: int, num_classes: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]


def quadrant_set(n: int, seed: int, key: str) -> ImageSet:
    """4 classes, 16 x 16 images: dark (60 +- 20) with quadrant ``label`` bright (190 +- 20)."""
    g = torch.Generator().manual_seed(seed)
    labels = labels_of(n, 4, seed)
    images = 60 + torch.randint(-20, 21, (n, 3, 16, 16), generator=g)
    for i, c in enumerate(labels.tolist()):
        r, q = divmod(c, 2)
        images[i, :, 8 * r:8 * r + 8, 8 * q:8 * q + 8] += 130
    return ImageSet(images.clamp(0, 255).to(torch.uint8), labels, ("a", "b", "c", "d"), key)


def texture_set(n: int, seed: int, key: str) -> ImageSet:
    """2 classes of 16 x 16 grey images (128 +- 30 overall): flat (class 0) or a 1-px checkerboard of
    +-40 (class 1), so only fine detail tells them apart."""
    g = torch.Generator().manual_seed(seed)
    labels = labels_of(n, 2, seed)
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checker = ((yy + xx) % 2 * 2 - 1).float() * 40
    base = 128 + torch.randint(-30, 31, (n, 1, 1, 1), generator=g).float()
    images = base + labels.view(n, 1, 1, 1).float() * checker + torch.randint(-3, 4, (n, 3, 16, 16), generator=g)
    return ImageSet(images.clamp(0, 255).to(torch.uint8), labels, ("flat", "checker"), key)


def make_task(encoder: nn.Module, fit: ImageSet, target: ImageSet, seed: int = 0) -> EvalTask:
    def no_cache(s: ImageSet) -> Tensor:
        raise AssertionError("robustness must extract features with the encoder it scores degraded images with")

    return EvalTask(encoder, fit, target, fit.num_classes, no_cache, torch.device("cpu"), seed)


def run(task: EvalTask, hparams: dict[str, float] | None = None, **params: object) -> dict[str, float]:
    evaluator = Robustness(Robustness.Params.model_validate(params))
    return evaluator.evaluate(task, hparams or {"lr": 0.1, "weight_decay": 0.0})


def images(seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (4, 3, 16, 16), generator=g).float().div(255)


@pytest.mark.parametrize("kind", sorted(DEGRADATIONS))
def test_severity_zero_is_the_clean_image(kind: str) -> None:
    x = images()
    assert torch.equal(degrade(x, kind, 0, LEVELS[kind], generator=torch.Generator().manual_seed(0)), x)


@pytest.mark.parametrize(("kind", "neutral"), [("blur", 0.0), ("downsample", 1.0), ("noise", 0.0)])
def test_neutral_levels_leave_images_unchanged(kind: str, neutral: float) -> None:
    x = images()
    assert torch.equal(DEGRADATIONS[kind](x, neutral, torch.Generator()), x)


@pytest.mark.parametrize("kind", sorted(DEGRADATIONS))
def test_degradations_keep_shape_range_and_seed(kind: str) -> None:
    x = images()
    out = [degrade(x, kind, s, LEVELS[kind], generator=torch.Generator().manual_seed(1)) for s in (1, 2, 3)]
    again = degrade(x, kind, 3, LEVELS[kind], generator=torch.Generator().manual_seed(1))
    assert all(o.shape == x.shape and o.dtype == x.dtype and o.min() >= 0 and o.max() <= 1 for o in out)
    assert torch.equal(out[2], again)
    errors = [float((o - x).abs().mean()) for o in out]
    assert 0 < errors[0] < errors[1] < errors[2], errors  # more severe, further from the clean image


def test_blur_and_downsampling_keep_a_flat_image_flat() -> None:
    x = torch.full((2, 3, 16, 16), 0.3)
    for kind in ("blur", "downsample"):
        torch.testing.assert_close(DEGRADATIONS[kind](x, LEVELS[kind][2], torch.Generator()), x)


def test_downsampling_by_half_erases_a_one_pixel_checkerboard() -> None:
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    x = ((yy + xx) % 2).float().expand(1, 3, 16, 16)
    out = DEGRADATIONS["downsample"](x, 0.5, torch.Generator())
    torch.testing.assert_close(out, torch.full_like(x, 0.5), atol=0.02, rtol=0)  # the antialias filter's border


def test_noise_has_the_requested_std() -> None:
    x = torch.full((8, 3, 32, 32), 0.5)
    out = DEGRADATIONS["noise"](x, 0.05, torch.Generator().manual_seed(0))
    assert float((out - x).std()) == pytest.approx(0.05, rel=0.05)


def test_jpeg_at_high_quality_is_close_and_at_low_quality_is_not() -> None:
    grey = images()[:, :1].expand(-1, 3, -1, -1).contiguous()  # no colour for chroma subsampling to lose
    x = DEGRADATIONS["blur"](grey, 1.0, torch.Generator())  # smooth content JPEG keeps well
    high = float((DEGRADATIONS["jpeg"](x, 95, torch.Generator()) - x).abs().mean())
    low = float((DEGRADATIONS["jpeg"](x, 5, torch.Generator()) - x).abs().mean())
    assert high < 0.01 and low > 0.03


def test_rows_are_well_formed() -> None:
    metrics = run(make_task(QuadrantEncoder(), quadrant_set(40, 1, "fit"), quadrant_set(20, 2, "target")))
    per = {f"{kind}_s{k}" for kind in LEVELS for k in (1, 2, 3)} | {f"{kind}_mean" for kind in LEVELS}
    assert set(metrics) == {"top1", "top2", "auc", "mean_class_acc", "degraded_mean"} | per
    assert all(isinstance(v, float) and 0.0 <= v <= 100.0 for v in metrics.values())
    assert metrics["degraded_mean"] == pytest.approx(sum(metrics[f"{k}_s{s}"] for k in LEVELS for s in (1, 2, 3)) / 12)
    assert metrics["blur_mean"] == pytest.approx(sum(metrics[f"blur_s{s}"] for s in (1, 2, 3)) / 3)


def test_level_tables_set_the_severities() -> None:
    metrics = run(make_task(QuadrantEncoder(), quadrant_set(40, 1, "fit"), quadrant_set(20, 2, "target")),
                  degradations=("noise",), noise_stds=(0.01, 0.02, 0.03, 0.04, 0.05))
    assert {k for k in metrics if k.startswith("noise_")} == {f"noise_s{s}" for s in range(1, 6)} | {"noise_mean"}


def test_neutral_levels_score_as_clean() -> None:
    metrics = run(make_task(TextureEncoder(), texture_set(60, 1, "fit"), texture_set(40, 2, "target")),
                  degradations=("blur", "downsample", "noise"), blur_sigmas=(0.0,), downsample_scales=(1.0,),
                  noise_stds=(0.0,))
    assert metrics["blur_s1"] == metrics["downsample_s1"] == metrics["noise_s1"] == metrics["top1"]


def test_same_seed_same_metrics() -> None:
    def once() -> dict[str, float]:
        return run(make_task(QuadrantEncoder(), quadrant_set(40, 1, "fit"), quadrant_set(20, 2, "target"), seed=4))

    assert once() == once()


def test_planted_perfect_encoder_scores_100_clean() -> None:
    metrics = run(make_task(QuadrantEncoder(), quadrant_set(80, 1, "fit"), quadrant_set(40, 2, "target")))
    assert metrics["top1"] == pytest.approx(100.0)
    assert metrics["blur_s1"] == pytest.approx(100.0)  # quadrant means survive a mild blur


def test_constant_encoder_scores_chance_under_every_degradation() -> None:
    metrics = run(make_task(ConstantEncoder(), quadrant_set(80, 1, "fit"), quadrant_set(40, 2, "target")))
    assert {v for k, v in metrics.items() if k not in ("top2", "auc")} == {25.0}
    assert metrics["auc"] == pytest.approx(50.0)


def test_losing_fine_detail_costs_a_texture_classifier_its_accuracy() -> None:
    metrics = run(make_task(TextureEncoder(), texture_set(80, 1, "fit"), texture_set(40, 2, "target")),
                  degradations=("blur", "downsample"))
    assert metrics["top1"] == pytest.approx(100.0)
    for kind in ("blur", "downsample"):
        accs = [metrics[f"{kind}_s{s}"] for s in (1, 2, 3)]
        assert accs[2] <= accs[0] <= 100.0 and accs[2] <= 60.0, (kind, accs)


def test_max_images_caps_the_scored_rows() -> None:
    calls: list[int] = []

    class Counting(QuadrantEncoder):
        def forward(self, x: Tensor) -> Tensor:
            calls.append(len(x))
            return super().forward(x)

    run(make_task(Counting(), quadrant_set(40, 1, "fit"), quadrant_set(40, 2, "target")),
        max_images=8, degradations=("noise",), noise_stds=(0.1,))
    assert calls == [40, 8, 8]  # fit, clean target rows, noisy target rows


def test_a_sweep_extracts_degraded_features_once() -> None:
    calls: list[int] = []

    class Counting(QuadrantEncoder):
        def forward(self, x: Tensor) -> Tensor:
            calls.append(len(x))
            return super().forward(x)

    task = make_task(Counting(), quadrant_set(40, 1, "fit"), quadrant_set(20, 2, "target"))
    evaluator = Robustness(Robustness.Params(degradations=("noise",), noise_stds=(0.1,)))
    first = evaluator.evaluate(task, {"lr": 0.1})
    assert evaluator.evaluate(task, {"lr": 0.1}) == first
    evaluator.evaluate(task, {"lr": 0.01})
    assert len(calls) == 3  # fit, clean, noisy: once for three trials
