"""COCO box AP (AP@[0.5:0.95], AP50, AP75) of detections against BoxTargets, computed by pycocotools.

- [0] Lin et al., Microsoft COCO: Common Objects in Context, ECCV 2014, arXiv:1405.0312 (the metric)

The ground truth and the detections are handed to ``pycocotools.cocoeval.COCOeval`` in memory (no files):
greedy matching by score per image and class, 101-point interpolated precision, averaged over the classes
that have ground truth, at most 100 detections per image, all object sizes. Objects flagged ``ignore`` (VOC's
difficult, COCO's crowd) become COCO crowd regions: they count as no positive, and a detection that falls on
one is neither a true nor a false positive. pycocotools is optional (``pip install ssl-bench[detection]``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from ssl_bench.harness import BenchError, BoxTargets

METRICS = ("ap", "ap50", "ap75")
"""The metric names, in percent: COCO AP averaged over IoU 0.5:0.05:0.95, AP at IoU 0.5, AP at IoU 0.75."""


def _coco() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise BenchError("the detection evaluator scores with pycocotools: pip install 'ssl-bench[detection]' "
                         "(or pip install pycocotools)") from None
    return COCO, COCOeval


def _xywh(boxes: Tensor) -> list[list[float]]:
    b = boxes.detach().double().cpu()
    return [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in b.tolist()]


def box_ap(truth: Sequence[BoxTargets], detections: Sequence[tuple[Tensor, Tensor, Tensor]], num_classes: int,
           image_size: tuple[int, int]) -> dict[str, float]:
    """COCO AP, AP50 and AP75 in percent of ``detections`` against ``truth``, image by image.

    Args:
        truth: per image, its objects (boxes float (K, 4) xyxy pixels, labels int64 (K,), ignore bool (K,)).
        detections: per image, (boxes float (D, 4) xyxy pixels, scores float (D,), labels int64 (D,)).
        num_classes: number of classes (labels are in 0..num_classes - 1).
        image_size: (height, width) of every image in pixels.

    Returns:
        ``{"ap": ..., "ap50": ..., "ap75": ...}``; 0 for every metric when there are no detections.

    Raises:
        ValueError: the lists differ in length, or no image has an object that is not ignored.
    """
    if len(truth) != len(detections):
        raise ValueError(f"{len(truth)} images of ground truth but {len(detections)} of detections")
    if not any(bool((~t.ignore).any()) for t in truth):
        raise ValueError("no object to detect: every image is empty or its objects are all ignored")
    COCO, COCOeval = _coco()
    height, width = image_size
    images = [{"id": i + 1, "width": width, "height": height} for i in range(len(truth))]
    annotations: list[dict[str, Any]] = []
    for i, t in enumerate(truth):
        for box, label, ignore in zip(_xywh(t.boxes), t.labels.tolist(), t.ignore.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": int(ignore)})
    results = [{"image_id": i + 1, "category_id": int(label) + 1, "bbox": box, "score": float(score)}
               for i, (boxes, scores, labels) in enumerate(detections)
               for box, score, label in zip(_xywh(boxes), scores.tolist(), labels.tolist())]
    if not results:
        return dict.fromkeys(METRICS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary table
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    ap, ap50, ap75 = (max(0.0, float(v)) * 100 for v in evaluation.stats[:3])
    return {"ap": ap, "ap50": ap50, "ap75": ap75}
