"""Streaming a split larger than memory: ``stream = true`` decodes into a memory-mapped file, and
ImageSet subsets, pretraining, feature extraction and the image-reading evaluators read it batch by batch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from ssl_bench.harness import EvalTask
from ssl_bench.harness.components import DataContext
from ssl_bench.harness.data import ImageSet, balanced_subset, cached_mapped, stratified_split
from ssl_bench.harness.errors import DataError
from ssl_bench.harness.kit.labels import label_fraction_indices
from ssl_bench.harness.pipeline.features import FeatureCache, extract
from ssl_bench.harness.pipeline.plan import ResolvedDataset
from ssl_bench.harness.pipeline.runner import Run
from ssl_bench.harness.pipeline.specs import ComponentRef, DatasetRef, OptimizerSpec, PretrainSpec
from ssl_bench.harness.pipeline.train import pretrain
from ssl_bench.harness.testing import build_method, tiny_images
from ssl_bench.plugins.datasets import decode
from ssl_bench.plugins.datasets.imagefolder import ImageFolder
from ssl_bench.plugins.evaluators.adversarial import Adversarial
from ssl_bench.plugins.evaluators.finetune import FineTune
from ssl_bench.plugins.evaluators.gallery import Gallery
from ssl_bench.plugins.evaluators.robustness import Robustness

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.usefixtures("one_thread")]

CPU = torch.device("cpu")


@pytest.fixture
def ctx(tmp_path: Path) -> DataContext:
    """A data root holding ``toy/<class>/<i>.png``: 3 classes x 12 small PNGs of varied sizes."""
    rng = np.random.default_rng(0)
    for c in ("ant", "bee", "cat"):
        for i in range(12):
            file = tmp_path / "data" / "toy" / c / f"{i:03d}.png"
            file.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (9 + i % 4, 12 - i % 3, 3), dtype=np.uint8)).save(file)
    return DataContext(root=tmp_path / "data", cache_dir=tmp_path / "cache")


def load(ctx: DataContext, split: str = "train", **params: Any) -> ImageSet:
    return ImageFolder(ImageFolder.Params(**{"path": "toy", "image_size": 8, **params})).load(split, ctx)


def everything(s: ImageSet) -> Tensor:
    """All of a set's images in memory, uint8 (N, C, H, W)."""
    return s.batch(torch.arange(len(s)))


def is_mapped_from(s: ImageSet, path: Path) -> bool:
    """``s`` reads its rows from the mapping of ``path`` (the file shows in /proc/self/maps)."""
    maps = Path("/proc/self/maps")
    return s.mapped and (not maps.exists() or str(path.resolve()) in maps.read_text())


def as_mapped(s: ImageSet, path: Path) -> ImageSet:
    """The same set with its images written to ``path`` and memory-mapped."""

    def build(write: Any) -> dict[str, Any]:
        write(s.images)
        return {}

    images, _ = cached_mapped(path, tuple(s.images.shape[1:]), build)
    return ImageSet(images, s.labels, s.classes, s.key, s.indices, torch.arange(len(s)))


@pytest.mark.parametrize("split", ["train", "test"])
def test_stream_gives_the_images_of_the_in_memory_load(ctx: DataContext, split: str) -> None:
    memory, streamed = load(ctx, split), load(ctx, split, stream=True)
    assert not memory.mapped and streamed.mapped
    assert torch.equal(everything(streamed), memory.images) and torch.equal(streamed.labels, memory.labels)
    assert streamed.key == memory.key  # same images, same key: feature caches and job keys are shared
    (raw,) = ctx.cache_dir.glob("imagefolder-toy-8px-*.u8")
    assert raw.stat().st_size == 36 * 3 * 8 * 8 and raw.with_suffix(".json").exists()
    assert is_mapped_from(streamed, raw) and streamed.images.shape == (36, 3, 8, 8)  # the carve only indexes it
    assert not list(ctx.cache_dir.glob(".*tmp*"))


def test_stream_writes_the_file_chunk_by_chunk(ctx: DataContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "CHUNK", 8)
    written: list[int] = []
    real = decode.cached_mapped

    def spy(path: Path, row_shape: Any, build: Any) -> Any:
        return real(path, row_shape, lambda write: build(lambda rows: (written.append(len(rows)), write(rows))))

    monkeypatch.setattr(decode, "cached_mapped", spy)
    load(ctx, stream=True)
    assert written == [8, 8, 8, 8, 4]  # never more than one chunk of decoded images in memory


def test_second_load_maps_the_file_without_decoding(ctx: DataContext, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load(ctx, stream=True)

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again despite the mapped cache")

    monkeypatch.setattr(decode, "decode_file", no_decoding)
    second = load(ctx, stream=True)
    assert torch.equal(everything(first), everything(second)) and first.key == second.key
    (raw,) = ctx.cache_dir.glob("*.u8")
    raw.with_suffix(".json").unlink()  # an unfinished cache (no sidecar yet) is built again
    with pytest.raises(AssertionError, match="decoded again"):
        load(ctx, stream=True)
    with pytest.raises(AssertionError, match="decoded again"):
        load(ctx, stream=True, image_size=12)  # another resolution is another file


def test_stream_needs_image_size(ctx: DataContext) -> None:
    with pytest.raises(DataError, match=r"params\.stream = true needs params\.image_size"):
        ImageFolder(ImageFolder.Params(path="toy", stream=True)).load("train", ctx)


def test_stream_is_left_out_of_job_keys() -> None:
    assert "stream" not in ImageFolder.Params(path="toy", stream=True).model_dump()


def test_subsets_keep_reading_the_mapped_file(ctx: DataContext) -> None:
    memory, streamed = load(ctx), load(ctx, stream=True)
    (raw,) = ctx.cache_dir.glob("*.u8")
    rest, val = stratified_split(streamed.labels, 0.25, seed=0)
    subsets = {
        "val": (streamed.subset(val), memory.subset(val)),
        "label fraction": (streamed.subset(rest).subset(label_fraction_indices(streamed.labels[rest], 0.5, 0)),
                           memory.subset(rest).subset(label_fraction_indices(memory.labels[rest], 0.5, 0))),
        "balanced": (streamed.subset(balanced_subset(streamed.labels, 9, 0), key="k|balanced9"),
                     memory.subset(balanced_subset(memory.labels, 9, 0), key="k|balanced9")),
    }
    for what, (sub, ref) in subsets.items():
        assert sub.images.data_ptr() == streamed.images.data_ptr(), f"{what}: the mapped file was copied"
        assert is_mapped_from(sub, raw) and len(sub) < len(streamed)
        assert torch.equal(everything(sub), ref.images), what
        assert torch.equal(sub.labels, ref.labels) and sub.key == ref.key, what
        assert (sub.indices is None) == (ref.indices is None), what
        assert ref.indices is None or torch.equal(sub.indices, ref.indices), what
    part = torch.tensor([4, 0, 3])
    val_set = subsets["val"][0]
    assert torch.equal(val_set.batch(part), subsets["val"][1].images[part])
    assert torch.equal(torch.cat(list(val_set.chunks(4))), subsets["val"][1].images)
    n = len(val_set)
    assert [len(c) for c in val_set.chunks(4)] == [4] * (n // 4) + [n % 4] * (n % 4 > 0)


def test_a_runs_balanced_train_size_keeps_the_mapping(ctx: DataContext, bench_registry: Any) -> None:
    def load_split(stream: bool) -> ImageSet:
        run = Run(spec=None, plan=None, registry=bench_registry, pm=None, out_dir=ctx.root,  # type: ignore[arg-type]
                  device=CPU, data=ctx)
        params = ImageFolder.Params(path="toy", image_size=8, stream=stream)
        return run.load_split(ResolvedDataset("imagefolder", params, "0", train_size=12), "train")

    sets = {stream: load_split(stream) for stream in (False, True)}
    assert len(sets[True]) == 12 and sets[True].key == sets[False].key and sets[True].key.endswith("|balanced12")
    assert sets[True].indices is None and sets[True].images.shape[0] == 36 and sets[True].mapped
    assert torch.equal(everything(sets[True]), sets[False].images)


def test_pretrain_step_on_a_mapped_set_equals_in_memory(tmp_path: Path, bench_registry: Any) -> None:
    data = tiny_images(24)
    mapped = as_mapped(data, tmp_path / "tiny.u8")
    idx = torch.tensor([1, 3, 4, 8, 9, 12, 17, 20])  # a mapped subset: rows index the file
    spec = PretrainSpec(dataset=DatasetRef(name="x"), backbone=ComponentRef(name="convnet_small"), epochs=1,
                        batch_size=8, optimizer=OptimizerSpec(lr=0.05))
    runs = {}
    for name, train in {"memory": data.subset(idx), "mapped": mapped.subset(idx)}.items():
        method = build_method(bench_registry, "simclr")
        views = {n: bench_registry.get("augmentations", n)(bench_registry.get("augmentations", n).Params())
                 for n in method.views}
        stats = pretrain(method, views, train, spec, seed=0, device=CPU, workdir=tmp_path / name, progress=False)
        runs[name] = (stats, method.state_dict())
    assert runs["mapped"][0].steps == 1 and np.isfinite(runs["mapped"][0].final_loss)
    assert runs["mapped"][0].final_loss == runs["memory"][0].final_loss
    for key, value in runs["memory"][1].items():
        assert torch.equal(runs["mapped"][1][key], value), key


def encoder(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()).eval()


def test_feature_extraction_of_a_mapped_set_equals_in_memory(ctx: DataContext, tmp_path: Path) -> None:
    memory, streamed = load(ctx), load(ctx, stream=True)
    net = encoder()
    assert torch.equal(extract(net, streamed, CPU, batch_size=5), extract(net, memory, CPU, batch_size=5))
    caches = {name: FeatureCache(net, CPU, tmp_path / name) for name in ("memory", "mapped")}
    caches["memory"].register_source(memory)
    caches["mapped"].register_source(streamed)
    val = stratified_split(memory.labels, 0.25, seed=1)[1]
    assert torch.equal(caches["mapped"](streamed.subset(val)), caches["memory"](memory.subset(val)))


@pytest.mark.parametrize("name", ["finetune", "robustness", "adversarial", "gallery"])
def test_evaluators_score_a_mapped_set_as_in_memory(ctx: DataContext, tmp_path: Path, name: str) -> None:
    memory, streamed = load(ctx), load(ctx, stream=True)
    rest, val = stratified_split(memory.labels, 0.25, seed=0)
    evaluator: Any = {
        "finetune": lambda: FineTune(FineTune.Params(epochs=2, batch_size=8, label_fraction=0.5, eval_batch_size=4)),
        "robustness": lambda: Robustness(Robustness.Params(max_images=6)),
        "adversarial": lambda: Adversarial(Adversarial.Params(max_images=6, epsilons=(0.0, 0.03), pgd_steps=2,
                                                              attack_batch_size=4)),
        "gallery": lambda: Gallery(Gallery.Params(n_images=4, tile_px=16)),
    }[name]()
    metrics = {}
    for kind, data in {"memory": memory, "mapped": streamed}.items():
        net = encoder()
        task = EvalTask(net, data.subset(rest), data.subset(val), data.num_classes,
                        lambda s, net=net: extract(net, s, CPU), CPU, seed=0, out_dir=tmp_path / kind)
        metrics[kind] = evaluator.evaluate(task, {})
    assert metrics["mapped"].keys() == metrics["memory"].keys()
    for key, value in metrics["memory"].items():
        assert metrics["mapped"][key] == pytest.approx(value, nan_ok=True), key
    if name == "gallery":
        assert (tmp_path / "mapped/gallery.png").read_bytes() == (tmp_path / "memory/gallery.png").read_bytes()


def test_corrupt_file_is_named_or_skipped_with_stream(ctx: DataContext, caplog: pytest.LogCaptureFixture) -> None:
    (ctx.root / "toy/bee/005.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match="005.png"):
        load(ctx, stream=True)
    assert not list(ctx.cache_dir.glob("*.u8")) and not list(ctx.cache_dir.glob(".*"))  # nothing half-written
    with caplog.at_level(logging.WARNING, logger="bench.data"):
        streamed = load(ctx, stream=True, on_corrupt="skip")
    memory = load(ctx, on_corrupt="skip")
    assert "skipped 1 of 36 images" in caplog.text and "005.png" in caplog.text
    assert streamed.images.shape[0] == 35 and torch.equal(everything(streamed), memory.images)
    assert torch.equal(streamed.labels, memory.labels)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bench.data"):
        again = load(ctx, stream=True, on_corrupt="skip")  # from the mapped cache: still reported
    assert "skipped 1 of 36 images" in caplog.text and torch.equal(again.labels, memory.labels)
