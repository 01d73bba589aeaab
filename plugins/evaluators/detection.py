"""Detection transfer: a Faster R-CNN FPN on a copy of the encoder, frozen or fine-tuned, scored by COCO AP.

- [0] the survey (its table 5: Faster R-CNN with FPN on PASCAL VOC, encoder frozen and fine-tuned, AP, AP50
  and AP75)
- [1] He et al., Momentum Contrast for Unsupervised Visual Representation Learning, 2020, arXiv:1911.05722,
  Sec. 4.2 and its detectron2 config ``pascal_voc_R_50_C4_24k``: train on VOC07+12 trainval, test on VOC07
  test, 24k iterations at 16 images per batch, base lr 0.02, x0.1 at 18k and 22k, 100 warm-up iterations,
  training sides 480..800 px, 800 px at test
- [2] Lin et al., Feature Pyramid Networks for Object Detection, 2017, arXiv:1612.03144
- [3] detectron2's solver defaults: SGD momentum 0.9, weight decay 1e-4, linear warm-up from 0.001 x lr
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from ssl_bench.harness import DataError, EvalTask, Evaluator, ImageSet, hookimpl, normalize, to_float
from ssl_bench.harness import Params as BaseParams
from ssl_bench.plugins.evaluators.detection_metrics import METRICS, box_ap

if TYPE_CHECKING:
    from torchvision.models.detection import FasterRCNN

WARMUP_FACTOR = 0.001
"""The lr's share at step 0 of the linear warm-up [3]."""
DIVERGENCE_CHECK_STEPS = 50
"""Steps between two reads of the loss for a divergence check (each read waits for the device)."""


class Detection(Evaluator):
    """Train torchvision's Faster R-CNN with an FPN over a copy of the encoder's stages; report box AP.

    ``task.encoder`` is never touched: a deep copy becomes the detector's backbone, its last ``levels``
    stages feeding the FPN (:mod:`ssl_bench.plugins.evaluators.detection_model`). ``freeze = true`` (the
    survey's frozen column): every backbone weight is frozen (no gradient, batch norms in eval mode) and only
    the FPN, RPN and box head learn; ``freeze = false`` (its fine-tuned column, [1]'s protocol): every weight
    learns, batch norms in train mode (as [1]'s synchronised batch norm). Images are fed as float in [0, 1];
    torchvision's transform normalises them with the harness's ImageNet mean and std and resizes the shorter
    side to ``min_sizes_px`` (the images' own side by default). Training: SGD over the trainable tensors, lr
    per step on the sum of the RPN and box losses, linear warm-up then x0.1 at ``decay_at`` of ``steps``
    ([1], [3]), horizontal flips (p 0.5) of images and boxes. Scoring on ``task.target``: COCO AP, AP50 and
    AP75 in percent (pycocotools; ignored objects as crowd regions), see
    :mod:`ssl_bench.plugins.evaluators.detection_metrics`.

    The defaults are [1]'s schedule with [2]'s FPN (256 channels, a 1024-d box head, 4 stages + P6); the
    sides of [1] are a benchmark's ``min_sizes_px = [480, 512, ..., 800]`` with ``max_size_px = 1333``.
    ``selection_metric`` is ``ap``: it averages ten IoU thresholds, so on a small validation part it is a
    steadier choice than AP50 and it rewards the localisation the table's AP75 column measures.
    Default grid ``lr`` (0.02, 0.005) x ``weight_decay`` (1e-4, 0): [1]'s lr and a quarter of it (frozen
    features often want another), [3]'s decay and none. Randomness: the detector's initialisation, RPN and
    box sampling and the choice of training side come from ``torch.manual_seed(task.seed)`` inside
    ``torch.random.fork_rng``; shuffling and flips from CPU generators seeded with ``task.seed`` and
    ``task.seed + 1``. Deviations from [1]: FPN, not C4 ([0]); one device, not 8 with synchronised batch norm;
    images arrive squashed to a square by their dataset (boxes scaled with them); no precise-BN pass.
    """

    name = "detection"

    class Params(BaseParams):
        freeze: bool = False
        """Freeze every backbone weight (the survey's frozen column); false fine-tunes all ([1])."""
        steps: Annotated[int, Field(gt=0)] = 24000
        """Optimizer steps ([1]: 24k at batch 16, about 23 epochs of VOC07+12 trainval)."""
        batch_size: Annotated[int, Field(gt=0)] = 16
        """Images per step ([1])."""
        warmup_steps: Annotated[int, Field(ge=0)] = 100
        """Linear warm-up from 0.001 x lr ([1], [3])."""
        decay_at: tuple[Annotated[float, Field(gt=0, lt=1)], ...] = (0.75, 22 / 24)
        """Shares of ``steps`` after which the lr is multiplied by 0.1 ([1]: 18k and 22k of 24k)."""
        momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
        """SGD momentum ([3])."""
        lr: Annotated[float, Field(gt=0)] = 0.02
        """Learning rate when ``hparams`` has no ``lr`` ([1] at batch 16)."""
        weight_decay: Annotated[float, Field(ge=0)] = 1e-4
        """Weight decay when ``hparams`` has no ``weight_decay`` ([3])."""
        min_sizes_px: tuple[Annotated[int, Field(gt=0)], ...] = ()
        """Shorter sides to resize to: training draws one per step, evaluation uses the last. Empty: the images'
        own side (no resizing). [1]: 480, 512, ..., 800."""
        max_size_px: Annotated[int, Field(gt=0)] | None = None
        """Longest side after resizing; None: the longest of the images' when ``min_sizes_px`` is empty, else
        1333 / 800 of the largest ``min_sizes_px`` (detectron2's 1333 at 800)."""
        levels: Annotated[int, Field(gt=0, le=6)] = 4
        """How many of the backbone's last stages with feature maps feed the FPN ([2]: C2..C5)."""
        fpn_channels: Annotated[int, Field(gt=0)] = 256
        """Channels of every pyramid level ([2])."""
        box_head_dim: Annotated[int, Field(gt=0)] = 1024
        """Width of the two fully connected layers of the box head ([2])."""
        anchor_sizes_px: tuple[Annotated[float, Field(gt=0)], ...] = ()
        """One anchor size per pyramid level (the stages kept, then the max-pooled level). Empty: [2]'s 32..512
        at 800 px scaled to the test side (at 64 px: 2.6, 5.1, 10.2, 20.5, 41)."""
        rpn_pre_nms_top_n: Annotated[int, Field(gt=0)] = 2000
        """Proposals per pyramid level kept for NMS in training, half of it at test (torchvision's default)."""
        rpn_post_nms_top_n: Annotated[int, Field(gt=0)] = 2000
        """Proposals per image kept after NMS in training, half of it at test (torchvision's default)."""
        rois_per_image: Annotated[int, Field(gt=0)] = 512
        """Proposals sampled per image to train the box head, a quarter positive at most ([3]: 512)."""
        flip: bool = True
        """Flip training images and their boxes horizontally with probability 0.5."""
        train_ignored: bool = True
        """Train on objects flagged ignore (VOC's difficult ones, as detectron2 does; COCO's crowds)."""
        eval_batch_size: Annotated[int, Field(gt=0)] = 16
        """Images per forward pass when scoring ``task.target``."""

    params: Params
    search_space: ClassVar[Mapping[str, tuple[float, ...]]] = {"lr": (0.02, 0.005), "weight_decay": (1e-4, 0.0)}
    selection_metric: ClassVar[str] = "ap"

    def evaluate(self, task: EvalTask, hparams: Mapping[str, float]) -> dict[str, float]:
        """Train a detector on ``task.fit`` (images and their ``targets``), report box AP on ``task.target``.

        Args:
            task: images uint8 (N, 3, H, W) with ``targets`` (one BoxTargets per image); the encoder is copied.
            hparams: ``lr`` and/or ``weight_decay``; missing ones fall back to ``Params``.

        Returns:
            ``{"ap", "ap50", "ap75"}`` in percent; NaN for each when the loss diverged (fails that trial only).
        """
        unknown = set(hparams) - {"lr", "weight_decay"}
        if unknown:
            raise ValueError(f"detection: unknown hyper-parameters {sorted(unknown)}; expected lr, weight_decay")
        for role, data in (("fit", task.fit), ("target", task.target)):
            if data.targets is None:
                raise DataError(f"detection: the {role} images have no boxes (ImageSet.targets is None); evaluate "
                                "on a detection dataset: shapes_detection, voc or coco")
        cuda = [task.device.index if task.device.index is not None else torch.cuda.current_device()] \
            if task.device.type == "cuda" else []
        with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=cuda):
            model, diverged = self.train_detector(task, hparams)
            if diverged:
                return dict.fromkeys(METRICS, math.nan)
            found = self.predict(model, task.target, task.device)
        height, width = (int(s) for s in task.target.images.shape[-2:])
        return box_ap(task.target.targets or (), found, task.num_classes, (height, width))

    def sides(self, data: ImageSet) -> tuple[tuple[int, ...], int]:
        """(shorter sides, longest side) of the detector's resizing for images like ``data``'s."""
        p = self.params
        height, width = (int(s) for s in data.images.shape[-2:])
        if not p.min_sizes_px:
            return (min(height, width),), p.max_size_px or max(height, width)
        return p.min_sizes_px, p.max_size_px or round(max(p.min_sizes_px) * 1333 / 800)

    def train_detector(self, task: EvalTask, hparams: Mapping[str, float]) -> tuple[FasterRCNN, bool]:
        """The trained detector (see the class docstring) in eval mode, and whether its loss diverged."""
        p, device, fit = self.params, task.device, task.fit
        encoder = copy.deepcopy(task.encoder).to(device)
        encoder.requires_grad_(not p.freeze)
        min_sizes, max_size = self.sides(fit)
        probe = normalize(to_float(fit.batch(torch.arange(1), device)))
        torch.manual_seed(task.seed)
        # imported here, not at the top: importing torchvision takes about a second
        from ssl_bench.plugins.evaluators.detection_model import build_detector

        model = build_detector(encoder, task.num_classes, levels=p.levels, channels=p.fpn_channels,
                               box_head_dim=p.box_head_dim, min_sizes=min_sizes, max_size=max_size,
                               anchors=p.anchor_sizes_px, frozen=p.freeze, probe=probe,
                               rpn_pre_nms_top_n_train=p.rpn_pre_nms_top_n,
                               rpn_pre_nms_top_n_test=max(1, p.rpn_pre_nms_top_n // 2),
                               rpn_post_nms_top_n_train=p.rpn_post_nms_top_n,
                               rpn_post_nms_top_n_test=max(1, p.rpn_post_nms_top_n // 2),
                               box_batch_size_per_image=p.rois_per_image).to(device)
        optimizer = torch.optim.SGD([t for t in model.parameters() if t.requires_grad],
                                    lr=float(hparams.get("lr", p.lr)), momentum=p.momentum,
                                    weight_decay=float(hparams.get("weight_decay", p.weight_decay)))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)
        shuffle = torch.Generator().manual_seed(task.seed)
        flips = torch.Generator().manual_seed(task.seed + 1)
        model.train()
        order = torch.empty(0, dtype=torch.int64)
        total = torch.zeros((), device=device)
        for step in range(p.steps):
            if len(order) < min(p.batch_size, len(fit)):
                order = torch.cat([order, torch.randperm(len(fit), generator=shuffle)])
            idx, order = order[: p.batch_size], order[p.batch_size:]
            images, targets = self.batch(fit, idx, flips, device)
            loss: Tensor = sum(model(images, targets).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total = total + loss.detach()
            if (step + 1) % DIVERGENCE_CHECK_STEPS == 0 or step + 1 == p.steps:
                if not math.isfinite(float(total)):
                    return model.eval(), True
                total = torch.zeros((), device=device)
        return model.eval(), False

    def lr_factor(self, step: int) -> float:
        """The lr's multiplier at ``step``: linear warm-up from 0.001, then x0.1 past each ``decay_at`` share."""
        p = self.params
        warm = WARMUP_FACTOR + (1 - WARMUP_FACTOR) * step / p.warmup_steps if step < p.warmup_steps else 1.0
        return warm * 0.1 ** sum(step >= int(f * p.steps) for f in p.decay_at)

    def batch(self, fit: ImageSet, idx: Tensor, flips: torch.Generator,
              device: torch.device) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
        """Rows ``idx`` as the detector's input: float images (3, H, W) in [0, 1] and their targets (labels + 1)."""
        x = to_float(fit.batch(idx, device))
        width = x.shape[-1]
        flipped = (torch.rand(len(idx), generator=flips) < 0.5).tolist() if self.params.flip else [False] * len(idx)
        images, targets = [], []
        for img, row, f in zip(x, idx.tolist(), flipped):
            objects = fit.targets[row]  # type: ignore[index]
            keep = torch.ones(len(objects), dtype=torch.bool) if self.params.train_ignored else ~objects.ignore
            boxes = objects.boxes[keep].to(device)
            if f:
                img, boxes = img.flip(-1), torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0],
                                                        boxes[:, 3]], 1)
            images.append(img)
            targets.append({"boxes": boxes, "labels": objects.labels[keep].to(device) + 1})
        return images, targets

    def predict(self, model: FasterRCNN, data: ImageSet, device: torch.device) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per image of ``data``: (boxes float (D, 4) xyxy px, scores (D,), labels int64 (D,) from 0), on the CPU."""
        model.eval()
        out: list[tuple[Tensor, Tensor, Tensor]] = []
        with torch.no_grad():
            for chunk in data.chunks(self.params.eval_batch_size, device):
                for d in model(list(to_float(chunk))):
                    out.append((d["boxes"].cpu(), d["scores"].cpu(), d["labels"].cpu() - 1))
        return out


@hookimpl
def bench_register_evaluators(register: Callable[[type], None]) -> None:
    register(Detection)
