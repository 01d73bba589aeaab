"""The gallery evaluator: metrics on planted features and the PNG grid it writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from ssl_bench.harness import EvalTask, ImageSet
from ssl_bench.plugins.evaluators.gallery import Gallery, render_gallery

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ("airplane", "automobile", "bird", "cat")
GREEN, RED = (40, 200, 70), (230, 50, 50)


class NoEncoder(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        raise AssertionError("gallery must read task.features")


def labels_of(n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.arange(n) % len(CLASSES))[torch.randperm(n, generator=g)]


def image_set(labels: Tensor, key: str, channels: int = 3, side: int = 8) -> ImageSet:
    g = torch.Generator().manual_seed(len(labels))
    images = torch.randint(0, 256, (len(labels), channels, side, side), generator=g, dtype=torch.uint8)
    return ImageSet(images, labels, CLASSES, key)


def make_task(fit_x: Tensor, fit_y: Tensor, target_x: Tensor, target_y: Tensor, out_dir: Path | None,
              channels: int = 3, seed: int = 0) -> EvalTask:
    fit, target = image_set(fit_y, "fit", channels), image_set(target_y, "target", channels)
    feats = {"fit": fit_x, "target": target_x}
    return EvalTask(NoEncoder(), fit, target, len(CLASSES), lambda s: feats[s.key], torch.device("cpu"), seed,
                    out_dir=out_dir)


def planted(out_dir: Path | None, noise: float = 0.05, n_target: int = 40, channels: int = 3,
            seed: int = 0) -> EvalTask:
    """Features one-hot(label) + Gaussian noise of std ``noise`` in 16 dims."""
    g = torch.Generator().manual_seed(seed)

    def feats(y: Tensor) -> Tensor:
        x = torch.randn(len(y), 16, generator=g) * noise
        x[torch.arange(len(y)), y] += 1.0
        return x

    fit_y, target_y = labels_of(80, seed), labels_of(n_target, seed + 1)
    return make_task(feats(fit_y), fit_y, feats(target_y), target_y, out_dir, channels, seed)


def run(task: EvalTask, hparams: dict[str, float] | None = None, **params: object) -> dict[str, float]:
    return Gallery(Gallery.Params.model_validate(params)).evaluate(task, hparams or {})


def bar_colours(path: Path, n_tiles: int, columns: int, tile_px: int) -> list[tuple[int, int, int]]:
    """The colour in the middle of each tile's bottom bar (tiles are tile_px + 26 tall, 2 px apart)."""
    image = Image.open(path).convert("RGB")
    out = []
    for i in range(n_tiles):
        row, col = divmod(i, columns)
        x = 2 + col * (tile_px + 2) + tile_px // 2
        y = 2 + row * (tile_px + 26 + 2) + tile_px + 26 - 2
        out.append(image.getpixel((x, y)))
    return out


def test_gallery_png_has_the_expected_size_and_one_tile_per_image(tmp_path: Path) -> None:
    metrics = run(planted(tmp_path, noise=0.8), n_images=10, columns=4, tile_px=48)
    path = tmp_path / "gallery.png"
    assert path.exists()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (4 * (48 + 2) + 2, 3 * (48 + 26 + 2) + 2)  # 10 tiles: 4 columns, 3 rows
    colours = bar_colours(path, 12, 4, 48)
    assert set(colours[:10]) <= {GREEN, RED}
    assert colours[10:] == [(255, 255, 255)] * 2  # the last row's two empty slots are padding
    assert 100.0 * colours.count(GREEN) / 10 == pytest.approx(metrics["top1_shown"])
    assert 0.0 < metrics["top1_shown"] < 100.0  # noisy features: both colours are exercised


def test_nothing_is_written_without_an_out_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    metrics = run(planted(None))
    assert metrics["top1"] == pytest.approx(100.0)
    assert list(tmp_path.rglob("*")) == []


def test_rows_are_well_formed(tmp_path: Path) -> None:
    metrics = run(planted(tmp_path, noise=0.8))
    assert set(metrics) == {"top1", "top2", "auc", "mean_class_acc", "top1_shown"}
    assert all(isinstance(v, float) and 0.0 <= v <= 100.0 for v in metrics.values())


@pytest.mark.parametrize("classifier", ["knn", "linear"])
def test_planted_perfect_features_score_100_and_draw_all_green(tmp_path: Path, classifier: str) -> None:
    metrics = run(planted(tmp_path), classifier=classifier, n_images=8, columns=8, tile_px=32)
    assert metrics["top1"] == metrics["top1_shown"] == pytest.approx(100.0)
    assert bar_colours(tmp_path / "gallery.png", 8, 8, 32) == [GREEN] * 8


@pytest.mark.parametrize("classifier", ["knn", "linear"])
def test_constant_features_score_chance(tmp_path: Path, classifier: str) -> None:
    fit_y, target_y = labels_of(80, 0), labels_of(40, 1)
    task = make_task(torch.ones(80, 16), fit_y, torch.ones(40, 16), target_y, tmp_path)
    metrics = run(task, classifier=classifier, n_images=8, tile_px=32)
    assert metrics["top1"] == pytest.approx(25.0)
    assert metrics["top1_shown"] == pytest.approx(25.0)  # a balanced draw of 8: two per class
    assert sorted(bar_colours(tmp_path / "gallery.png", 8, 8, 32)) == sorted([GREEN] * 2 + [RED] * 6)


def test_same_seed_same_metrics_and_png(tmp_path: Path) -> None:
    run(planted(tmp_path / "a", noise=0.8, seed=2))
    run(planted(tmp_path / "b", noise=0.8, seed=2))
    assert (tmp_path / "a" / "gallery.png").read_bytes() == (tmp_path / "b" / "gallery.png").read_bytes()
    assert run(planted(None, noise=0.8, seed=2)) == run(planted(None, noise=0.8, seed=2))


def test_small_targets_and_grey_images_are_drawn_whole(tmp_path: Path) -> None:
    metrics = run(planted(tmp_path, n_target=6, channels=1), n_images=32, columns=8, tile_px=24)
    with Image.open(tmp_path / "gallery.png") as image:
        assert image.size == (6 * (24 + 2) + 2, 1 * (24 + 26 + 2) + 2)
    assert metrics["top1_shown"] == metrics["top1"]


def test_render_puts_each_image_in_its_tile() -> None:
    images = torch.stack([torch.full((3, 4, 4), v, dtype=torch.uint8) for v in (0, 100, 200)])
    grid = render_gallery(images, torch.tensor([0, 1, 3]), torch.tensor([0, 1, 2]), CLASSES, columns=2, tile_px=16)
    assert grid.size == (2 * 18 + 2, 2 * (16 + 26 + 2) + 2)
    assert grid.getpixel((2 + 8, 2 + 8)) == (0, 0, 0)
    assert grid.getpixel((2 + 18 + 8, 2 + 8)) == (100, 100, 100)
    assert grid.getpixel((2 + 8, 2 + 44 + 8)) == (200, 200, 200)


def test_unknown_hparams_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        run(planted(None), {"dropout": 0.1})
