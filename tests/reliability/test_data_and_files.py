"""Nothing wrong is recorded as right (issue 20): data, job keys and the files of a finished job.

Each test failed before the fix: a checkpoint of another width loaded as "pretrained", a fixed dataset
kept its old results, an empty class folder became a class, a kill between ``encoder.pt`` and
``pretrain.json`` failed every rerun, a truncated cache failed every rerun, and a huge or 16-bit image
was decoded (into gigabytes, or clipped) instead of refused.
"""

from __future__ import annotations

import io
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from ssl_bench.harness.components import DataContext, Dataset
from ssl_bench.harness.data import ImageSet, cached_mapped
from ssl_bench.harness.errors import DataError
from ssl_bench.harness.pipeline import budget, encoders
from ssl_bench.harness.pipeline.features import FeatureCache
from ssl_bench.harness.pipeline.plan import make_plan
from ssl_bench.harness.pipeline.runner import Run, execute
from ssl_bench.harness.pipeline.specs import load_benchmark
from ssl_bench.harness.pipeline.train import resolve_device
from ssl_bench.harness.plugins import collect, make_plugin_manager
from ssl_bench.harness.record.layout import RunFolder
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.datasets import decode
from ssl_bench.plugins.datasets.folder_sets import DATASETS as FOLDER_SETS
from ssl_bench.plugins.datasets.imagefolder import ImageFolder
from ssl_bench.plugins.datasets.parquet import ParquetImages
from ssl_bench.plugins.methods.pretrained import Pretrained

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

FILES = """
name = "files"
seeds = [0]
val_fraction = 0.25

[pretrain]
dataset = { name = "imagefolder", params = { path = "toy", image_size = 8 } }
backbone = { name = "convnet_small", params = { width = 4, stages = 2 } }
epochs = 1
batch_size = 8

[[methods]]
name = "random_init"

[[evaluations]]
name = "knn"
params = { k = 3 }
"""

SHAPES = """
name = "shapes"
seeds = [0]
val_fraction = 0.25

[pretrain]
dataset = { name = "shapes", params = { n_train = 64, n_test = 32, image_size = 16 } }
backbone = { name = "convnet_small", params = { width = 4, stages = 2 } }
epochs = 1
batch_size = 16

[[methods]]
name = "METHOD"

[[evaluations]]
name = "knn"
params = { k = 3 }
"""


@pytest.fixture(scope="module")
def registry():  # noqa: ANN201 - a Registry
    return collect(make_plugin_manager(load_entrypoints=False))


def make_run(tmp_path: Path, text: str, root: Path, out: Path, registry) -> Run:  # noqa: ANN001
    bench = tmp_path / "bench.toml"
    bench.write_text(text)
    spec = load_benchmark(bench, registry=registry)
    ctx = DataContext(root=root, cache_dir=tmp_path / "cache")
    pm = make_plugin_manager(load_entrypoints=False)
    return Run(spec, make_plan(spec, registry, bench.name, data=ctx), registry, pm, out, resolve_device("cpu"), ctx,
               progress=False)


def write_folder(root: Path, counts: dict[str, int], seed: int = 0, size: int = 8) -> None:
    """``root/<class>/<i>.png``: ``counts[class]`` random RGB images each."""
    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i:02d}.png")


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# 1. pretrained: a state dict of another width -----------------------------------------------------


def test_a_checkpoint_of_another_width_is_refused_naming_the_file(tmp_path: Path) -> None:
    file = tmp_path / "narrow.pt"
    torch.save(ConvNetSmall(ConvNetSmall.Params(width=8)).state_dict(), file)

    def build(**params: object) -> Pretrained:
        wide = ConvNetSmall(ConvNetSmall.Params(width=16))
        return Pretrained(Pretrained.Params(path=str(file), **params), wide, num_classes=10)  # type: ignore[arg-type]

    # only the batch norms' num_batches_tracked scalars match: 0% of the parameters
    with pytest.raises(DataError, match=r"narrow\.pt: the file fills only 0\.0% of the parameter elements of "
                                        r"backbone 'convnet_small' \(4 tensors matched.*below min_coverage = 0\.9"):
        build()
    accepted = build(min_coverage=0.0)  # the user lowers the threshold on purpose
    assert accepted.report.coverage == 0.0 and "0.0% of the backbone's parameter elements" in str(accepted.report)
    same = tmp_path / "same.pt"
    torch.save(ConvNetSmall(ConvNetSmall.Params(width=16)).state_dict(), same)
    full = Pretrained(Pretrained.Params(path=str(same)), ConvNetSmall(ConvNetSmall.Params(width=16)),
                      num_classes=10)
    assert full.report.coverage == 1.0
    assert "min_coverage" not in Pretrained.Params(path="x").model_dump()  # a gate, not part of job keys


# 2. job keys cover the data --------------------------------------------------------------------------


def test_changed_data_redoes_the_jobs_and_keeps_the_old_files(tmp_path: Path, registry) -> None:  # noqa: ANN001
    first, fixed, out = tmp_path / "first", tmp_path / "fixed", tmp_path / "out"
    write_folder(first / "toy", {"a": 10, "b": 10}, seed=0)
    shutil.copytree(first, fixed)
    write_folder(fixed / "toy", {"b": 1}, seed=5)  # one image fixed: b/00.png
    run = make_run(tmp_path, FILES, first, out, registry)
    assert execute(run) == 0
    old_pre, old_eval = run.plan.pretrain_jobs[0], run.plan.eval_jobs[0]
    folder = RunFolder(out)
    old_result = folder.result(old_eval.key).read_bytes()
    assert folder.done_marker(old_pre.key).exists() and folder.has_result(old_eval.key)
    assert make_run(tmp_path, FILES, first, out, registry).plan.eval_jobs[0].key == old_eval.key  # stable

    again = make_run(tmp_path, FILES, fixed, out, registry)  # the same --out, another --data-root
    pre, ev = again.plan.pretrain_jobs[0], again.plan.eval_jobs[0]
    assert pre.key != old_pre.key and ev.key != old_eval.key
    assert not folder.done_marker(pre.key).exists() and not folder.has_result(ev.key)  # [todo] in a dry run
    assert execute(again) == 0
    assert folder.has_result(ev.key) and folder.result(old_eval.key).read_bytes() == old_result  # old kept
    spec = json.loads(folder.job_spec(pre.key).read_text())
    assert spec["data"] == pre.data != "" and spec["data_key"].startswith("imagefolder:folder:")

    write_folder(first / "toy", {"a": 1}, seed=9)  # fixed in place, same root
    assert make_run(tmp_path, FILES, first, out, registry).plan.pretrain_jobs[0].key != old_pre.key


def test_embedded_datasets_keep_their_keys_and_the_default_fingerprint_is_the_root(tmp_path: Path,
                                                                                   registry) -> None:  # noqa: ANN001
    bench = tmp_path / "shapes.toml"
    bench.write_text(SHAPES.replace("METHOD", "random_init"))
    spec = load_benchmark(bench, registry=registry)
    ctx = DataContext(root=tmp_path / "anywhere", cache_dir=tmp_path / "cache")
    plain, with_data = make_plan(spec, registry), make_plan(spec, registry, data=ctx)
    assert [j.key for j in plain.eval_jobs] == [j.key for j in with_data.eval_jobs]  # no data fingerprint

    class Custom(Dataset):
        name = "custom"

    one = Custom(Custom.Params()).fingerprint("train", ctx)
    assert one == Custom(Custom.Params()).fingerprint("train", ctx) != Custom(Custom.Params()).fingerprint(
        "train", DataContext(root=tmp_path / "elsewhere", cache_dir=ctx.cache_dir))


# 3. an empty class folder ---------------------------------------------------------------------------


def test_an_empty_class_folder_is_refused_naming_it(tmp_path: Path) -> None:
    ctx = DataContext(root=tmp_path / "data", cache_dir=tmp_path / "cache")
    write_folder(ctx.root / "toy", {"cat": 3, "dog": 3})
    (ctx.root / "toy" / "empty_class").mkdir()
    (ctx.root / "toy" / "empty_class" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"class folder .*toy/empty_class holds no images"):
        ImageFolder(ImageFolder.Params(path="toy", image_size=8)).load("train", ctx)
    write_folder(ctx.root / "tf_flowers" / "flower_photos", {"daisy": 3, "rose": 3})
    (ctx.root / "tf_flowers" / "flower_photos" / "tulip").mkdir()
    flowers = FOLDER_SETS["tf_flowers"]
    with pytest.raises(DataError, match=r"tf_flowers: class folder .*flower_photos/tulip holds no images"):
        flowers(flowers.Params()).load("train", ctx)


# 4. a finished job is one unit ----------------------------------------------------------------------


def test_a_kill_between_encoder_and_stats_leaves_a_job_that_is_redone(tmp_path: Path, registry,  # noqa: ANN001
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    real = encoders.atomic_write_text

    class Killed(BaseException):
        """SIGKILL, as far as the process is concerned: nothing after it runs."""

    def killed_before_stats(path: Path, text: str) -> None:
        if path.name == RunFolder.STATS:
            raise Killed
        real(path, text)

    monkeypatch.setattr(encoders, "atomic_write_text", killed_before_stats)
    run = make_run(tmp_path, SHAPES.replace("METHOD", "random_init"), tmp_path, out, registry)
    with pytest.raises(Killed):
        execute(run)  # killed after encoder.pt landed
    job, folder = run.plan.pretrain_jobs[0], RunFolder(out)
    assert folder.encoder(job.key).is_file() and not folder.done_marker(job.key).exists()  # [todo] in a dry run
    monkeypatch.setattr(encoders, "atomic_write_text", real)
    assert execute(make_run(tmp_path, SHAPES.replace("METHOD", "random_init"), tmp_path, out, registry)) == 0
    assert folder.done_marker(job.key).exists() and folder.has_result(run.plan.eval_jobs[0].key)
    spec = json.loads(folder.job_spec(job.key).read_text())
    assert spec["key"] == job.key and spec["seed"] == 0 and spec["kind"] == "run"
    assert spec["method"]["name"] == "random_init" and spec["backbone"]["params"]["width"] == 4
    assert spec["dataset"]["params"]["n_train"] == 64 and spec["dataset"]["params"]["seed"] == 0  # defaults filled
    assert spec["budget"]["epochs"] == 1 and spec["budget"]["batch_size"] == 16
    marker = json.loads(folder.done_marker(job.key).read_text())
    assert set(marker["files"]) == {RunFolder.ENCODER, RunFolder.STATS, RunFolder.JOB}


# 5. truncated caches --------------------------------------------------------------------------------


def test_a_truncated_feature_cache_is_recomputed_with_a_warning(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    encoder = ConvNetSmall(ConvNetSmall.Params(width=4, stages=2)).eval()
    images = ImageSet(torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8), torch.arange(6) % 2, ("a", "b"), "k")
    device = torch.device("cpu")
    first = FeatureCache(encoder, device, tmp_path)(images)
    (file,) = tmp_path.glob("*.pt")
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])  # a kill or a full disk
    capsys.readouterr()
    again = FeatureCache(encoder, device, tmp_path)(images)
    assert torch.equal(again, first)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {file}: unreadable") and "recomputing" in err[0]
    torch.save({"features": first[:3]}, file)  # readable but of another split: also recomputed
    assert torch.equal(FeatureCache(encoder, device, tmp_path)(images), first)
    assert "3 feature rows for a split of 6 images" in capsys.readouterr().err


def test_a_truncated_decode_cache_is_recomputed_with_a_warning(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    ctx = DataContext(root=tmp_path / "data", cache_dir=tmp_path / "cache")
    write_folder(ctx.root / "toy", {"a": 4, "b": 4})
    dataset = ImageFolder(ImageFolder.Params(path="toy", image_size=8))
    first = dataset.load("train", ctx)
    (file,) = ctx.cache_dir.glob("*.pt")
    file.write_bytes(file.read_bytes()[:100])
    capsys.readouterr()
    again = dataset.load("train", ctx)
    assert torch.equal(again.images, first.images) and again.key == first.key
    assert "cache discarded, recomputing it" in capsys.readouterr().err

    def rows(write):  # noqa: ANN001, ANN202
        write(torch.ones(4, 3, 2, 2, dtype=torch.uint8))
        return {"n": 4}

    path = tmp_path / "mapped.u8"
    cached_mapped(path, (3, 2, 2), rows)
    path.with_suffix(".json").write_text('{"shape": [4, 3')  # a truncated sidecar
    mapped, meta = cached_mapped(path, (3, 2, 2), rows)
    assert mapped.shape == (4, 3, 2, 2) and meta["n"] == 4
    assert "sidecar mapped.json unreadable" in capsys.readouterr().err
    path.write_bytes(path.read_bytes()[:10])  # truncated rows
    assert cached_mapped(path, (3, 2, 2), rows)[0].shape == (4, 3, 2, 2)
    assert "truncated" in capsys.readouterr().err


# 6. resources: huge and 16-bit images, string labels, memory ----------------------------------------


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG's signature and IHDR chunk claiming ``width`` x ``height`` (what is read before decoding)."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    crc = zlib.crc32(b"IHDR" + ihdr).to_bytes(4, "big")
    return b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + ihdr + crc


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert decode.max_pixels() == 64_000_000
    with pytest.raises(DataError, match=r"big\.png: image is 24000 x 24000 pixels \(576\.0 megapixels, 1\.7 GB "
                                        r"decoded\), over the limit of 64 megapixels; set BENCH_MAX_MEGAPIXELS"):
        decode.decode_blob(huge_png_header(24000, 24000) + b"rest of the file", "big.png")
    ctx = DataContext(root=tmp_path / "data", cache_dir=tmp_path / "cache")
    write_folder(ctx.root / "toy", {"a": 2, "b": 2})
    Image.new("L", (3000, 3000)).save(ctx.root / "toy" / "b" / "zz_big.png")  # 9 megapixels
    monkeypatch.setenv("BENCH_MAX_MEGAPIXELS", "4")
    dataset = ImageFolder(ImageFolder.Params(path="toy", image_size=8))
    with pytest.raises(DataError, match=r"toy/b/zz_big\.png: image is 3000 x 3000 pixels .* limit of 4 megapixels"):
        dataset.load("train", ctx)
    monkeypatch.setenv("BENCH_MAX_MEGAPIXELS", "10")  # raised: decoded
    assert len(dataset.load("train", ctx)) + len(dataset.load("test", ctx)) == 5


def test_a_16_bit_png_is_refused_naming_its_file_and_row(tmp_path: Path) -> None:
    ctx = DataContext(root=tmp_path / "data", cache_dir=tmp_path / "cache")
    write_folder(ctx.root / "toy", {"a": 2, "b": 2})
    wide = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(wide).save(ctx.root / "toy" / "a" / "zz_wide.png")
    with pytest.raises(DataError, match=r"toy/a/zz_wide\.png: 16-bit image; .* convert the image to 8 bits"):
        ImageFolder(ImageFolder.Params(path="toy", image_size=8)).load("train", ctx)
    folder = ctx.root / "pq"
    folder.mkdir()
    images = [{"bytes": png_bytes(np.zeros((8, 8, 3), np.uint8)), "path": "ok.png"},
              {"bytes": png_bytes(wide), "path": "wide.png"}]
    pq.write_table(pa.table({"img": images, "label": [0, 1]}), folder / "train.parquet")
    with pytest.raises(DataError, match=r"train\.parquet: row 1 \(path wide\.png\): 16-bit image"):
        ParquetImages(ParquetImages.Params(path="pq")).load("train", ctx)


def test_string_labels_name_the_file_column_and_row(tmp_path: Path) -> None:
    ctx = DataContext(root=tmp_path / "data", cache_dir=tmp_path / "cache")
    folder = ctx.root / "pq"
    folder.mkdir(parents=True)
    blob = png_bytes(np.zeros((8, 8, 3), np.uint8))
    pq.write_table(pa.table({"img": [blob, blob], "label": ["cat", "dog"]}), folder / "train.parquet")
    with pytest.raises(DataError, match=r"train\.parquet: column 'label' holds string values \(row 0: 'cat'\)"):
        ParquetImages(ParquetImages.Params(path="pq")).load("train", ctx)


def test_a_job_that_cannot_fit_in_memory_is_refused_before_training(tmp_path: Path, registry,  # noqa: ANN001
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    images = ImageSet(torch.zeros(10, 3, 16, 16, dtype=torch.uint8), torch.zeros(10, dtype=torch.int64), ("a",), "k")
    net = ConvNetSmall(ConvNetSmall.Params(width=4, stages=2))
    est = budget.estimate_pretrain_memory(images, 4, 2, net, torch.device("cpu"))
    assert est.data_bytes == est.resident_bytes == 10 * 3 * 16 * 16
    assert est.activation_bytes == 4 * 2 * 3 * 16 * 16 * 4 * budget.ACTIVATION_FACTOR
    assert budget.available_host_memory() is None or budget.available_host_memory() > 0
    on_gpu = budget.estimate_pretrain_memory(images, 4, 2, net, torch.device("cuda"))
    assert on_gpu.resident_bytes == 0  # the split is copied to the GPU: it needs room there
    assert budget.memory_problem(on_gpu, on_gpu.total_bytes - 1, torch.device("cuda"), "job").startswith(
        "job: pretraining needs about")
    assert budget.memory_problem(on_gpu, on_gpu.total_bytes, torch.device("cuda"), "job") is None
    assert budget.memory_problem(est, est.total_bytes - est.data_bytes, torch.device("cpu"), "job") is None  # held

    monkeypatch.setattr(budget, "available_memory", lambda device: 50_000)  # a machine with 50 kB free
    run = make_run(tmp_path, SHAPES.replace("METHOD", "simclr"), tmp_path, tmp_path / "out", registry)
    assert execute(run) == 1
    job, folder = run.plan.pretrain_jobs[0], run.folder
    log = folder.log(job.key).read_text()
    assert "simclr seed 0: pretraining needs about" in log and "this machine has 0.0 GB available" in log
    assert "batch 16 x 2 view(s) of 3x16x16" in log
    assert not folder.checkpoint(job.key).exists() and not folder.done_marker(job.key).exists()  # nothing ran
    monkeypatch.setenv("BENCH_MEMORY_CHECK", "0")  # the escape hatch when the estimate is wrong
    assert execute(make_run(tmp_path, SHAPES.replace("METHOD", "simclr"), tmp_path, tmp_path / "out", registry)) == 0
