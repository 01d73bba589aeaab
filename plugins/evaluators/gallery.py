"""A PNG grid of target images with the predicted and the true label, right in green, wrong in red."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from pydantic import Field
from torch import Tensor
from torch.nn import functional as F

from ssl_bench.harness import EvalTask, Evaluator, atomic_write, balanced_subset, hookimpl, to_float
from ssl_bench.harness.kit.metrics import classification_metrics, topk_accuracy
from ssl_bench.plugins.evaluators._probe import check_hparams, fit_head
from ssl_bench.plugins.evaluators.knn import knn_scores
from ssl_bench.plugins.evaluators.linear import Linear

RIGHT, WRONG = (40, 200, 70), (230, 50, 50)
"""Caption colours (RGB) of a right and a wrong prediction."""
CAPTION_PX = 26
"""Height of the caption strip under each image (two lines of the default font)."""
BAR_PX = 3
"""Height of the coloured bar at the bottom of each tile (green right, red wrong)."""
PADDING = 2
"""Pixels between tiles in ``make_grid``."""


def clip_text(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """``text``, cut and ended with ".." where it is wider than ``width`` pixels in ``font``."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "..") > width:
        text = text[:-1]
    return text + ".."


def tile(image: Tensor, predicted: str, true: str, right: bool, size: int) -> Tensor:
    """One tile: ``image`` (C, H, W) uint8 resized to ``size`` x ``size`` (nearest), over a black
    caption with ``pred: ...`` and ``true: ...`` and a bar, green when ``right`` else red.

    Returns:
        float RGB in [0, 1]. Shape: (3, size + CAPTION_PX, size).
    """
    x = to_float(image.unsqueeze(0))
    x = F.interpolate(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3], size=(size, size), mode="nearest")
    canvas = Image.new("RGB", (size, size + CAPTION_PX), (0, 0, 0))
    canvas.paste(Image.fromarray(x[0].mul(255).round().byte().permute(1, 2, 0).numpy()), (0, 0))
    draw, colour = ImageDraw.Draw(canvas), RIGHT if right else WRONG
    font = ImageFont.load_default()
    draw.text((2, size + 1), clip_text(f"pred: {predicted}", font, size - 4), fill=colour, font=font)
    draw.text((2, size + 12), clip_text(f"true: {true}", font, size - 4), fill=(230, 230, 230), font=font)
    draw.rectangle((0, size + CAPTION_PX - BAR_PX, size - 1, size + CAPTION_PX - 1), fill=colour)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float().div_(255)


def render_gallery(images: Tensor, predicted: Tensor, labels: Tensor, classes: Sequence[str], *,
                   columns: int, tile_px: int) -> Image.Image:
    """The grid (``torchvision.utils.make_grid``, ``PADDING`` px of white between tiles).

    Args:
        images: uint8 (N, C, H, W), N >= 1.
        predicted: predicted classes (N,).
        labels: true classes (N,).
        classes: class names.
        columns: tiles per row.
        tile_px: side of each resized image.

    Returns:
        RGB image of width ``min(N, columns) * (tile_px + PADDING) + PADDING`` and height
        ``ceil(N / columns) * (tile_px + CAPTION_PX + PADDING) + PADDING``.
    """
    tiles = [tile(img, classes[int(p)], classes[int(y)], int(p) == int(y), tile_px)
             for img, p, y in zip(images, predicted, labels)]
    # imported here, not at the top: importing torchvision takes about a second
    from torchvision.utils import make_grid

    grid = make_grid(torch.stack(tiles), nrow=columns, padding=PADDING, pad_value=1.0)
    return Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy())


def save_png(image: Image.Image, path: Path) -> None:
    """Write ``image`` to ``path`` as a PNG, atomically."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")

    def write(tmp: Path) -> None:
        tmp.write_bytes(buffer.getvalue())

    atomic_write(path, write)


class Gallery(Evaluator):
    """Predictions beside true labels on a grid of target images ([0]'s qualitative check).

    - [0] the pretrained-inference study (a SimCLR classifier's predictions shown next to the true labels
      of test images)

    A classifier on cached features (``task.features``) scores all of ``task.target``: weighted kNN
    (the ``knn`` evaluator's votes, default; nothing trained) or the ``linear`` evaluator's probe.
    ``n_images`` class-balanced target rows (seeded by ``task.seed``, in dataset order) are drawn in
    a ``columns``-wide grid: each image resized to ``tile_px`` (nearest), its predicted class in green
    (right) or red (wrong), its true class in grey, a green/red bar under it. The PNG goes to
    ``task.out_dir / "gallery.png"`` (nothing is written when ``out_dir`` is None); the sweep's
    validation calls write it too and the last call, on the test split, leaves its gallery there.
    Metrics (percent): ``classification_metrics`` of the whole target and ``top1_shown``, the top-1
    of the drawn images (not ``shown_top1``: the leaderboard reads ``<family>_<param><number>`` as
    a curve).
    """

    name = "gallery"

    class Params(Linear.Params):
        classifier: Literal["knn", "linear"] = "knn"
        """kNN votes (nothing trained) or the linear probe."""
        k: Annotated[int, Field(gt=0)] = 20
        """kNN neighbours (as the ``knn`` evaluator)."""
        temperature: Annotated[float, Field(gt=0)] = 0.07
        """kNN vote temperature (as the ``knn`` evaluator)."""
        n_images: Annotated[int, Field(gt=0)] = 32
        """Images drawn (fewer when the target has fewer)."""
        columns: Annotated[int, Field(gt=0)] = 8
        """Tiles per row."""
        tile_px: Annotated[int, Field(ge=16)] = 96
        """Side of each drawn image in pixels (CIFAR's 32 px is too small beside text)."""

    params: Params
    search_space: ClassVar[Mapping[str, tuple[float, ...]]] = {}
    sweepable: ClassVar[tuple[str, ...]] = ("lr", "weight_decay", "k", "temperature")

    def evaluate(self, task: EvalTask, hparams: Mapping[str, float]) -> dict[str, float]:
        """Classify ``task.target``, draw ``n_images`` of it, report its metrics.

        Args:
            task: cached features from ``task.features``; uint8 images of ``task.target`` to draw.
            hparams: ``k`` / ``temperature`` (kNN) or ``lr`` / ``weight_decay`` (linear) overriding ``Params``.

        Returns:
            ``classification_metrics`` of the whole target plus ``top1_shown`` (percent).
        """
        check_hparams(self.name, hparams, self.sweepable)
        p = self.params
        fit = task.features(task.fit).to(task.device, torch.float32)
        target = task.features(task.target).to(task.device, torch.float32)
        if p.classifier == "linear":
            head = fit_head(fit, task.fit.labels, num_classes=task.num_classes, hparams=hparams, params=p,
                            seed=task.seed)
            with torch.no_grad():
                scores = head.to(task.device)(target)
        else:
            votes = knn_scores(fit, task.fit.labels, target, num_classes=task.num_classes,
                               k=int(round(hparams.get("k", p.k))),
                               temperature=float(hparams.get("temperature", p.temperature)))
            scores = (votes / votes.sum(dim=1, keepdim=True).clamp_min(torch.finfo(votes.dtype).tiny)
                      ).clamp_min(1e-12).log()
        scores, labels = scores.cpu(), task.target.labels.cpu().long()
        metrics = classification_metrics(scores, labels, task.num_classes)
        rows = balanced_subset(labels, p.n_images, task.seed)
        metrics["top1_shown"] = topk_accuracy(scores[rows], labels[rows], 1)
        if task.out_dir is not None and len(rows):
            predicted = scores[rows].topk(1, dim=1).indices.squeeze(1)
            image = render_gallery(task.target.batch(rows), predicted, labels[rows], task.target.classes,
                                   columns=p.columns, tile_px=p.tile_px)
            save_png(image, Path(task.out_dir) / "gallery.png")
        return metrics


def grid_size(n: int, columns: int, tile_px: int) -> tuple[int, int]:
    """(width, height) in pixels of a gallery of ``n`` images."""
    cols, rows = min(n, columns), math.ceil(n / columns)
    return cols * (tile_px + PADDING) + PADDING, rows * (tile_px + CAPTION_PX + PADDING) + PADDING


@hookimpl
def bench_register_evaluators(register: Callable[[type], None]) -> None:
    register(Gallery)
