"""The preflight of ``bench run`` (issue 16): every missing dataset in one line before any job, a cost
estimate from budgets and this device's measured speed, and a question or refusal above ``--max-hours``."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from ssl_bench.harness import cli
from ssl_bench.harness.components import DataContext
from ssl_bench.harness.errors import UsageError
from ssl_bench.harness.pipeline import preflight as pf
from ssl_bench.harness.pipeline import speed
from ssl_bench.harness.pipeline.plan import make_plan
from ssl_bench.harness.pipeline.runner import Run
from ssl_bench.harness.pipeline.specs import load_benchmark
from ssl_bench.harness.pipeline.train import resolve_device
from ssl_bench.harness.plugins import collect, make_plugin_manager
from tests.conftest import TINY

MISSING = """
[[evaluations]]
name = "knn"
datasets = ["cifar10", "cifar100", { name = "parquet", params = { path = "nowhere" } }]

[[evaluations]]
name = "linear"
datasets = ["cifar10"]
"""
"""Three datasets that an empty data root lacks; CIFAR-10 is needed by two evaluations (and both its splits)."""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # as under a scheduler or in a pipe


def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--no-plugins", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def errors(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("bench: error:")]


def written(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file()] if out.exists() else []


def test_every_missing_dataset_is_named_once_in_one_line_and_nothing_runs(write_toml, tmp_path, capsys, cache,
                                                                          no_terminal):
    out = tmp_path / "o"
    code, _, err = bench(capsys, "run", str(write_toml(TINY + MISSING)), "--out", str(out), "--data-root",
                         str(tmp_path / "empty"), "--device", "cpu", "--no-progress")
    assert code == 2
    (line,) = errors(err)
    assert "3 datasets the plan needs cannot be loaded" in line
    assert line.count("cifar10: no data found") == 1  # four evaluations x two splits, one dataset: said once
    assert "cifar100: no data found" in line and f"parquet: folder {tmp_path / 'empty' / 'nowhere'} not found" in line
    assert "BENCH_DATA_ROOT" in line
    assert "FAILED" not in err and not written(out)  # refused before the first job


def test_a_missing_pretraining_set_is_reported_with_the_evaluation_sets(write_toml, tmp_path, capsys, cache,
                                                                        no_terminal):
    text = TINY.replace('{ name = "shapes", params = { n_train = 128, n_test = 64 } }', '{ name = "cifar10" }')
    code, _, err = bench(capsys, "run", str(write_toml(text + MISSING)), "--out", str(tmp_path / "o"),
                         "--data-root", str(tmp_path / "empty"), "--device", "cpu")
    (line,) = errors(err)
    assert code == 2 and line.count("cifar10: no data found") == 1 and "3 datasets" in line


def test_a_dry_run_prints_the_plan_and_the_estimate_and_writes_nothing(write_toml, tmp_path, capsys, cache):
    out = tmp_path / "o"
    code, stdout, err = bench(capsys, "run", str(write_toml(TINY)), "--out", str(out), "--device", "cpu",
                              "--dry-run")
    assert code == 0 and stdout.count("[todo] pretrain") == 2
    (line,) = [line for line in err.splitlines() if line.startswith("preflight: ")]
    # simclr: 1 epoch of 128 images in batches of 32 = 4 steps, two views; random_init trains nothing
    assert line.startswith("preflight: 1 encoder to train, 128 images (256 views), about ")
    assert "of training on cpu" in line and "4 evaluations to run" in line
    assert not out.exists()


def test_a_dry_run_with_missing_data_warns_and_still_exits_0(write_toml, tmp_path, capsys, cache):
    code, _, err = bench(capsys, "run", str(write_toml(TINY + MISSING)), "--out", str(tmp_path / "o"),
                         "--data-root", str(tmp_path / "empty"), "--device", "cpu", "--dry-run")
    assert code == 0 and not errors(err)
    (warning,) = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert "3 datasets the plan needs cannot be loaded" in warning


def test_over_the_threshold_without_a_terminal_it_refuses_and_points_at_the_cpu_profile_and_yes(
        write_toml, tmp_path, capsys, cache, no_terminal):
    text = TINY + "\n[profiles.cpu]\npretrain = { epochs = 1, dataset = { params = { n_train = 64 } } }\n"
    out = tmp_path / "o"
    code, _, err = bench(capsys, "run", str(write_toml(text)), "--out", str(out), "--device", "cpu",
                         "--max-hours", "1e-9", "--no-progress")
    assert code == 2
    (line,) = errors(err)
    assert "estimated " in line and "of pretraining on cpu (128 images), over --max-hours 1e-09" in line
    assert "--profile cpu" in line and "--yes" in line
    assert any(x.startswith("preflight: 1 encoder to train") for x in err.splitlines())
    assert not written(out)


def test_the_cheapest_profile_is_suggested_where_there_is_no_cpu_one(write_toml, tmp_path, capsys, cache,
                                                                      no_terminal):
    text = (TINY.replace("epochs = 1", "epochs = 3")
            + "\n[profiles.big]\npretrain = { epochs = 9 }\n[profiles.small]\npretrain = { epochs = 2 }\n"
            + "[profiles.smaller]\npretrain = { epochs = 1 }\n")
    code, _, err = bench(capsys, "run", str(write_toml(text)), "--out", str(tmp_path / "o"), "--device", "cpu",
                         "--max-hours", "1e-9")
    (line,) = errors(err)
    assert code == 2 and "--profile smaller" in line
    code, _, err = bench(capsys, "run", str(write_toml(text)), "--profile", "smaller", "--out",
                         str(tmp_path / "o"), "--device", "cpu", "--max-hours", "1e-9")
    (line,) = errors(err)
    assert code == 2 and "--profile" not in line and "--yes" in line  # nothing cheaper than the cheapest


def test_on_a_terminal_it_asks_and_no_means_not_started(write_toml, tmp_path, capsys, cache, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    out = tmp_path / "o"
    code, _, err = bench(capsys, "run", str(write_toml(TINY)), "--out", str(out), "--device", "cpu",
                         "--max-hours", "1e-9")
    assert code == 2 and "Run it? [y/N] " in err  # (on a terminal the answer's newline ends the prompt's line)
    assert "bench: error: not started (estimated " in err and "Traceback" not in err and not written(out)


@pytest.mark.slow
def test_yes_runs_it_anyway_and_finished_jobs_cost_nothing(write_toml, tmp_path, capsys, cache, no_terminal,
                                                           one_thread):
    path, out = write_toml(TINY), tmp_path / "o"
    code, _, err = bench(capsys, "run", str(path), "--out", str(out), "--device", "cpu", "--max-hours", "1e-9",
                         "--yes", "--no-progress")
    assert code == 0 and not errors(err) and len(list((out / "results").glob("*.parquet"))) == 4
    code, _, err = bench(capsys, "run", str(path), "--out", str(out), "--device", "cpu", "--max-hours", "1e-9")
    assert code == 0 and not errors(err)  # all cached: no estimate above any threshold
    assert "preflight" not in err and "nothing to do" in err


def test_max_hours_must_be_a_positive_number(write_toml, tmp_path, capsys, cache):
    for value in ("0", "-1", "nan"):
        code, _, err = bench(capsys, "run", str(write_toml(TINY)), "--out", str(tmp_path / "o"), "--device", "cpu",
                             "--max-hours", value, "--dry-run")
        (line,) = errors(err)
        assert code == 2 and f"--max-hours {float(value)}: give a number of hours above 0" in line


# --- the estimate, with the probe replaced by a fixed speed ----------------------------------------------------

SWEEP = TINY.replace("checkpoint_every_steps = 1", "checkpoint_every_steps = 1\nsweep = { lr = [0.1, 0.01] }")


def make_run(tmp_path: Path, text: str) -> Run:
    registry = collect(make_plugin_manager(load_entrypoints=False))
    path = tmp_path / "bench.toml"
    path.write_text(text)
    spec = load_benchmark(path, registry=registry)
    ctx = DataContext(root=tmp_path, cache_dir=tmp_path / "cache")
    pm = make_plugin_manager(load_entrypoints=False)
    return Run(spec, make_plan(spec, registry, path.name, data=ctx), registry, pm, tmp_path / "out",
               resolve_device("cpu"), ctx, progress=False)


@pytest.fixture
def fixed_speed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every probe says 0.5 s per step; returns the batch sizes it was asked about."""
    asked: list[int] = []

    def probe(run, job, data, batch, budget_s):  # noqa: ANN001
        asked.append(batch)
        return 0.5

    monkeypatch.setattr(speed, "time_steps", probe)
    return asked


def test_steps_images_views_and_seconds_follow_the_budget(tmp_path, fixed_speed):
    run = make_run(tmp_path, TINY.replace("epochs = 1", "epochs = 3"))
    found = pf.estimate(run)
    (training,) = [t for t in found.trainings if t.steps]  # simclr; random_init takes no step
    assert (training.steps, training.batch, training.views, training.images) == (3 * 4, 32, 2, 3 * 128)
    assert found.seconds == pytest.approx(12 * 0.5) and found.evaluations == 4
    assert fixed_speed == [32]  # one configuration, probed once


def test_a_pretraining_sweep_costs_each_cell_and_one_probe_serves_both(tmp_path, fixed_speed):
    run = make_run(tmp_path, SWEEP)
    found = pf.estimate(run)
    cells = [t for t in found.trainings if t.steps]
    assert len(cells) == 2 and {t.job.kind for t in cells} == {"cell"} and found.images == 2 * 128
    assert fixed_speed == [32]  # lr does not change the speed: one probe


def test_saved_encoders_and_finished_evaluations_cost_nothing(tmp_path, fixed_speed):
    run = make_run(tmp_path, TINY)
    simclr = next(j for j in run.plan.pretrain_jobs if j.method.name == "simclr")
    done = run.folder.done_marker(simclr.key)
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    found = pf.estimate(run)
    assert not [t for t in found.trainings if t.steps] and found.encoders_done == 1 and found.evaluations == 4
    results = run.folder.results_dir
    results.mkdir(parents=True)
    for e in run.plan.eval_jobs:
        run.folder.result(e.key).write_bytes(b"rows")
    assert pf.estimate(run).evaluations == 0


def test_a_checkpoint_s_steps_are_not_counted_again(tmp_path, fixed_speed):
    run = make_run(tmp_path, TINY.replace("epochs = 1", "epochs = 3"))
    simclr = next(j for j in run.plan.pretrain_jobs if j.method.name == "simclr")
    path = run.folder.checkpoint(simclr.key)
    path.parent.mkdir(parents=True)
    torch.save({"stats": {"steps": 5}, "method": {}}, path)
    (training,) = [t for t in pf.estimate(run).trainings if t.steps]
    assert training.steps == 3 * 4 - 5


def test_the_preflight_leaves_the_global_rng_as_it_was(tmp_path):
    run = make_run(tmp_path, TINY)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    pf.preflight(run, dry_run=True)  # loads the data and times real steps
    assert torch.equal(torch.get_rng_state(), before)


def test_a_speed_between_batch_sizes_follows_the_line_through_the_last_two():
    assert speed.seconds_at([(2, 0.1), (4, 0.2)], 4) == 0.2
    assert speed.seconds_at([(2, 0.1), (4, 0.2), (8, 0.3)], 32) == pytest.approx(0.3 + 0.025 * 24)
    assert speed.seconds_at([(8, 0.4)], 32) == pytest.approx(1.6)  # one size: proportional
    assert speed.seconds_at([(2, 0.3), (4, 0.2)], 8) == 0.2  # noise that falls with size: flat, never below


def test_a_refusal_names_the_estimate_without_a_terminal(tmp_path, fixed_speed, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    run = make_run(tmp_path, TINY.replace("epochs = 1", "epochs = 100"))
    with pytest.raises(UsageError, match=r"estimated 3 min 20 s of pretraining on cpu \(12,800 images\), over "
                                         r"--max-hours 0\.01; a smaller budget .* --yes"):
        pf.preflight(run, max_hours=0.01)
    assert pf.preflight(run, max_hours=0.01, assume_yes=True).seconds == pytest.approx(400 * 0.5)
