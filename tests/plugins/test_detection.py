"""The detection evaluator: COCO AP on hand-made cases, frozen vs fine-tuned weights, its detector, its rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from torch import Tensor, nn

from ssl_bench.harness import BenchError, BoxTargets, DataError, EvalTask
from ssl_bench.harness.data import normalize, to_float
from ssl_bench.harness.plugins import collect, make_plugin_manager
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.backbones.resnet import ResNet18
from ssl_bench.plugins.datasets.shapes_detection import ShapesDetection
from ssl_bench.plugins.evaluators.detection import Detection
from ssl_bench.plugins.evaluators.detection_model import StagePyramid, default_anchors

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"steps": 6, "batch_size": 4, "warmup_steps": 2, "fpn_channels": 16, "box_head_dim": 32,
        "rpn_pre_nms_top_n": 100, "rpn_post_nms_top_n": 50, "rois_per_image": 32, "levels": 3,
        "anchor_sizes_px": (8.0, 16.0, 32.0, 64.0)}
"""A detector small enough for a few CPU steps in about a second."""


def objects(boxes: list[list[float]], labels: list[int], ignore: list[bool] | None = None) -> BoxTargets:
    k = len(labels)
    return BoxTargets(torch.tensor(boxes, dtype=torch.float32).reshape(k, 4), torch.tensor(labels, dtype=torch.int64),
                      torch.tensor(ignore or [False] * k, dtype=torch.bool))


def found(boxes: list[list[float]], scores: list[float], labels: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    return (torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(scores),
            torch.tensor(labels, dtype=torch.int64))


@pytest.fixture(scope="module")
def box_ap():
    pytest.importorskip("pycocotools", reason="the detection metrics are computed by pycocotools")
    from ssl_bench.plugins.evaluators.detection_metrics import box_ap

    return box_ap


A, B = [4.0, 4.0, 20.0, 20.0], [30.0, 30.0, 60.0, 50.0]
FAR = [40.0, 0.0, 50.0, 10.0]
"""Two objects and a box that overlaps neither (IoU 0)."""


def test_perfect_detections_score_100(box_ap):
    truth = [objects([A, B], [0, 1]), objects([B], [0])]
    dets = [found([A, B], [0.9, 0.8], [0, 1]), found([B], [0.7], [0])]
    assert box_ap(truth, dets, 2, (64, 64)) == pytest.approx({"ap": 100.0, "ap50": 100.0, "ap75": 100.0})


def test_one_of_two_objects_found_at_a_known_score_order(box_ap):
    # Class 0 has two objects, A and B. The true detection of A ranked first: precision 1 up to recall 0.5,
    # then nothing more is found. COCO's 101-point interpolation takes the best precision at recall >= r for
    # r = 0, 0.01, ..., 1: it is 1 for the 51 points r <= 0.5 and 0 for the 50 others: AP = 51 / 101.
    truth = [objects([A, B], [0, 0])]
    first = box_ap(truth, [found([A, FAR], [0.9, 0.8], [0, 0])], 2, (64, 64))
    assert first == pytest.approx(dict.fromkeys(("ap", "ap50", "ap75"), 100 * 51 / 101))
    # The false detection ranked first: precision 0 at recall 0, then 1/2 at recall 0.5, so the interpolated
    # precision is 1/2 for the 51 points r <= 0.5: AP = 0.5 * 51 / 101, half the above.
    second = box_ap(truth, [found([A, FAR], [0.8, 0.9], [0, 0])], 2, (64, 64))
    assert second == pytest.approx(dict.fromkeys(("ap", "ap50", "ap75"), 50 * 51 / 101))


def test_iou_thresholds(box_ap):
    # A box covering 62% of the object (IoU 0.62) matches at IoU 0.50, 0.55 and 0.60, not at 0.65 .. 0.95:
    # AP50 100, AP75 0, and AP (the mean over the ten thresholds) 3 / 10 of 100.
    truth = [objects([[0.0, 0.0, 10.0, 10.0]], [1])]
    out = box_ap(truth, [found([[0.0, 0.0, 10.0, 6.2]], [0.9], [1])], 2, (16, 16))
    assert out == pytest.approx({"ap": 30.0, "ap50": 100.0, "ap75": 0.0})


def test_ignored_objects_are_no_positives_and_detections_on_them_no_false_positives(box_ap):
    dets = [found([B, A], [0.9, 0.8], [0, 0])]
    ignored = box_ap([objects([A, B], [0, 0], [False, True])], dets, 1, (64, 64))
    assert ignored["ap50"] == pytest.approx(100.0)
    # Without B at all, the detection on B is a false positive ranked first: precision 1/2 at every recall.
    absent = box_ap([objects([A], [0])], dets, 1, (64, 64))
    assert absent["ap50"] == pytest.approx(50.0)


def test_no_detections_score_zero_and_no_objects_is_an_error(box_ap):
    empty = found([], [], [])
    assert box_ap([objects([A], [0])], [empty], 2, (64, 64)) == {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    with pytest.raises(ValueError, match="no object"):
        box_ap([objects([A], [0], [True])], [empty], 2, (64, 64))


def shapes_task(encoder: nn.Module, n_train: int = 16, n_test: int = 8, seed: int = 0) -> EvalTask:
    ds = ShapesDetection(ShapesDetection.Params(n_train=n_train, n_test=n_test, image_size=32, max_objects=2))
    ctx = None  # an embedded dataset reads no files
    train, test = ds.load("train", ctx), ds.load("test", ctx)  # type: ignore[arg-type]
    return EvalTask(encoder=encoder, fit=train, target=test, num_classes=train.num_classes,
                    features=lambda s: torch.zeros(len(s), 1), device=torch.device("cpu"), seed=seed)


def encoder(width: int = 8, seed: int = 0, stages: int = 3) -> ConvNetSmall:
    torch.manual_seed(seed)
    return ConvNetSmall(ConvNetSmall.Params(width=width, stages=stages)).eval()


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_keeps_every_backbone_weight_and_fine_tuning_changes_them(freeze):
    enc = encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    task = shapes_task(enc)
    ev = Detection(Detection.Params(freeze=freeze, **TINY))
    model, diverged = ev.train_detector(task, {"lr": 0.02})
    assert not diverged
    trained = model.backbone.backbone  # the copy inside the detector
    assert trained is not enc
    assert same_state(trained, enc) is freeze, "frozen: every weight and BN statistic kept; fine-tuned: changed"
    if freeze:
        assert not any(p.requires_grad for p in trained.parameters())
    fpn_start = Detection(Detection.Params(freeze=freeze, **{**TINY, "steps": 1}))
    assert not same_state(model.backbone.fpn, fpn_start.train_detector(task, {"lr": 1e-12})[0].backbone.fpn), (
        "the pyramid learns in both modes")
    ev.evaluate(task, {"lr": 0.02})
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items()), "task.encoder was modified"


def test_metrics_are_percent_and_deterministic():
    pytest.importorskip("pycocotools", reason="the detection metrics are computed by pycocotools")
    task = shapes_task(encoder())
    ev = Detection(Detection.Params(**TINY))
    first, second = ev.evaluate(task, {}), ev.evaluate(task, {})
    assert set(first) == {"ap", "ap50", "ap75"} and first == second
    assert all(0 <= v <= 100 and math.isfinite(v) for v in first.values())


def test_backbone_without_stages_is_one_clear_error():
    class Flat(ConvNetSmall):
        name = "flat_net"

        def stage_modules(self) -> list[nn.Module]:
            return [self]

    torch.manual_seed(0)
    task = shapes_task(Flat(ConvNetSmall.Params(width=4, stages=2)))
    with pytest.raises(BenchError, match="backbone 'flat_net' has no stages"):
        Detection(Detection.Params(**TINY)).evaluate(task, {})


def test_a_set_without_boxes_is_a_data_error():
    task = shapes_task(encoder())
    plain = task.fit.subset(torch.arange(len(task.fit)))
    object.__setattr__(plain, "targets", None)
    task.fit = plain
    with pytest.raises(DataError, match="no boxes"):
        Detection(Detection.Params(**TINY)).evaluate(task, {})


def test_pyramid_reads_stage_channels_and_copies_outputs_rewritten_in_place():
    torch.manual_seed(0)
    net = ResNet18(ResNet18.Params()).eval()
    probe = torch.zeros(1, 3, 64, 64)
    four = StagePyramid(net, 4, 16, probe, frozen=True)
    assert four.picked == [1, 2, 3, 4] and four.copied == [False] * 4  # layer1..layer4 (C2..C5)
    assert [m.in_channels for m in four.fpn.inner_blocks.modules() if isinstance(m, nn.Conv2d)] == [64, 128, 256, 512]
    maps = four(probe)
    assert list(maps) == ["0", "1", "2", "3", "pool"]
    assert [tuple(m.shape[-2:]) for m in maps.values()] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    # The stem's last module is bn1, whose output ResNet's forward then rewrites with an in-place ReLU.
    five = StagePyramid(net, 5, 16, probe, frozen=True)
    assert five.picked == [0, 1, 2, 3, 4] and five.copied == [True, False, False, False, False]


def test_default_anchors_follow_fpn_at_800_px():
    assert default_anchors(800, 5) == (32.0, 64.0, 128.0, 256.0, 512.0)
    assert default_anchors(64, 4) == pytest.approx((5.12, 10.24, 20.48, 40.96))  # the coarsest four, scaled
    assert default_anchors(800, 6)[-1] == 1024.0


def test_lr_schedule_warms_up_then_steps_down_as_moco():
    ev = Detection(Detection.Params())  # 24k steps, decays after 18k and 22k, 100 warm-up steps
    assert ev.lr_factor(0) == pytest.approx(0.001)
    assert ev.lr_factor(50) == pytest.approx(0.001 + 0.999 * 0.5)
    assert [ev.lr_factor(s) for s in (100, 17999, 18000, 21999, 22000, 23999)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])


def test_flipped_batches_flip_their_boxes():
    image = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    image[..., 4:12, 2:10] = 255  # rows 4..11, columns 2..9
    from ssl_bench.harness import ImageSet

    data = ImageSet(image, torch.zeros(1, dtype=torch.int64), ("a", "b"), "k",
                    targets=(objects([[2.0, 4.0, 10.0, 12.0]], [1]),))
    ev = Detection(Detection.Params(**TINY))
    seen = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        (img,), (target,) = ev.batch(data, torch.tensor([0]), g, torch.device("cpu"))
        cols = img[0].amax(0).nonzero().flatten()
        rows = img[0].amax(1).nonzero().flatten()
        pixels = [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]
        assert target["boxes"].tolist() == [pixels] and target["labels"].tolist() == [2]  # 0 is background
        seen.add(pixels[0])
    assert seen == {2.0, 22.0}, "both the plain and the flipped image were drawn"


@pytest.mark.slow
def test_a_planted_good_encoder_beats_random_init_on_shapes_detection():
    pytest.importorskip("pycocotools", reason="the detection metrics are computed by pycocotools")
    good, random = supervised_encoder(), encoder(width=8, seed=2, stages=4)  # one architecture, two inits
    ds = ShapesDetection(ShapesDetection.Params(n_train=256, n_test=32))
    train, test = ds.load("train", None), ds.load("test", None)  # type: ignore[arg-type]
    ev = Detection(Detection.Params(**{**TINY, "freeze": True, "steps": 60, "batch_size": 8, "fpn_channels": 32,
                                       "box_head_dim": 128, "rpn_pre_nms_top_n": 200, "rpn_post_nms_top_n": 100,
                                       "rois_per_image": 64, "warmup_steps": 10}))
    scores = {}
    for name, enc in (("good", good), ("random", random)):
        task = EvalTask(encoder=enc, fit=train, target=test, num_classes=3, features=lambda s: torch.zeros(len(s), 1),
                        device=torch.device("cpu"), seed=0)
        scores[name] = ev.evaluate(task, {"lr": 0.05})["ap50"]
    assert math.isfinite(scores["good"]) and scores["good"] > 10, scores
    assert math.isnan(scores["random"]) or scores["good"] > scores["random"] + 5, scores  # NaN: random diverged


def supervised_encoder(steps: int = 300) -> ConvNetSmall:
    """convnet_small (width 8) trained to classify single shapes (shapes_detection, one object, another seed, 32 px)."""
    single = ShapesDetection(ShapesDetection.Params(n_train=1024, n_test=8, max_objects=1, seed=1, image_size=32))
    data = single.load("train", None)  # type: ignore[arg-type]
    torch.manual_seed(1)
    net = ConvNetSmall(ConvNetSmall.Params(width=8))
    head = nn.Linear(net.feature_dim, 3)
    opt = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(data), (32,), generator=g)
        loss = nn.functional.cross_entropy(head(net(normalize(to_float(data.images[idx])))), data.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def test_rows_carry_the_protocol(tmp_path: Path, monkeypatch):
    pytest.importorskip("pycocotools", reason="the detection metrics are computed by pycocotools")
    from ssl_bench.harness.cli import main

    params = ", ".join(f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in TINY.items())
    path = tmp_path / "det.toml"
    path.write_text(f"""
name = "det"
seeds = [0]

[pretrain]
dataset = {{ name = "shapes_detection", params = {{ n_train = 24, n_test = 8, image_size = 32 }} }}
backbone = {{ name = "convnet_small", params = {{ width = 4, stages = 3 }} }}
epochs = 1
batch_size = 8

[[methods]]
name = "random_init"

[[evaluations]]
name = "detection"
params = {{ freeze = true, {params} }}
sweep = {{ lr = [0.02], weight_decay = [0.0001] }}
""")
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--threads", "1"]) == 0
    rows = [r for f in (tmp_path / "out" / "results").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert {r["metric"] for r in rows} == {"ap", "ap50", "ap75"}
    assert all(r["evaluator"] == "detection" and r["dataset"] == "shapes_detection" for r in rows)
    protocol = json.loads(rows[0]["evaluator_params"])
    assert protocol["freeze"] is True and protocol["steps"] == TINY["steps"] and protocol["levels"] == 3
    assert json.loads(rows[0]["hparams"]) == {"lr": 0.02, "weight_decay": 0.0001}
    registry = collect(make_plugin_manager(load_entrypoints=False))
    assert registry.get("evaluators", "detection").selection_metric == "ap"
