"""Tests of the data sources users bring: `unlabelled_folder`, `hf_disk` (save_to_disk) and `webdataset` shards."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from ssl_bench.harness.components import DataContext
from ssl_bench.harness.data import file_fingerprint, resize_uint8
from ssl_bench.harness.errors import DataError, SpecError
from ssl_bench.harness.pipeline.plan import make_plan
from ssl_bench.harness.pipeline.specs import load_benchmark
from ssl_bench.harness.testing import check_dataset
from ssl_bench.plugins.datasets.hf_disk import HfDisk
from ssl_bench.plugins.datasets.unlabelled_folder import UnlabelledFolder
from ssl_bench.plugins.datasets.webdataset_shards import WebDatasetShards
from tests.conftest import bench_cmd

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def ctx(tmp_path: Path) -> DataContext:
    (tmp_path / "data").mkdir()
    return DataContext(root=tmp_path / "data", cache_dir=tmp_path / "cache")


def pixels(seed: int, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    """Random RGB pixels (H, W, 3) of ``size`` (width, height)."""
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def png(seed: int, size: tuple[int, int] = (8, 8)) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels(seed, size)).save(out, format="PNG")
    return out.getvalue()


def chw(seed: int, size: tuple[int, int] = (8, 8)) -> torch.Tensor:
    """The pixels of ``png(seed, size)`` as the uint8 (3, H, W) a lossless decode gives."""
    return torch.from_numpy(pixels(seed, size)).permute(2, 0, 1)


# --- unlabelled_folder ---------------------------------------------------------------------------------------------


def write_photos(folder: Path) -> list[Path]:
    """Images at several depths, sizes and formats, plus files that are not images; returns the images sorted."""
    files = [folder / "b.png", folder / "a" / "x.png", folder / "a" / "deep" / "y.PNG", folder / "c.jpg"]
    for i, f in enumerate(files):
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels(i, (8 + 4 * i, 8))).save(f, format="JPEG" if f.suffix == ".jpg" else "PNG")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".thumbs").mkdir()
    Image.fromarray(pixels(9)).save(folder / ".thumbs" / "t.png")  # a hidden folder is skipped
    return sorted(files)


def unlabelled(ctx: DataContext, split: str = "train", **params: object):  # noqa: ANN201 - an ImageSet
    return UnlabelledFolder(UnlabelledFolder.Params(**params)).load(split, ctx)  # type: ignore[arg-type]


def test_unlabelled_folder_reads_every_image_below_it_as_one_class(ctx: DataContext) -> None:
    files = write_photos(ctx.root / "photos")
    data = unlabelled(ctx, path="photos", image_size=16)
    assert data.images.shape == (4, 3, 16, 16) and data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == [0, 0, 0, 0]
    assert data.classes == ("unlabelled",) and not data.mapped
    names = [f.relative_to(ctx.root / "photos").as_posix() for f in files]
    assert names == ["a/deep/y.PNG", "a/x.png", "b.png", "c.jpg"]
    for row, (seed, width) in enumerate([(2, 16), (1, 12), (0, 8)]):  # the PNGs, in path order, resized
        assert torch.equal(data.images[row], resize_uint8(chw(seed, (width, 8))[None], 16)[0])
    limited = unlabelled(ctx, path=str(ctx.root / "photos"), image_size=16, limit=2)  # an absolute path
    assert torch.equal(limited.images, data.images[:2]) and limited.key != data.key
    streamed = unlabelled(ctx, path="photos", image_size=16, stream=True)
    assert streamed.mapped and torch.equal(streamed.batch(torch.arange(4)), data.images)
    assert streamed.key == data.key  # stream changes how, not what


def test_unlabelled_folder_keeps_a_common_size_and_has_no_test_split(ctx: DataContext) -> None:
    for i in range(3):
        (ctx.root / "same").mkdir(exist_ok=True)
        Image.fromarray(pixels(i, (6, 5))).save(ctx.root / "same" / f"{i}.png")
    data = unlabelled(ctx, path="same")
    assert data.images.shape == (3, 3, 5, 6) and torch.equal(data.images[2], chw(2, (6, 5)))  # lossless
    with pytest.raises(DataError, match=r"unlabelled_folder: no split 'test'.*evaluate on a labelled dataset"):
        unlabelled(ctx, "test", path="same")
    write_photos(ctx.root / "mixed")
    with pytest.raises(DataError, match="set params.image_size"):
        unlabelled(ctx, path="mixed")


def test_unlabelled_folder_errors_name_the_path(ctx: DataContext) -> None:
    with pytest.raises(DataError, match=r"unlabelled_folder: folder .*nowhere not found \(params.path = 'nowhere', "
                                        r"data root .*\); set --data-root or BENCH_DATA_ROOT"):
        unlabelled(ctx, path="nowhere")
    (ctx.root / "empty").mkdir()
    (ctx.root / "empty" / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"no images \(.*\) below .*empty"):
        unlabelled(ctx, path="empty")


def test_unlabelled_folder_fingerprint_follows_its_files(ctx: DataContext) -> None:
    files = write_photos(ctx.root / "photos")
    ds = UnlabelledFolder(UnlabelledFolder.Params(path="photos", image_size=16))
    assert ds.fingerprint("train", ctx) == file_fingerprint(files)
    Image.fromarray(pixels(5)).save(ctx.root / "photos" / "d.png")
    assert ds.fingerprint("train", ctx) != file_fingerprint(files)


def test_unlabelled_folder_passes_the_conformance_check(bench_registry, ctx: DataContext) -> None:
    write_photos(ctx.root / "photos")
    check_dataset(bench_registry, "unlabelled_folder", params={"path": "photos", "image_size": 16}, ctx=ctx)


# --- hf_disk -------------------------------------------------------------------------------------------------------


@pytest.fixture
def hf():  # noqa: ANN201 - the datasets module
    datasets = pytest.importorskip("datasets", reason="hf_disk reads datasets saved by the `datasets` package")
    datasets.disable_progress_bars()
    return datasets


def hf_split(hf, seeds: list[int], labels: list[object] | None, label_feature: object = None):  # noqa: ANN001, ANN201
    """A Dataset of PNG images (pixels(seed)) with an Image feature and, when given, a label column."""
    columns: dict[str, list[object]] = {"image": [Image.open(io.BytesIO(png(s))) for s in seeds],
                                        "index": list(range(len(seeds)))}
    features = {"image": hf.Image(), "index": hf.Value("int64")}
    if labels is not None:
        columns["label"] = labels
        features["label"] = label_feature or hf.Value("int64")
    return hf.Dataset.from_dict(columns, features=hf.Features(features))


def hf_load(ctx: DataContext, split: str = "train", **params: object):  # noqa: ANN201 - an ImageSet
    return HfDisk(HfDisk.Params(**params)).load(split, ctx)  # type: ignore[arg-type]


def test_hf_disk_reads_a_dataset_dict_with_class_labels(hf, ctx: DataContext) -> None:
    names = hf.ClassLabel(names=["cat", "dog", "emu"])
    hf.DatasetDict({"train": hf_split(hf, [0, 1, 2, 3], [2, 0, 1, 0], names),
                    "validation": hf_split(hf, [4, 5], [1, 2], names)}).save_to_disk(str(ctx.root / "pets"))
    train = hf_load(ctx, path="pets", split_names={"test": "validation"})
    assert train.images.shape == (4, 3, 8, 8) and train.images.dtype == torch.uint8
    assert torch.equal(train.images[3], chw(3))  # lossless PNG at its own size: the exact pixels
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [2, 0, 1, 0]
    assert train.classes == ("cat", "dog", "emu")
    test = hf_load(ctx, "test", path="pets", split_names={"test": "validation"}, image_size=16)
    assert test.images.shape == (2, 3, 16, 16) and test.labels.tolist() == [1, 2] and test.key != train.key
    with pytest.raises(DataError, match=r"no split 'test' \(our 'test'\) in .*pets; it has train, validation: "
                                        r"map ours with params.split_names"):
        hf_load(ctx, "test", path="pets")


def test_hf_disk_plain_integer_and_string_labels_span_every_split(hf, ctx: DataContext) -> None:
    hf.DatasetDict({"train": hf_split(hf, [0, 1], [0, 1]), "test": hf_split(hf, [2], [4])}).save_to_disk(
        str(ctx.root / "ints"))
    assert hf_load(ctx, path="ints").classes == ("0", "1", "2", "3", "4")
    strings = hf.DatasetDict({"train": hf_split(hf, [0, 1, 2], ["owl", "bee", "owl"], hf.Value("string")),
                              "test": hf_split(hf, [3], ["ant"], hf.Value("string"))})
    strings.save_to_disk(str(ctx.root / "strings"))
    train = hf_load(ctx, path="strings")
    assert train.classes == ("ant", "bee", "owl") and train.labels.tolist() == [2, 1, 2]


def test_hf_disk_single_dataset_without_labels_is_unlabelled_train(hf, ctx: DataContext) -> None:
    hf_split(hf, [0, 1, 2], None).save_to_disk(str(ctx.root / "photos"))
    data = hf_load(ctx, path="photos")
    assert data.classes == ("unlabelled",) and data.labels.tolist() == [0, 0, 0]
    assert torch.equal(data.images[1], chw(1))
    with pytest.raises(DataError, match=r"holds a single Dataset, our 'train' split only \(no 'test'\)"):
        hf_load(ctx, "test", path="photos")
    with pytest.raises(DataError, match=r"no label column 'label'; columns: image, index"):
        hf_load(ctx, path="photos", label_column="label")  # asked for by name: not silently unlabelled
    assert not HfDisk(HfDisk.Params(path="photos", label_column="")).labelled
    with pytest.raises(DataError, match=r"no image column nope; columns: image, index"):
        hf_load(ctx, path="photos", image_column="nope")


def test_hf_disk_fingerprint_covers_the_saved_files(hf, ctx: DataContext) -> None:
    hf.DatasetDict({"train": hf_split(hf, [0, 1], [0, 1]), "test": hf_split(hf, [2], [1])}).save_to_disk(
        str(ctx.root / "d"))
    ds = HfDisk(HfDisk.Params(path="d"))
    folder = ctx.root / "d"
    expected = [folder / "dataset_dict.json", *sorted((folder / "train").iterdir())]
    assert {p.name for p in expected} >= {"dataset_dict.json", "state.json", "dataset_info.json"}
    assert any(p.suffix == ".arrow" for p in expected)
    assert ds.fingerprint("train", ctx) == file_fingerprint(expected)
    before = ds.fingerprint("train", ctx), ds.fingerprint("test", ctx)
    first = hf_load(ctx, path="d")
    hf.DatasetDict({"train": hf_split(hf, [7, 8], [1, 0]), "test": hf_split(hf, [2], [1])}).save_to_disk(
        str(ctx.root / "d2"))
    for f in (folder / "train").iterdir():  # the train split replaced in place
        f.write_bytes((ctx.root / "d2" / "train" / f.name).read_bytes())
    assert ds.fingerprint("train", ctx) != before[0] and ds.fingerprint("test", ctx) == before[1]
    again = hf_load(ctx, path="d")  # a changed file is a new cache entry, never the old images
    assert again.labels.tolist() == [1, 0] and not torch.equal(again.images, first.images)


def test_hf_disk_errors_name_the_path_and_the_extra(hf, ctx: DataContext, monkeypatch) -> None:
    with pytest.raises(DataError, match=r"hf_disk: folder .*gone not found \(params.path = 'gone'"):
        hf_load(ctx, path="gone")
    (ctx.root / "plain").mkdir()
    with pytest.raises(DataError, match=r"is not a dataset saved with save_to_disk \(expected dataset_dict.json"):
        hf_load(ctx, path="plain")
    hf_split(hf, [0], None).save_to_disk(str(ctx.root / "one"))
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(DataError, match=r"hf_disk: needs the 'datasets' package.*pip install \"ssl-bench\[hf\]\""):
        hf_load(ctx, path="one")


def test_hf_disk_passes_the_conformance_check(hf, bench_registry, ctx: DataContext) -> None:
    hf.DatasetDict({"train": hf_split(hf, [0, 1, 2], [0, 1, 0]), "test": hf_split(hf, [3, 4], [1, 0])}).save_to_disk(
        str(ctx.root / "d"))
    check_dataset(bench_registry, "hf_disk", params={"path": "d"}, ctx=ctx)


# --- webdataset ----------------------------------------------------------------------------------------------------


@pytest.fixture
def wds():  # noqa: ANN201 - the webdataset module
    return pytest.importorskip("webdataset", reason="the webdataset source reads tar shards with `webdataset`")


def write_shards(wds, folder: Path, name: str, samples: list[tuple[int, int | None]], per_shard: int = 3) -> None:  # noqa: ANN001
    """Shards ``folder/<name>-000000.tar``, ... of (seed, label) samples: a PNG and, when given, a ``.cls``."""
    folder.mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, len(samples), per_shard)):
        with wds.TarWriter(str(folder / f"{name}-{shard:06d}.tar")) as sink:
            for i, (seed, label) in enumerate(samples[start:start + per_shard], start):
                sample: dict[str, object] = {"__key__": f"{i:06d}", "png": png(seed, (10, 6))}
                if label is not None:
                    sample["cls"] = label
                sink.write(sample)


def wds_load(ctx: DataContext, split: str = "train", **params: object):  # noqa: ANN201 - an ImageSet
    return WebDatasetShards(WebDatasetShards.Params(**params)).load(split, ctx)  # type: ignore[arg-type]


def test_webdataset_shards_decode_once_into_a_mapped_file(wds, ctx: DataContext, monkeypatch) -> None:
    write_shards(wds, ctx.root / "shards", "train", [(i, i % 3) for i in range(5)])  # two shards: 3 + 2
    write_shards(wds, ctx.root / "shards", "test", [(10, 1), (11, 4)])
    params = {"urls": "shards/train-{000000..000001}.tar", "test_urls": "shards/test-000000.tar", "image_size": 8}
    train = wds_load(ctx, **params)
    assert train.mapped and len(train) == 5 and train.images.dtype == torch.uint8
    assert train.batch(torch.arange(5)).shape == (5, 3, 8, 8)
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [0, 1, 2, 0, 1]
    assert train.classes == ("0", "1", "2", "3", "4")  # K over train and test
    assert torch.equal(train.batch(torch.tensor([4]))[0], resize_uint8(chw(4, (10, 6))[None], 8)[0])
    assert len(list((ctx.cache_dir).glob("*.u8"))) == 2

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr("ssl_bench.plugins.datasets.webdataset_shards.ShardReader.__call__", no_decoding)
    again = wds_load(ctx, **params)
    assert again.key == train.key and torch.equal(again.batch(torch.arange(5)), train.batch(torch.arange(5)))
    test = wds_load(ctx, "test", **params)
    assert test.labels.tolist() == [1, 4] and test.classes == train.classes and test.key != train.key


def test_webdataset_without_labels_is_unlabelled_and_mixed_labels_fail(wds, ctx: DataContext) -> None:
    write_shards(wds, ctx.root / "u", "u", [(i, None) for i in range(4)])
    data = wds_load(ctx, urls="u/u-{000000..000001}.tar", image_size=8)
    assert data.classes == ("unlabelled",) and data.labels.tolist() == [0, 0, 0, 0]
    with pytest.raises(DataError, match=r"no 'test' split: set params.test_urls"):
        wds_load(ctx, "test", urls="u/u-{000000..000001}.tar", image_size=8)
    with pytest.raises(DataError, match=r"has a \.cls entry; set params.label_key = \"\" for unlabelled images"):
        wds_load(ctx, urls="u/u-{000000..000001}.tar", image_size=8, label_key="cls")
    write_shards(wds, ctx.root / "m", "m", [(0, 1), (1, None)])
    with pytest.raises(DataError, match=r"m-000000.tar: sample 000001: no \.cls entry, unlike other samples"):
        wds_load(ctx, urls="m/m-000000.tar", image_size=8)
    with pytest.raises(DataError, match=r"sample 000000: no image entry \(\.jpg, \.jpeg\); it has \.cls, \.png"):
        wds_load(ctx, urls="m/m-000000.tar", image_size=8, image_keys=["jpg", "jpeg"])


def test_webdataset_errors_name_the_shard_and_the_extra(wds, ctx: DataContext, monkeypatch) -> None:
    write_shards(wds, ctx.root / "s", "train", [(0, 0), (1, 1)])
    with pytest.raises(DataError, match=r"webdataset: shard .*s/train-000001.tar not found \(2 of 3 shards missing\) "
                                        r"\(params.urls = 's/train-\{000000..000002\}.tar', data root"):
        wds_load(ctx, urls="s/train-{000000..000002}.tar")
    with pytest.raises(DataError, match=r"params.urls = 'https://host/train-0.tar' is not a local path"):
        wds_load(ctx, urls="https://host/train-0.tar")
    (ctx.root / "s" / "bad.tar").write_bytes(b"this is not a tar file" * 40)
    with pytest.raises(DataError, match=r"webdataset: cannot read the shards .*bad.tar"):
        wds_load(ctx, urls="s/bad.tar")
    monkeypatch.setitem(sys.modules, "webdataset", None)
    with pytest.raises(DataError, match=r"needs the 'webdataset' package.*pip install \"ssl-bench\[webdataset\]\""):
        wds_load(ctx, urls="s/train-000000.tar")


def test_webdataset_passes_the_conformance_check(wds, bench_registry, ctx: DataContext) -> None:
    write_shards(wds, ctx.root / "s", "train", [(0, 0), (1, 1), (2, 0)])
    write_shards(wds, ctx.root / "s", "test", [(3, 1), (4, 0)])
    check_dataset(bench_registry, "webdataset", ctx=ctx,
                  params={"urls": "s/train-000000.tar", "test_urls": "s/test-000000.tar", "image_size": 8})


# --- the plan and the command line ---------------------------------------------------------------------------------

PRETRAIN_ON_PHOTOS = """
name = "photos"
seeds = [0]
val_fraction = 0.25

[pretrain]
dataset = {{ name = "unlabelled_folder", params = {{ path = "{photos}", image_size = 16 }} }}
backbone = {{ name = "convnet_small" }}
epochs = 1
batch_size = 8

[[methods]]
name = "simclr"

[[evaluations]]
name = "knn"
params = {{ k = 3 }}
{datasets}
"""


def test_the_plan_refuses_an_evaluation_on_unlabelled_data(bench_registry, write_toml, tmp_path: Path) -> None:
    for datasets, loc in (("", r"evaluations\[0\].datasets"),
                          ('datasets = ["shapes", "unlabelled_folder"]', r"evaluations\[0\].datasets\[1\]")):
        path = write_toml(PRETRAIN_ON_PHOTOS.format(photos=tmp_path, datasets=datasets))
        spec = load_benchmark(path, None, bench_registry)
        with pytest.raises(SpecError, match=rf"bench.toml: {loc}: dataset 'unlabelled_folder' has no labels "
                                            r"\(pretraining data only\); 'knn' scores class labels"):
            make_plan(spec, bench_registry, path.name)
    sweep = PRETRAIN_ON_PHOTOS.replace("batch_size = 8", "batch_size = 8\nsweep = {{ lr = [0.1, 0.01] }}")
    path = write_toml(sweep.format(photos=tmp_path, datasets='datasets = ["shapes"]'))
    with pytest.raises(SpecError, match=r"pretrain.sweep: dataset 'unlabelled_folder' has no labels"):
        make_plan(load_benchmark(path, None, bench_registry), bench_registry, path.name)


def test_bench_pretrains_on_an_unlabelled_folder_and_evaluates_on_shapes(tmp_path, write_toml, cli_env) -> None:
    photos = tmp_path / "photos"
    for i in range(16):
        (photos / f"roll{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels(i, (20, 12))).save(photos / f"roll{i % 2}" / f"{i:02d}.png")
    datasets = 'datasets = [{ name = "shapes", params = { n_train = 64, n_test = 32, image_size = 16 } }]'
    path, out = write_toml(PRETRAIN_ON_PHOTOS.format(photos=photos, datasets=datasets)), tmp_path / "out"
    run = subprocess.run(bench_cmd("run", str(path), "--out", str(out)), capture_output=True, text=True,
                         env=cli_env, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [r for f in (out / "results").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert rows and {r["pretrain_dataset"] for r in rows} == {"unlabelled_folder"}
    assert {r["dataset"] for r in rows} == {"shapes"} and {r["method"] for r in rows} == {"simclr"}
    bad = write_toml(PRETRAIN_ON_PHOTOS.format(photos=photos, datasets=""), "bad.toml")
    proc = subprocess.run(bench_cmd("validate", str(bad)), capture_output=True, text=True, env=cli_env, timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = next(x for x in proc.stderr.splitlines() if "bad.toml" in x)
    assert "evaluations[0].datasets: dataset 'unlabelled_folder' has no labels" in line
