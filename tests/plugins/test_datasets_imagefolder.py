"""Tests of the `imagefolder` dataset, file decoding and its cache, and on_corrupt in `parquet`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from ssl_bench.harness.components import DataContext
from ssl_bench.harness.errors import DataError
from ssl_bench.plugins.datasets import decode
from ssl_bench.plugins.datasets.decode import decode_blob
from ssl_bench.plugins.datasets.imagefolder import ImageFolder
from ssl_bench.plugins.datasets.parquet import ParquetImages

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def ctx(tmp_path: Path) -> DataContext:
    (tmp_path / "data").mkdir()
    return DataContext(root=tmp_path / "data", cache_dir=tmp_path / "cache")


def write_image(file: Path, seed: int, size: tuple[int, int] = (12, 10), mode: str = "RGB") -> np.ndarray:
    """Write a random image with PIL (format from the suffix) and return its (H, W, 3) pixels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    file.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(file)
    return np.array(Image.open(file).convert("RGB"))


def write_folder(root: Path, counts: dict[str, int], seed: int = 0, suffix: str = ".png") -> None:
    """``root/<class>/<i>.png`` with ``counts[class]`` images each."""
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(root / name / f"{i:03d}{suffix}", seed * 1000 + c * 100 + i)


def load(ctx: DataContext, split: str, **params: object):  # noqa: ANN201 - an ImageSet
    return ImageFolder(ImageFolder.Params(**params)).load(split, ctx)  # type: ignore[arg-type]


def test_split_layout_is_lossless_and_classes_agree(ctx: DataContext) -> None:
    pixels = write_image(ctx.root / "toy/train/cat/a.png", 1, size=(8, 8))
    write_folder(ctx.root / "toy/train", {"dog": 2}, seed=1)
    write_folder(ctx.root / "toy/test", {"bird": 1, "dog": 1}, seed=2)  # 'bird' only in test
    write_folder(ctx.root / "toy/val", {"cat": 1}, seed=3)
    (ctx.root / "toy/train/dog/notes.txt").write_text("not an image")
    train = load(ctx, "train", path="toy", image_size=8)
    assert train.classes == ("bird", "cat", "dog") and train.labels.tolist() == [1, 2, 2]
    assert train.images.shape == (3, 3, 8, 8) and train.images.dtype == torch.uint8
    assert torch.equal(train.images[0], torch.from_numpy(pixels).permute(2, 0, 1))  # same size: no resampling
    test = load(ctx, "test", path=str(ctx.root / "toy"), image_size=8)  # absolute path works too
    assert test.labels.tolist() == [0, 2] and test.classes == train.classes
    assert len(load(ctx, "val", path="toy", image_size=8)) == 1
    assert train.key != test.key and train.key.startswith("imagefolder:folder:")


def test_single_layout_carves_a_seeded_stratified_test_split(ctx: DataContext) -> None:
    write_folder(ctx.root / "flat", {"a": 10, "b": 5})
    train, test = load(ctx, "train", path="flat", image_size=16), load(ctx, "test", path="flat", image_size=16)
    assert train.images.shape[1:] == (3, 16, 16)
    assert torch.bincount(test.labels).tolist() == [2, 1] and torch.bincount(train.labels).tolist() == [8, 4]
    assert not set(map(bytes, train.images.flatten(1).numpy())) & set(map(bytes, test.images.flatten(1).numpy()))
    again = load(ctx, "test", path="flat", image_size=16)
    other = load(ctx, "test", path="flat", image_size=16, seed=1)
    assert torch.equal(again.images, test.images) and again.key == test.key
    assert other.key != test.key
    with pytest.raises(DataError, match=r"imagefolder: no split 'val' in .*flat \(expected a subfolder val/\); "
                                        r"available: test, train"):
        load(ctx, "val", path="flat")


def test_classes_max_per_class_extensions_and_mixed_sizes(ctx: DataContext) -> None:
    write_folder(ctx.root / "f", {"a": 3, "b": 2, "c": 1})
    write_image(ctx.root / "f/a/big.jpg", 9, size=(20, 14))
    sub = load(ctx, "train", path="f", image_size=8, classes=("c", "a"), max_per_class=2, test_fraction=0.5)
    assert sub.classes == ("c", "a") and sorted(sub.labels.tolist()) == [0, 1]  # c: 1 row, a: 2 of 4 -> 1 train
    with pytest.raises(DataError, match=r"image is \(\d+, \d+\) but .* set params.image_size"):
        load(ctx, "train", path="f")
    assert len(load(ctx, "train", path="f", extensions=(".png",))) + len(load(ctx, "test", path="f",
                                                                            extensions=(".png",))) == 6
    with pytest.raises(DataError, match="no class folder zebra"):
        load(ctx, "train", path="f", classes=("zebra",))


def test_missing_folder_and_empty_folder(ctx: DataContext) -> None:
    with pytest.raises(DataError, match=r"imagefolder: folder .*nowhere not found .*--data-root or BENCH_DATA_ROOT"):
        load(ctx, "train", path="nowhere")
    (ctx.root / "empty/a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images .* in class folders below"):
        load(ctx, "train", path="empty")


def test_corrupt_image_fails_with_its_file_or_is_skipped(ctx: DataContext, caplog: pytest.LogCaptureFixture) -> None:
    write_folder(ctx.root / "c/train", {"a": 2, "b": 2})
    write_folder(ctx.root / "c/test", {"a": 1, "b": 1})
    bad = ctx.root / "c/train/b/zz_bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(DataError, match=r"c/train/b/zz_bad.png: corrupt image"):
        load(ctx, "train", path="c", image_size=8)
    with caplog.at_level(logging.WARNING, logger="bench.data"):
        train = load(ctx, "train", path="c", image_size=8, on_corrupt="skip")
    assert len(train) == 4 and train.labels.tolist() == [0, 0, 1, 1]
    assert "skipped 1 of 5 images" in caplog.text and "zz_bad.png" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bench.data"):
        load(ctx, "train", path="c", image_size=8, on_corrupt="skip")  # from the cache: still reported
    assert "skipped 1 of 5 images" in caplog.text


def test_second_load_reads_the_cache(ctx: DataContext, monkeypatch: pytest.MonkeyPatch) -> None:
    write_folder(ctx.root / "k", {"a": 3, "b": 3})
    first = load(ctx, "train", path="k", image_size=8)
    assert len(list(ctx.cache_dir.glob("imagefolder-k-8px-*.pt"))) == 1

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(decode, "decode_files", no_decoding)
    second = load(ctx, "train", path="k", image_size=8)
    assert torch.equal(first.images, second.images) and first.key == second.key
    with pytest.raises(AssertionError, match="decoded again"):
        load(ctx, "train", path="k", image_size=12)  # another resolution is another cache entry
    write_image(ctx.root / "k/a/000.png", 99)  # a changed source file invalidates the entry
    with pytest.raises(AssertionError, match="decoded again"):
        load(ctx, "train", path="k", image_size=8)


def test_decode_blob_reads_tiff_and_grey_through_pil(tmp_path: Path) -> None:
    pixels = write_image(tmp_path / "x.tif", 3)
    tiff = decode_blob((tmp_path / "x.tif").read_bytes(), "x.tif")  # torchvision has no TIFF decoder
    assert torch.equal(tiff, torch.from_numpy(pixels).permute(2, 0, 1))
    grey = decode_blob(_png_bytes(tmp_path), "g.png")
    assert grey.shape == (3, 4, 5) and grey.dtype == torch.uint8
    with pytest.raises(DataError, match="empty.png: no image bytes"):
        decode_blob(b"", "empty.png")


def _png_bytes(tmp_path: Path) -> bytes:
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "g.png")
    return (tmp_path / "g.png").read_bytes()


def test_parquet_on_corrupt_skip(ctx: DataContext, caplog: pytest.LogCaptureFixture) -> None:
    good = [_png_bytes(ctx.root)] * 3
    blobs = [good[0], b"garbage", good[1], None, good[2]]
    img = pa.array([None if b is None else {"bytes": b, "path": f"{i}.png"} for i, b in enumerate(blobs)])
    (ctx.root / "pq").mkdir()
    table = pa.table({"img": img, "label": pa.array([0, 1, 2, 3, 4], pa.int64())})
    pq.write_table(table, ctx.root / "pq/train.parquet")
    with pytest.raises(DataError, match=r"train.parquet: null values in column 'img'"):
        ParquetImages(ParquetImages.Params(path="pq", on_corrupt="error")).load("train", ctx)
    with caplog.at_level(logging.WARNING, logger="bench.data"):
        ds = ParquetImages(ParquetImages.Params(path="pq", on_corrupt="skip")).load("train", ctx)
    assert ds.labels.tolist() == [0, 2, 4] and ds.images.shape == (3, 3, 4, 5)
    assert "skipped 2 of 5 images" in caplog.text and "row 1, row 3" in caplog.text
