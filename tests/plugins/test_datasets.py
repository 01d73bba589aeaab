"""Tests of the built-in dataset plugins: shapes, digits, parquet, cifar10/cifar100."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pluggy
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError
from torchvision.io import encode_jpeg, encode_png

import ssl_bench.harness.hookspecs
import ssl_bench.harness.plugins
from ssl_bench.harness.components import DataContext
from ssl_bench.harness.data import ImageSet
from ssl_bench.harness.errors import DataError
from ssl_bench.plugins.datasets import cifar, digits, parquet, shapes
from ssl_bench.plugins.datasets.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES, Cifar10, Cifar100
from ssl_bench.plugins.datasets.digits import Digits
from ssl_bench.plugins.datasets.parquet import ParquetImages, decode_images, load_parquet_split
from ssl_bench.plugins.datasets.shapes import Shapes
from tests.conftest import DATA_ROOT

SHARED_DATA = DATA_ROOT  # $BENCH_DATA_ROOT, else ../shared/data
CIFAR_DIR = SHARED_DATA / "cifar10"
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")  # encode_png
needs_cifar = pytest.mark.skipif(not (CIFAR_DIR / "test.parquet").is_file(),
                                 reason=f"no CIFAR-10 Parquet at {CIFAR_DIR}")


@pytest.fixture
def ctx(tmp_path: Path) -> DataContext:
    (tmp_path / "data").mkdir()
    return DataContext(root=tmp_path / "data", cache_dir=tmp_path / "cache")


def check_imageset(ds: ImageSet, n: int, size: int, num_classes: int) -> None:
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (n, 3, size, size)
    assert ds.labels.dtype == torch.int64 and ds.labels.shape == (n,)
    assert 0 <= int(ds.labels.min()) and int(ds.labels.max()) < num_classes == len(ds.classes)


def test_registration() -> None:
    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(ssl_bench.harness.hookspecs)
    for module in (shapes, digits, parquet, cifar):
        pm.register(module)
    registry = ssl_bench.harness.plugins.collect(pm)
    assert registry.names("datasets") == ["cifar10", "cifar100", "digits", "parquet", "shapes"]


# shapes ------------------------------------------------------------------------------------------

def test_shapes_splits_are_balanced_and_well_formed(ctx: DataContext) -> None:
    data = Shapes(Shapes.Params(n_train=500, n_test=100, image_size=24))
    train, test = data.load("train", ctx), data.load("test", ctx)
    check_imageset(train, 500, 24, 10)
    check_imageset(test, 100, 24, 10)
    assert torch.bincount(train.labels).tolist() == [50] * 10
    assert not torch.equal(train.images[:100], test.images)
    assert train.key != test.key and train.key.startswith("shapes:")


def test_shapes_default_size_generates_10k_balanced(ctx: DataContext) -> None:
    train = Shapes(Shapes.Params()).load("train", ctx)
    check_imageset(train, 10000, 32, 10)
    assert torch.bincount(train.labels).tolist() == [1000] * 10
    assert train.images.float().std() > 40  # colourful, not blank


def test_shapes_is_deterministic_in_its_seed(ctx: DataContext) -> None:
    a = Shapes(Shapes.Params(n_train=200)).load("train", ctx)
    b = Shapes(Shapes.Params(n_train=200)).load("train", ctx)
    c = Shapes(Shapes.Params(n_train=200, seed=1)).load("train", ctx)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.key == b.key
    assert not torch.equal(a.images, c.images) and a.key != c.key


def test_shapes_is_not_solved_by_raw_pixels(ctx: DataContext) -> None:
    data = Shapes(Shapes.Params(n_train=2000, n_test=500))
    train, test = data.load("train", ctx), data.load("test", ctx)
    x, xt = train.images.flatten(1).float(), test.images.flatten(1).float()
    centroids = torch.stack([x[train.labels == c].mean(0) for c in range(10)])
    accuracy = (torch.cdist(xt, centroids).argmin(1) == test.labels).float().mean()
    assert accuracy < 0.3  # nearest class mean on pixels is near chance (0.1)


def test_shapes_errors(ctx: DataContext) -> None:
    with pytest.raises(DataError, match=r"unknown split 'val'; available: train, test"):
        Shapes(Shapes.Params(n_train=10)).load("val", ctx)
    with pytest.raises(ValidationError):
        Shapes.Params(n_train=0)
    with pytest.raises(ValidationError):
        Shapes.Params(colour=True)


# digits ------------------------------------------------------------------------------------------

def test_digits_stratified_split(ctx: DataContext) -> None:
    data = Digits(Digits.Params())
    train, test = data.load("train", ctx), data.load("test", ctx)
    assert len(train) + len(test) == 1797 and 430 <= len(test) <= 470
    check_imageset(train, len(train), 32, 10)
    check_imageset(test, len(test), 32, 10)
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # grey as RGB
    assert torch.bincount(test.labels, minlength=10).min() >= 40
    assert train.classes == tuple("0123456789")
    again = Digits(Digits.Params()).load("test", ctx)
    assert torch.equal(again.images, test.images) and again.key == test.key
    other = Digits(Digits.Params(seed=1, image_size=16)).load("test", ctx)
    assert other.images.shape[-1] == 16 and other.key != test.key
    with pytest.raises(DataError, match="unknown split 'val'"):
        data.load("val", ctx)


# parquet -----------------------------------------------------------------------------------------

def write_parquet(file: Path, images: list[torch.Tensor], labels: list[int], *, fmt: str = "png",
                  blobs: dict[int, bytes] | None = None) -> None:
    """Write a tiny HF-style Parquet file; ``blobs`` replaces the bytes of some rows."""
    encode = encode_png if fmt == "png" else encode_jpeg
    rows = [bytes(encode(img).numpy().tobytes()) for img in images]
    for i, blob in (blobs or {}).items():
        rows[i] = blob
    img = pa.array([{"bytes": b, "path": f"c{lb}/{i:04d}.{fmt}"} for i, (b, lb) in enumerate(zip(rows, labels))])
    file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"img": img, "label": pa.array(labels, pa.int64())}), file)


def random_images(n: int, size: int = 8, channels: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return list(torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8))


def test_parquet_loads_splits_lossless(ctx: DataContext) -> None:
    imgs = random_images(6)
    write_parquet(ctx.root / "toy/train.parquet", imgs, [0, 1, 2, 0, 1, 2])
    write_parquet(ctx.root / "toy/test.parquet", imgs[:2], [3, 0])
    data = ParquetImages(ParquetImages.Params(path="toy"))  # relative to the data root
    train = data.load("train", ctx)
    check_imageset(train, 6, 8, 4)  # label 3 occurs only in test; classes cover both splits
    assert torch.equal(train.images, torch.stack(imgs)) and train.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert train.classes == ("0", "1", "2", "3")
    named = ParquetImages(ParquetImages.Params(path=str(ctx.root / "toy"), classes=("a", "b", "c", "d")))
    assert named.load("test", ctx).classes == ("a", "b", "c", "d")
    with pytest.raises(DataError, match="labels .* span 0..3 but there are 2 classes"):
        ParquetImages(ParquetImages.Params(path="toy", classes=("a", "b"))).load("test", ctx)


def test_parquet_grey_png_shards_and_sizes(ctx: DataContext) -> None:
    write_parquet(ctx.root / "g/train-00000-of-00002.parquet", random_images(2, channels=1), [0, 1])
    write_parquet(ctx.root / "g/train-00001-of-00002.parquet", random_images(3, size=12, seed=1), [1, 1, 0])
    data = ParquetImages(ParquetImages.Params(path="g"))
    with pytest.raises(DataError, match=r"train-00001-of-00002.parquet.*\(3, 12, 12\).*image_size"):
        data.load("train", ctx)
    train = ParquetImages(ParquetImages.Params(path="g", image_size=10)).load("train", ctx)
    check_imageset(train, 5, 10, 2)


def test_parquet_cache_hit(ctx: DataContext, monkeypatch: pytest.MonkeyPatch) -> None:
    write_parquet(ctx.root / "toy/train.parquet", random_images(4), [0, 1, 0, 1], fmt="jpeg")
    data = ParquetImages(ParquetImages.Params(path="toy"))
    first = data.load("train", ctx)
    assert len(list(ctx.cache_dir.glob("parquet-train-*.pt"))) == 1

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(parquet, "_read_split", no_decoding)
    second = data.load("train", ctx)
    assert torch.equal(first.images, second.images) and first.key == second.key


def test_parquet_errors(ctx: DataContext) -> None:
    with pytest.raises(DataError, match=r"folder .*nowhere not found.*--data-root or BENCH_DATA_ROOT"):
        ParquetImages(ParquetImages.Params(path="nowhere")).load("train", ctx)
    write_parquet(ctx.root / "toy/train.parquet", random_images(2), [0, 1])
    with pytest.raises(DataError, match=r"no split 'test' in .*toy \(expected test.parquet\); available: train"):
        ParquetImages(ParquetImages.Params(path="toy")).load("test", ctx)
    with pytest.raises(DataError, match=r"no column 'image'; columns: img, label"):
        ParquetImages(ParquetImages.Params(path="toy", image_column="image")).load("train", ctx)
    (ctx.root / "toy/test.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"test.parquet: not a readable Parquet file"):
        ParquetImages(ParquetImages.Params(path="toy")).load("test", ctx)


@pytest.mark.parametrize("blob", [b"not an image at all", None], ids=["garbage", "truncated-jpeg"])
def test_parquet_corrupt_image_names_file_and_row(ctx: DataContext, blob: bytes | None) -> None:
    imgs = random_images(3)
    if blob is None:
        blob = bytes(encode_jpeg(imgs[2]).numpy().tobytes())[:60]
    file = ctx.root / "bad/train.parquet"
    write_parquet(file, imgs, [0, 1, 2], fmt="jpeg", blobs={2: blob})
    with pytest.raises(DataError, match=rf"{file}: row 2 \(path c2/0002.jpeg\): corrupt image"):
        ParquetImages(ParquetImages.Params(path="bad")).load("train", ctx)


@needs_cifar
def test_decode_first_rows_of_real_cifar() -> None:
    batch = next(pq.ParquetFile(CIFAR_DIR / "train.parquet").iter_batches(batch_size=64))
    blobs = [row["bytes"] for row in batch.column("img").to_pylist()]
    images = decode_images(blobs, lambda i: f"row {i}")
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.uint8
    assert 60 < images.float().mean() < 200 and batch.column("label").to_pylist() == [0] * 64


@needs_cifar
def test_load_real_cifar_test_split(tmp_path: Path) -> None:
    images, labels = load_parquet_split(CIFAR_DIR / "test.parquet", "img", "label", tmp_path)
    assert images.shape == (10000, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [1000] * 10
    ctx = DataContext(root=SHARED_DATA, cache_dir=tmp_path)  # the cifar10 plugin reads the same cache
    test = Cifar10(Cifar10.Params()).load("test", ctx)
    assert test.classes == CIFAR10_CLASSES and torch.equal(test.images, images)
    assert test.key.startswith("cifar10:parquet:") and test.key.endswith(":test")


# cifar -------------------------------------------------------------------------------------------

def test_cifar_missing_data_and_unknown_split(ctx: DataContext) -> None:
    with pytest.raises(DataError, match=r"cifar10: no data found; expected .*/cifar10/\{train,test\}.parquet .*"
                                        r"cifar-10-batches-py; set --data-root or BENCH_DATA_ROOT, or download = true"):
        Cifar10(Cifar10.Params()).load("train", ctx)
    with pytest.raises(DataError, match="cifar100: unknown split 'val'; available: train, test"):
        Cifar100(Cifar100.Params()).load("val", ctx)


def test_cifar_torchvision_layout(ctx: DataContext, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)  # our files are fakes
    folder = ctx.root / "cifar-10-batches-py"
    folder.mkdir()
    images = torch.stack(random_images(4, size=32))
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": images.flatten(1).numpy(), "labels": [9, 0, 3, 3]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES)}, f)
    test = Cifar10(Cifar10.Params()).load("test", ctx)
    assert torch.equal(test.images, images) and test.labels.tolist() == [9, 0, 3, 3]
    assert test.key == "cifar10:torchvision:test" and test.classes == CIFAR10_CLASSES
    with pytest.raises(DataError, match="cannot read the torchvision layout"):
        Cifar10(Cifar10.Params()).load("train", ctx)  # no data_batch_1..5 here


def test_cifar100_class_names() -> None:
    assert len(CIFAR100_CLASSES) == 100 == len(set(CIFAR100_CLASSES))
    assert list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES) and np.isin("aquarium_fish", CIFAR100_CLASSES)
