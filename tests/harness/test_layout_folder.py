"""RunFolder is the one owner of an output folder's layout: the runner writes where it says, the dry run
reads the same paths, and the ``pretrained`` method finds another run's encoder through it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssl_bench.harness import RunFolder
from ssl_bench.harness.cli import main
from ssl_bench.harness.pipeline import train
from ssl_bench.harness.pipeline.plan import make_plan
from ssl_bench.harness.pipeline.specs import load_benchmark
from ssl_bench.harness.plugins import collect, make_plugin_manager
from ssl_bench.plugins.methods.pretrained import Pretrained, resolve_path

# A pretraining sweep (select + 2 cells) beside a plain run, a gallery that writes evaluations/<key>/,
# and an evaluation on a split that does not exist, so its jobs fail and leave logs/<key>.log.
LAYOUT = """
name = "layout"
seeds = [0]
val_fraction = 0.25

[pretrain]
dataset = { name = "shapes", params = { n_train = 128, n_test = 64 } }
backbone = { name = "convnet_small" }
epochs = 1
batch_size = 32
sweep = { lr = [0.5, 0.05] }
select = "knn.top1"

[[methods]]
name = "simclr"
params = { temperature = 0.5 }

[[methods]]
name = "random_init"

[[evaluations]]
name = "gallery"
params = { n_images = 4, columns = 2, tile_px = 16 }

[[evaluations]]
name = "knn"
datasets = [{ name = "shapes", params = { n_train = 128, n_test = 64 }, train_split = "nope" }]
"""


def test_the_names_are_the_documented_ones() -> None:
    folder = RunFolder("out")
    assert folder.encoder("k") == Path("out/artifacts/k/encoder.pt")
    assert folder.stats("k") == Path("out/artifacts/k/pretrain.json")
    assert folder.selection("k") == Path("out/artifacts/k/selection.json")
    assert folder.features("k") == Path("out/artifacts/k/features")
    assert folder.result("e") == Path("out/results/e.parquet")
    assert folder.evaluation("e") == Path("out/evaluations/e")
    assert folder.log("e") == Path("out/logs/e.log")
    assert folder.leaderboard == Path("out/leaderboard.md")
    assert folder.checkpoint("k") == Path("out/artifacts/k") / train.CHECKPOINT  # where train.pretrain writes it
    assert folder.done_marker("k", select=True) == folder.selection("k")
    assert folder.job_spec("k") == Path("out/artifacts/k/job.json")
    assert folder.done_marker("k") == folder.done("k") == Path("out/artifacts/k/done.json")  # written last


@pytest.mark.slow
def test_runner_dry_run_and_pretrained_agree_on_every_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    path, out = tmp_path / "layout.toml", tmp_path / "out"
    path.write_text(LAYOUT)
    argv = ["--no-plugins", "run", str(path), "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main(argv) == 1  # the knn jobs on the missing split fail; everything else is recorded
    registry = collect(make_plugin_manager(load_entrypoints=False))
    plan = make_plan(load_benchmark(path, registry=registry), registry, path.name)
    folder = RunFolder(out)

    select, plain = plan.pretrain_jobs
    assert (select.kind, plain.kind) == ("select", "run")
    assert folder.selection(select.key).is_file() and not folder.encoder(select.key).exists()
    assert folder.job_spec(select.key).is_file()
    for job in [*select.candidates, plain]:
        assert folder.encoder(job.key).is_file() and folder.stats(job.key).is_file()
        assert folder.job_spec(job.key).is_file() and folder.done_marker(job.key).is_file()
        assert not folder.checkpoint(job.key).exists()  # removed once the encoder is saved
        assert folder.features(job.key).is_dir()  # every cell is scored on validation features
    failed = {e.key for e in plan.eval_jobs if e.evaluator.name == "knn"}
    for e in plan.eval_jobs:
        assert folder.result(e.key).is_file() == (e.key not in failed)
        assert folder.log(e.key).is_file() == (e.key in failed)
        assert (folder.evaluation(e.key) / "gallery.png").is_file() == (e.evaluator.name == "gallery")
    assert folder.leaderboard.is_file()

    # nothing lies where the layout names nothing
    named = {folder.artifacts_dir, folder.results_dir, folder.evaluations_dir, folder.logs_dir, folder.leaderboard}
    assert set(out.iterdir()) <= named
    for job_dir in folder.artifacts_dir.iterdir():
        key = job_dir.name
        assert set(job_dir.iterdir()) <= {folder.encoder(key), folder.stats(key), folder.selection(key),
                                          folder.features(key), folder.job_spec(key), folder.done(key),
                                          folder.metrics_log(key), folder.text_log(key)}

    # the dry run reads the same files
    capsys.readouterr()
    assert main([*argv, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("[done] ") for line in lines) == 4 + 2  # 4 pretraining jobs, 2 galleries
    assert {line.split()[2] for line in lines if line.startswith("[todo] ")} == failed

    # the pretrained method finds the encoder the sweep chose, by label, and an artifact folder directly
    winner = json.loads(folder.selection(select.key).read_text())["winner"]
    assert winner in {c.key for c in select.candidates}
    assert resolve_path(Pretrained.Params(path=str(out), label="simclr")) == folder.encoder(winner)
    assert resolve_path(Pretrained.Params(path=str(folder.artifacts(plain.key)))) == folder.encoder(plain.key)
