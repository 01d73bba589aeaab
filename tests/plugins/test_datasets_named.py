"""Tests of the named datasets: registration, resolution order, errors, Parquet under the root, fake layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.io
import torch
import torchvision
from PIL import Image
from torchvision.io import encode_png

from ssl_bench.harness.components import DataContext, Dataset
from ssl_bench.harness.errors import DataError
from ssl_bench.harness.plugins import collect, make_plugin_manager
from ssl_bench.plugins.datasets import decode, folder_sets, torchvision_sets
from ssl_bench.plugins.datasets.cifar import Cifar100

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
REGISTRY = collect(make_plugin_manager(load_entrypoints=False))
STUDY_DATASETS = ("cifar10", "cifar100", "stl10", "svhn", "flowers102", "oxford_pets", "caltech101", "dtd", "food101",
                  "fgvc_aircraft", "stanford_cars", "sun397", "eurosat", "imagenette", "imagenet", "tf_flowers",
                  "uc_merced", "brain_mri", "imagefolder", "parquet")


@pytest.fixture
def ctx(tmp_path: Path) -> DataContext:
    (tmp_path / "data").mkdir()
    return DataContext(root=tmp_path / "data", cache_dir=tmp_path / "cache")


def dataset(name: str, **params: object) -> Dataset:
    cls = REGISTRY.get("datasets", name)
    return cls(cls.Params(**params))  # type: ignore[no-any-return]


def write_hf_parquet(file: Path, labels: list[int], *, size: int = 8, column: str = "image", seed: int = 0,
                     names: list[str] | None = None) -> torch.Tensor:
    """A tiny HF-style Parquet file (PNG bytes in a {bytes, path} struct); returns the images (N, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (len(labels), 3, size, size), generator=g, dtype=torch.uint8)
    blobs = [{"bytes": bytes(encode_png(im).numpy().tobytes()), "path": f"{i}.png"} for i, im in enumerate(images)]
    table = pa.table({column: pa.array(blobs), "label": pa.array(labels, pa.int64())})
    if names is not None:
        meta = {"info": {"features": {"label": {"names": names, "_type": "ClassLabel"}}}}
        table = table.replace_schema_metadata({b"huggingface": json.dumps(meta).encode()})
    file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, file)
    return images


def write_pngs(folder: Path, n: int, size: int = 10, seed: int = 0, suffix: str = ".png") -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}{suffix}")


# registration ------------------------------------------------------------------------------------

def test_every_study_dataset_is_registered_with_download_off() -> None:
    assert set(STUDY_DATASETS) <= set(REGISTRY.names("datasets"))
    sizes = {"svhn": 32, "stl10": 96, "cifar10": 32, "cifar100": 32}
    for name in STUDY_DATASETS[:-2]:
        params = REGISTRY.get("datasets", name).Params()
        assert params.download is False and params.image_size == sizes.get(name, 64), name
    assert REGISTRY.get("datasets", "stl10").splits == ("train", "test", "unlabeled")
    assert REGISTRY.get("datasets", "flowers102").splits == ("train", "test", "val")
    assert set(torchvision_sets.DATASETS) | set(folder_sets.DATASETS) == set(STUDY_DATASETS[2:-2])


# errors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "layout", "fix"), [
    ("stl10", "stl10_binary", "or set download = true"),
    ("svhn", "svhn/*_32x32.mat", "or set download = true"),
    ("caltech101", "caltech101/101_ObjectCategories", "or set download = true"),
    ("stanford_cars", "stanford_cars/devkit", "stanford_cars cannot be downloaded automatically"),
    ("tf_flowers", "tf_flowers/flower_photos/<class>/", "or set download = true"),
    ("brain_mri", "brain_mri/Training/<class>/", "brain_mri cannot be downloaded automatically (it is distributed by"),
    ("imagenet", "imagenet/train/<class>/", "imagenet cannot be downloaded automatically"),
])
def test_missing_data_is_one_clear_error(ctx: DataContext, name: str, layout: str, fix: str) -> None:
    with pytest.raises(DataError) as info:
        dataset(name).load("train", ctx)
    message = str(info.value)
    assert message.startswith(f"{name}: no data for split 'train': expected HF-style Parquet "
                              f"{ctx.root}/{name}/train.parquet or the ")
    assert f"{ctx.root}/{layout}" in message and "--data-root or BENCH_DATA_ROOT" in message and fix in message
    assert not (ctx.root / name).exists()  # looking never creates folders


def test_unknown_split(ctx: DataContext) -> None:
    with pytest.raises(DataError, match="food101: unknown split 'val'; available: train, test"):
        dataset("food101").load("val", ctx)
    with pytest.raises(DataError, match="imagenet: unknown split 'val'; available: train, test"):
        dataset("imagenet").load("val", ctx)


# HF-style Parquet under the data root -----------------------------------------------------------

def test_parquet_under_root_svhn_with_class_names(ctx: DataContext) -> None:
    digits = [str(d) for d in range(10)]
    train = write_hf_parquet(ctx.root / "svhn/train.parquet", [3, 1, 4, 1], names=digits)
    write_hf_parquet(ctx.root / "svhn/test.parquet", [5, 9], names=digits)
    ds = dataset("svhn", image_size=8).load("train", ctx)
    assert torch.equal(ds.images, train) and ds.labels.tolist() == [3, 1, 4, 1] and ds.classes == tuple(digits)
    assert ds.key.startswith("svhn:parquet:") and ds.key.endswith(":train")
    assert dataset("svhn").load("test", ctx).images.shape == (2, 3, 32, 32)  # default size of svhn


def test_parquet_under_root_validation_file_is_val_or_test(ctx: DataContext) -> None:
    for split, labels in (("train", [0, 1]), ("validation", [1]), ("test", [0, 0, 1])):
        write_hf_parquet(ctx.root / f"flowers102/{split}.parquet", labels)
    flowers = dataset("flowers102", image_size=8)
    assert len(flowers.load("val", ctx)) == 1 and len(flowers.load("test", ctx)) == 3
    assert flowers.load("train", ctx).classes == ("0", "1")
    write_hf_parquet(ctx.root / "imagenet/train-00000-of-00002.parquet", [0, 1])
    write_hf_parquet(ctx.root / "imagenet/train-00001-of-00002.parquet", [2, 2], seed=1)
    write_hf_parquet(ctx.root / "imagenet/validation.parquet", [2, 0, 1])
    write_hf_parquet(ctx.root / "imagenet/test.parquet", [-1, -1])  # HF's ImageNet test split has no labels
    imagenet = dataset("imagenet", image_size=8)
    assert imagenet.load("train", ctx).labels.tolist() == [0, 1, 2, 2]
    assert imagenet.load("test", ctx).labels.tolist() == [2, 0, 1]


def test_parquet_with_train_only_carves_a_stratified_test_split(ctx: DataContext) -> None:
    labels = [0] * 10 + [1] * 5
    write_hf_parquet(ctx.root / "tf_flowers/train.parquet", labels, column="img")
    flowers = dataset("tf_flowers", image_size=8, test_fraction=0.4)
    train, test = flowers.load("train", ctx), flowers.load("test", ctx)
    assert torch.bincount(test.labels).tolist() == [4, 2] and torch.bincount(train.labels).tolist() == [6, 3]
    rows = {bytes(r) for r in train.images.flatten(1).numpy()}
    assert not rows & {bytes(r) for r in test.images.flatten(1).numpy()}


def test_split_missing_from_parquet_falls_through_to_the_layout(ctx: DataContext) -> None:
    write_hf_parquet(ctx.root / "stl10/train.parquet", [0, 1])
    write_hf_parquet(ctx.root / "stl10/test.parquet", [1, 0])
    assert len(dataset("stl10").load("test", ctx)) == 2
    with pytest.raises(DataError, match=r"stl10: no data for split 'unlabeled': expected .*unlabeled.parquet "
                                        r"or the torchvision layout .*stl10_binary"):
        dataset("stl10").load("unlabeled", ctx)
    (ctx.root / "dtd").mkdir()
    pq.write_table(pa.table({"pixels": [b"x"], "label": [0]}), ctx.root / "dtd/train.parquet")
    with pytest.raises(DataError, match=r"train.parquet: expected an image column \(image or img\)"):
        dataset("dtd").load("train", ctx)


def test_cifar100_image_size_on_parquet(ctx: DataContext) -> None:
    file = ctx.root / "cifar100/train.parquet"
    write_hf_parquet(file, [7, 2], size=32, column="img")
    table = pq.read_table(file).rename_columns(["img", "fine_label"])
    pq.write_table(table, file)
    ds = Cifar100(Cifar100.Params(image_size=16)).load("train", ctx)
    assert ds.images.shape == (2, 3, 16, 16) and ds.labels.tolist() == [7, 2] and ds.key.endswith(":train:16px")


# the torchvision layouts (tiny fakes of the real files) ------------------------------------------

def test_eurosat_layout_carves_test_and_caches(ctx: DataContext, monkeypatch: pytest.MonkeyPatch) -> None:
    for i, name in enumerate(("Forest", "River", "SeaLake")):
        write_pngs(ctx.root / f"eurosat/2750/{name}", 5, seed=i)
    eurosat = dataset("eurosat", image_size=8)
    train, test = eurosat.load("train", ctx), eurosat.load("test", ctx)
    assert train.classes == ("Forest", "River", "SeaLake") and train.images.shape == (12, 3, 8, 8)
    assert torch.bincount(test.labels).tolist() == [1, 1, 1] and test.key.startswith("eurosat:torchvision:")
    assert len(list(ctx.cache_dir.glob("eurosat-all-8px-*.pt"))) == 1

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(decode, "decode_files", no_decoding)
    assert torch.equal(eurosat.load("train", ctx).images, train.images)


def test_imagenette_layout_val_is_test(ctx: DataContext) -> None:
    for split, n in (("train", 3), ("val", 2)):
        for j, wnid in enumerate(("n01440764", "n03888257")):
            write_pngs(ctx.root / f"imagenette2-320/{split}/{wnid}", n, seed=j, suffix=".JPEG")
    imagenette = dataset("imagenette", image_size=8)
    test = imagenette.load("test", ctx)
    assert test.classes == ("tench", "parachute") and test.labels.tolist() == [0, 0, 1, 1]
    assert len(imagenette.load("train", ctx)) == 6


def test_svhn_arrays_relabel_zero_and_resize(ctx: DataContext, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.svhn as tv_svhn

    monkeypatch.setattr(tv_svhn, "check_integrity", lambda *args, **kwargs: True)  # our file is a fake
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    (ctx.root / "svhn").mkdir()
    scipy.io.savemat(ctx.root / "svhn/test_32x32.mat", {"X": x, "y": np.array([[10], [1], [2], [10]])})
    native = dataset("svhn").load("test", ctx)
    assert native.labels.tolist() == [0, 1, 2, 0] and native.classes == tuple("0123456789")
    assert torch.equal(native.images[1], torch.from_numpy(x[..., 1]).permute(2, 0, 1))
    assert dataset("svhn", image_size=16).load("test", ctx).images.shape == (4, 3, 16, 16)
    assert len(list(ctx.cache_dir.glob("svhn-test-16px-*.pt"))) == 1
    with pytest.raises(DataError, match=r"svhn: cannot read the torchvision layout .*svhn"):
        dataset("svhn").load("train", ctx)  # train_32x32.mat is missing


def test_caltech101_and_oxford_pets_layouts(ctx: DataContext) -> None:
    base = ctx.root / "caltech101/101_ObjectCategories"
    for j, name in enumerate(("BACKGROUND_Google", "accordion", "airplanes")):
        write_pngs(base / name, 5, seed=j, suffix=".jpg")
        for i, f in enumerate(sorted((base / name).iterdir()), 1):
            f.rename(base / name / f"image_{i:04d}.jpg")
    caltech = dataset("caltech101", image_size=8)
    test = caltech.load("test", ctx)  # carved: 20% of each class
    assert test.classes == ("accordion", "airplanes") and test.labels.tolist() == [0, 1]
    assert len(caltech.load("train", ctx)) == 8
    pets = ctx.root / "oxford-iiit-pet"
    write_pngs(pets / "images", 3, suffix=".jpg")
    (pets / "annotations").mkdir()
    names = ("Abyssinian_1", "beagle_2", "beagle_3")
    for i, name in enumerate(names):
        (pets / "images" / f"{i:03d}.jpg").rename(pets / "images" / f"{name}.jpg")
    (pets / "annotations/test.txt").write_text("Abyssinian_1 1 1 1\nbeagle_2 2 2 1\nbeagle_3 2 2 1\n")
    test = dataset("oxford_pets", image_size=8).load("test", ctx)
    assert test.classes == ("Abyssinian", "Beagle") and test.labels.tolist() == [0, 1, 1]


# the folder-shaped datasets ----------------------------------------------------------------------

def test_brain_mri_and_uc_merced_layouts(ctx: DataContext) -> None:
    for split, n in (("Training", 3), ("Testing", 1)):
        for j, name in enumerate(("glioma", "notumor")):
            write_pngs(ctx.root / f"brain_mri/{split}/{name}", n, seed=j, suffix=".jpg")
    mri = dataset("brain_mri", image_size=8)
    assert mri.load("test", ctx).labels.tolist() == [0, 1] and len(mri.load("train", ctx)) == 6
    for j, name in enumerate(("beach", "forest")):
        write_pngs(ctx.root / f"uc_merced/UCMerced_LandUse/Images/{name}", 5, seed=j, suffix=".tif")
    merced = dataset("uc_merced", image_size=8, test_fraction=0.4)
    assert merced.load("test", ctx).labels.tolist() == [0, 0, 1, 1] and merced.load("train", ctx).classes == (
        "beach", "forest")


def test_brain_mri_without_training_folder(ctx: DataContext) -> None:
    write_pngs(ctx.root / "brain_mri/Testing/glioma", 1)
    with pytest.raises(DataError, match=r"expected .* class-folder layout .*brain_mri/Training/<class>/"):
        dataset("brain_mri").load("train", ctx)


def test_download_only_when_asked(ctx: DataContext, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_download(url: str, download_root: str) -> None:  # extracts a tiny archive, no network
        calls.append(url)
        for name in ("daisy", "roses"):
            write_pngs(Path(download_root) / "flower_photos" / name, 2, suffix=".jpg")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", fake_download)
    with pytest.raises(DataError, match="or set download = true"):
        dataset("tf_flowers").load("train", ctx)
    assert calls == []
    train = dataset("tf_flowers", download=True, image_size=8).load("train", ctx)
    assert calls == [folder_sets.SPECS[0].url] and train.classes == ("daisy", "roses") and len(train) == 2
    assert len(dataset("tf_flowers", image_size=8).load("test", ctx)) == 2  # now local: no second download
    assert len(calls) == 1
