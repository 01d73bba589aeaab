"""The detection datasets: shapes_detection's boxes, and the VOC and COCO parsers on tiny fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_bench.harness import BoxTargets, DataContext, DataError, ImageSet
from ssl_bench.harness.data import balanced_subset, stratified_split
from ssl_bench.harness.plugins import collect, make_plugin_manager
from ssl_bench.harness.testing import check_dataset
from ssl_bench.plugins.datasets.shapes import PALETTE
from ssl_bench.plugins.datasets.shapes_detection import ShapesDetection

REGISTRY = collect(make_plugin_manager(load_entrypoints=False))


@pytest.fixture
def ctx(tmp_path: Path) -> DataContext:
    (tmp_path / "data").mkdir()
    return DataContext(root=tmp_path / "data", cache_dir=tmp_path / "cache")


def load(name: str, split: str, ctx: DataContext, **params: object) -> ImageSet:
    cls = REGISTRY.get("datasets", name)
    return cls(cls.Params(**params)).load(split, ctx)  # type: ignore[no-any-return]


def test_box_targets_and_image_sets_check_their_shapes():
    with pytest.raises(ValueError, match="boxes must be float"):
        BoxTargets(torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="one BoxTargets per row"):
        ImageSet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), ("a", "b"), "k",
                 targets=())
    plain = ImageSet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), ("a", "b"), "k")
    assert plain.targets is None and plain.subset(torch.tensor([1])).targets is None


def test_shapes_detection_conforms_and_is_a_pure_function_of_its_params(ctx):
    check_dataset(REGISTRY, "shapes_detection", {"n_train": 12, "n_test": 6}, ctx)
    a, b = load("shapes_detection", "train", ctx, n_train=12), load("shapes_detection", "train", ctx, n_train=12)
    assert torch.equal(a.images, b.images) and all(torch.equal(x.boxes, y.boxes) for x, y in zip(a.targets, b.targets))
    other = load("shapes_detection", "train", ctx, n_train=12, seed=1)
    assert not torch.equal(a.images, other.images)
    with pytest.raises(ValueError, match="two or more distinct names"):
        ShapesDetection.Params(classes=("circle", "hexagon"))


def test_shapes_detection_boxes_are_tight_around_the_only_foreground():
    size = 64
    data = load("shapes_detection", "train", None, n_train=40, image_size=size)  # type: ignore[arg-type]
    counts = [len(t) for t in data.targets]
    assert min(counts) >= 1 and max(counts) <= 3 and len(set(counts)) > 1
    for img, t, label in zip(data.images.float() / 255, data.targets, data.labels.tolist()):
        inside = torch.zeros(size, size, dtype=torch.bool)
        for x1, y1, x2, y2 in t.boxes.long().tolist():
            assert 0 <= x1 < x2 <= size and 0 <= y1 < y2 <= size
            assert not inside[y1:y2, x1:x2].any(), "shapes never overlap"
            inside[y1:y2, x1:x2] = True
        background = (img[:, ~inside].T[:, None] - PALETTE[None]).abs().amax(-1).mean(0).argmin()
        foreground = (img - PALETTE[background][:, None, None]).abs().amax(0) > 0.4  # (H, W)
        assert foreground[~inside].float().mean() < 0.01, "no shape outside the boxes"
        for x1, y1, x2, y2 in t.boxes.long().tolist():  # a shape touches every side of its box
            box = foreground[y1:y2, x1:x2]
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
        areas = (t.boxes[:, 2] - t.boxes[:, 0]) * (t.boxes[:, 3] - t.boxes[:, 1])
        assert label == int(t.labels[areas.argmax()]), "an image is labelled by its largest shape"


def test_subsets_carry_the_boxes_of_their_rows():
    data = load("shapes_detection", "train", None, n_train=30)  # type: ignore[arg-type]
    rest, val = stratified_split(data.labels, 0.25, seed=0)
    for idx in (rest, val, balanced_subset(data.labels, 9, seed=0)):
        for sub in (data.subset(idx), data.subset(idx, key="other")):
            assert len(sub.targets) == len(idx)
            assert all(sub.targets[k] is data.targets[i] for k, i in enumerate(idx.tolist()))


def write_jpeg(path: Path, width: int, height: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def voc_xml(width: int, height: int, objects: list[tuple[str, int, tuple[int, int, int, int]]]) -> str:
    body = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, d, b in objects)
    size = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
    return f"<annotation>{size}{body}</annotation>"


def write_voc(root: Path) -> None:
    """VOC2007 trainval (2 images) and test (1), VOC2012 trainval (1), 40 x 20 px."""
    images = {
        ("2007", "000001"): [("dog", 0, (5, 3, 24, 12)), ("person", 1, (1, 1, 40, 20))],
        ("2007", "000002"): [("cat", 0, (11, 1, 20, 10)), ("dog", 0, (21, 11, 30, 20))],
        ("2007", "000003"): [("car", 0, (1, 1, 20, 20))],
        ("2012", "2012_000001"): [("bird", 0, (2, 2, 10, 10))],
    }
    sets = {("2007", "trainval"): ["000001", "000002"], ("2007", "test"): ["000003"],
            ("2012", "trainval"): ["2012_000001"]}
    for n, ((year, i), objs) in enumerate(images.items()):
        folder = root / "VOCdevkit" / f"VOC{year}"
        write_jpeg(folder / "JPEGImages" / f"{i}.jpg", 40, 20, n)
        (folder / "Annotations").mkdir(parents=True, exist_ok=True)
        (folder / "Annotations" / f"{i}.xml").write_text(voc_xml(40, 20, objs))
    for (year, name), ids in sets.items():
        listing = root / "VOCdevkit" / f"VOC{year}" / "ImageSets" / "Main" / f"{name}.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("\n".join(ids) + "\n")


def test_voc_parses_boxes_difficult_flags_and_years(ctx):
    write_voc(ctx.root)
    train = load("voc", "train", ctx, image_size=20)
    assert len(train) == 3 and train.images.shape == (3, 3, 20, 20) and len(train.classes) == 20
    first = train.targets[0]  # 000001: 40 x 20 -> 20 x 20, so x halves; VOC's 1-based corners move by one
    assert first.boxes.tolist() == [[2.0, 2.0, 12.0, 12.0], [0.0, 0.0, 20.0, 20.0]]
    assert [train.classes[c] for c in first.labels] == ["dog", "person"] and first.ignore.tolist() == [False, True]
    assert train.classes[int(train.labels[0])] == "dog", "the largest object that is not difficult"
    assert train.classes[int(train.labels[2])] == "bird", "VOC2012 trainval follows VOC2007 trainval"
    test = load("voc", "test", ctx, image_size=20)
    assert len(test) == 1 and [test.classes[c] for c in test.targets[0].labels] == ["car"]
    only_2007 = load("voc", "train", ctx, image_size=20, train_sets=("2007/trainval",))
    assert len(only_2007) == 2 and only_2007.key != train.key
    check_dataset(REGISTRY, "voc", {"image_size": 20}, ctx)


def test_voc_errors_name_what_is_wrong(ctx):
    with pytest.raises(DataError) as missing:
        load("voc", "train", ctx)
    message = str(missing.value)
    assert message.startswith("voc: no data for split 'train': expected the torchvision VOCDetection layout")
    assert str(ctx.root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "trainval.txt") in message
    assert "--data-root or BENCH_DATA_ROOT" in message and "download = true" in message
    write_voc(ctx.root)
    bad = ctx.root / "VOCdevkit" / "VOC2007" / "Annotations" / "000002.xml"
    bad.write_text(voc_xml(40, 20, [("unicorn", 0, (1, 1, 5, 5))]))
    with pytest.raises(DataError, match=r"000002\.xml: object class 'unicorn' is not one of VOC's 20 classes"):
        load("voc", "train", ctx, image_size=20)
    (ctx.root / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000003.jpg").unlink()
    with pytest.raises(DataError, match=r"000003\.jpg is listed in the image sets of split 'test' but missing"):
        load("voc", "test", ctx, image_size=20)
    with pytest.raises(ValueError, match="expected 'year/set'"):
        REGISTRY.get("datasets", "voc").Params(train_sets=("trainval",))


def write_coco(root: Path) -> None:
    """train2017: 3 images (one without objects), val2017: 2 (one without objects); categories 1 and 3."""
    categories = [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}]
    for image_set, n in (("train2017", 3), ("val2017", 2)):
        images, annotations = [], []
        for i in range(n):
            write_jpeg(root / "coco" / image_set / f"{i:012d}.jpg", 40, 20, i)
            images.append({"id": 10 + i, "file_name": f"{i:012d}.jpg", "width": 40, "height": 20})
        annotations.append({"id": 1, "image_id": 10, "category_id": 1, "bbox": [4, 2, 20, 10], "iscrowd": 0})
        annotations.append({"id": 2, "image_id": 10, "category_id": 3, "bbox": [0, 0, 40, 20], "iscrowd": 1})
        if n == 3:
            annotations.append({"id": 3, "image_id": 11, "category_id": 3, "bbox": [10, 4, 8, 8], "iscrowd": 0})
        notes = root / "coco" / "annotations" / f"instances_{image_set}.json"
        notes.parent.mkdir(parents=True, exist_ok=True)
        notes.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def test_coco_parses_boxes_crowds_categories_and_empty_images(ctx):
    write_coco(ctx.root)
    train = load("coco", "train", ctx, image_size=20)
    assert train.classes == ("dog", "cat"), "categories in order of id"
    assert len(train) == 2, "the training image without objects is left out"
    first = train.targets[0]  # [4, 2, 20, 10] xywh -> xyxy (4, 2, 24, 12), x halved
    assert first.boxes.tolist() == [[2.0, 2.0, 12.0, 12.0], [0.0, 0.0, 20.0, 20.0]]
    assert first.labels.tolist() == [0, 1] and first.ignore.tolist() == [False, True]
    assert train.labels.tolist() == [0, 1]
    test = load("coco", "test", ctx, image_size=20)
    assert len(test) == 2 and len(test.targets[1]) == 0 and int(test.labels[1]) == 0, "test keeps empty images"
    check_dataset(REGISTRY, "coco", {"image_size": 20}, ctx)


def test_coco_errors_name_what_is_wrong(ctx):
    with pytest.raises(DataError) as missing:
        load("coco", "test", ctx)
    message = str(missing.value)
    assert message.startswith("coco: no data for split 'test': expected the COCO layout")
    assert str(ctx.root / "coco" / "annotations" / "instances_val2017.json") in message
    assert "cannot be downloaded automatically" in message
    write_coco(ctx.root)
    (ctx.root / "coco" / "annotations" / "instances_val2017.json").write_text("{\"images\": []}")
    with pytest.raises(DataError, match=r"instances_val2017\.json: not a COCO annotations file"):
        load("coco", "test", ctx)
