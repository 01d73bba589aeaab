"""The per-step event: when it fires, what its metrics hold, named loss terms (VICReg, BYOL, under DDP), no warnings,
and the logging around it (levels, env switches, plurals, the plan clock)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest
import torch

from ssl_bench.harness import LossTerms, hookimpl
from ssl_bench.harness.cli import main
from ssl_bench.harness.errors import BenchError, UsageError
from ssl_bench.harness.pipeline import logs
from ssl_bench.harness.pipeline.optim import lr_factor
from ssl_bench.harness.pipeline.specs import ComponentRef, DatasetRef, OptimizerSpec, PretrainSpec
from ssl_bench.harness.pipeline.train import _Loss, distributed_loss, pretrain
from ssl_bench.harness.testing import build_method, method_batch, structured_images, tiny_images
from ssl_bench.plugins.methods.byol import byol_loss

SMALL_VICREG = {"proj_hidden_dim": 16, "proj_dim": 8}


def spec(**kw):
    kw = {"epochs": 2, "batch_size": 8, "checkpoint_every_steps": 100, "optimizer": OptimizerSpec(lr=0.05)} | kw
    return PretrainSpec(dataset=DatasetRef(name="x"), backbone=ComponentRef(name="convnet_small"), **kw)


def pipelines(registry, method):
    return {n: registry.get("augmentations", n)(registry.get("augmentations", n).Params()) for n in method.views}


def train_logged(registry, tmp_path, name="simclr", params=None, **kw):
    """Pretrain ``name`` on 32 tiny images (4 steps an epoch); returns the stats and every ``on_step`` call."""
    method = build_method(registry, name, params=params)
    calls: list[tuple[int, dict[str, float]]] = []
    stats = pretrain(method, pipelines(registry, method), tiny_images(32), kw.pop("spec", spec()), seed=0,
                     device=torch.device("cpu"), workdir=tmp_path, progress=kw.pop("progress", False),
                     on_step=lambda step, metrics: calls.append((step, metrics)), **kw)
    return stats, calls


def test_the_event_fires_every_n_steps_and_at_the_last(tmp_path, bench_registry, monkeypatch, one_thread):
    monkeypatch.setenv("BENCH_LOG_EVERY", "3")
    s = spec()
    stats, calls = train_logged(bench_registry, tmp_path, spec=s)
    assert stats.steps == 8
    assert [step for step, _ in calls] == [3, 6, 8]  # every 3, and the last step whatever the period
    for step, metrics in calls:
        assert set(metrics) == {"loss", "lr", "images_per_s", "epoch"}  # simclr returns a plain Tensor: no terms
        assert all(isinstance(v, float) for v in metrics.values())
        assert metrics["epoch"] == pytest.approx(step / 4)
        assert metrics["lr"] == pytest.approx(0.05 * lr_factor(s.schedule, step - 1, 8, 4), rel=1e-9)
        assert metrics["images_per_s"] > 0
    assert calls[-1][1]["loss"] == pytest.approx(stats.final_loss, rel=1e-6)  # the last step's loss


def test_the_default_period_is_ten_steps(tmp_path, bench_registry, monkeypatch, one_thread):
    monkeypatch.delenv("BENCH_LOG_EVERY", raising=False)
    _, calls = train_logged(bench_registry, tmp_path, spec=spec(epochs=6, batch_size=16))  # 2 an epoch, 12 steps
    assert [step for step, _ in calls] == [10, 12]


def test_vicreg_logs_its_three_terms_and_its_total_is_their_weighted_sum(tmp_path, bench_registry, monkeypatch,
                                                                       one_thread):
    monkeypatch.setenv("BENCH_LOG_EVERY", "2")
    _, calls = train_logged(bench_registry, tmp_path, "vicreg", SMALL_VICREG, spec=spec(epochs=1))
    assert [step for step, _ in calls] == [2, 4]
    for _, metrics in calls:
        assert {"loss/invariance", "loss/variance", "loss/covariance"} <= set(metrics)
        weighted = 25 * metrics["loss/invariance"] + 25 * metrics["loss/variance"] + metrics["loss/covariance"]
        assert metrics["loss"] == pytest.approx(weighted, rel=1e-5)


def test_vicreg_total_is_bit_identical_to_its_formula(bench_registry):
    method = build_method(bench_registry, "vicreg", params=SMALL_VICREG).eval()
    batch = method_batch(bench_registry, method, structured_images(8))
    out = method.loss(batch)
    assert isinstance(out, LossTerms) and list(out.terms) == ["invariance", "variance", "covariance"]
    t = method.loss_terms(batch)
    assert torch.equal(out.total, 25.0 * t["invariance"] + 25.0 * t["variance"] + 1.0 * t["covariance"])
    assert all(torch.equal(out.terms[k], t[k]) for k in t)
    assert out.total.requires_grad and out.item() == float(out) == out.total.item()


def test_byol_returns_its_two_directions_and_the_same_total(bench_registry):
    method = build_method(bench_registry, "byol").eval()
    batch = method_batch(bench_registry, method, structured_images(8))
    out = method.loss(batch)
    assert isinstance(out, LossTerms) and set(out.terms) == {"v1_to_v2", "v2_to_v1"}
    x1, x2 = batch.views
    p1, p2 = (method.predictor(method.projector(method.backbone(x))) for x in (x1, x2))
    with torch.no_grad():
        z1, z2 = method.target(x1), method.target(x2)
    assert torch.equal(out.total, byol_loss(p1, p2, z1, z2))
    assert torch.equal(out.total, out.terms["v1_to_v2"] + out.terms["v2_to_v1"])
    assert out.terms["v1_to_v2"].item() != pytest.approx(out.terms["v2_to_v1"].item())  # two different directions


def test_the_ddp_wrapper_returns_the_total_and_keeps_the_terms(tmp_path, bench_registry, one_thread):
    method = build_method(bench_registry, "vicreg", params=SMALL_VICREG).eval()
    batch = method_batch(bench_registry, method, structured_images(8))
    expected = method.loss(batch)
    wrapper = _Loss(method)
    total = wrapper(batch)
    assert isinstance(total, torch.Tensor) and torch.equal(total, expected.total)
    assert list(wrapper.terms) == ["invariance", "variance", "covariance"]
    assert all(not t.requires_grad and torch.equal(t, expected.terms[k]) for k, t in wrapper.terms.items())
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        ddp = distributed_loss(method, torch.device("cpu"))
        out = ddp(batch)
        assert isinstance(out, torch.Tensor) and torch.equal(out, expected.total)
        assert set(ddp.module.terms) == {"invariance", "variance", "covariance"}
        out.backward()
        assert any(p.grad is not None for p in method.backbone.parameters())
    finally:
        torch.distributed.destroy_process_group()


def test_a_term_that_is_not_a_scalar_is_a_clear_error(tmp_path, bench_registry):
    method = build_method(bench_registry, "simclr")
    real = method.loss
    method.loss = lambda batch: LossTerms(real(batch), {"per_sample": torch.ones(3)})
    with pytest.raises(BenchError, match=r"simclr.loss: LossTerms term 'per_sample' must be a scalar Tensor, got a "
                                         r"tensor of shape \(3,\)"):
        pretrain(method, pipelines(bench_registry, method), tiny_images(16), spec(), seed=0,
                 device=torch.device("cpu"), workdir=tmp_path, progress=False)


def test_no_warning_during_a_run_with_the_progress_bar(tmp_path, bench_registry, one_thread):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats, calls = train_logged(bench_registry, tmp_path, "vicreg", SMALL_VICREG, progress=True)
    assert stats.steps == 8 and calls
    assert [str(w.message) for w in caught] == []


def test_lines_without_a_bar_name_the_step_and_the_eta(tmp_path, bench_registry, capsys, one_thread):
    train_logged(bench_registry, tmp_path, spec=spec(epochs=1), desc="simclr s0", progress_every_s=0.0)
    lines = [line for line in capsys.readouterr().err.splitlines() if "simclr s0: step" in line]
    assert [line.split("step ")[1].split(",")[0] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert all(", epoch 1/1, loss " in line and " img/s, ETA " in line for line in lines)
    assert lines[-1].endswith("ETA 0 s")


def test_no_lines_with_a_bar_or_by_default(tmp_path, bench_registry, capsys, one_thread):
    train_logged(bench_registry, tmp_path / "a", spec=spec(epochs=1), desc="simclr s0")
    train_logged(bench_registry, tmp_path / "b", spec=spec(epochs=1), desc="simclr s0", progress=True,
                 progress_every_s=0.0)
    assert "simclr s0: step" not in capsys.readouterr().err


def test_bad_env_switches_are_usage_errors(monkeypatch, capsys):
    for name, value in (("BENCH_LOG_EVERY", "0"), ("BENCH_LOG_EVERY", "ten"), ("BENCH_PROGRESS_EVERY", "-1"),
                        ("BENCH_PROGRESS_EVERY", "nan")):
        monkeypatch.setenv(name, value)
        with pytest.raises(UsageError, match=rf"{name}={value}: give"):
            logs.configure_logging()
        assert main(["list", "methods"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"bench: error: {name}={value}: give") and err.count("\n") == 1
        monkeypatch.delenv(name)
    monkeypatch.setenv("BENCH_PROGRESS_EVERY", "0.5")
    assert logs.progress_every_s() == 0.5


def test_verbosity_chooses_what_reaches_stderr(capsys):
    try:
        for verbosity, shown in ((-1, ["warning", "error"]), (0, ["info", "warning", "error"]),
                                 (1, ["debug", "info", "warning", "error"])):
            logs.configure_logging(verbosity)
            log = logs.logger()
            for level in ("debug", "info", "warning", "error"):
                log.log(getattr(logging, level.upper()), f"a {level} line")
            assert capsys.readouterr().err.splitlines() == [f"a {level} line" for level in shown]  # the message alone
    finally:
        logs.configure_logging(0)


def test_a_job_log_gets_info_lines_even_when_quiet(tmp_path, capsys):
    path = tmp_path / "job" / "log.txt"
    try:
        logs.configure_logging(-1)
        with logs.job_log(path):
            logs.logger().debug("not this")
            logs.logger().info("pretraining x")
            logs.logger().warning("timing contended")
        logs.logger().info("after the job")
    finally:
        logs.configure_logging(0)
    text = path.read_text().splitlines()
    assert [line.split(" ", 3)[2:] for line in text] == [["INFO", "pretraining x"], ["WARNING", "timing contended"]]
    assert capsys.readouterr().err == "timing contended\n"
    with logs.job_log(tmp_path / "silent" / "log.txt"):
        pass
    assert not (tmp_path / "silent").exists()  # a job that says nothing leaves no file


def test_plurals_durations_and_the_plan_clock():
    assert [logs.counted(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert [logs.duration(s) for s in (0.4, 59, 61, 3725, 90000, float("inf"))] == [
        "0 s", "59 s", "1 min 01 s", "1 h 02 min", "1 d 01 h", "?"]
    assert logs.plan_clock(100.0, 2, 6, now=160.0) == " | elapsed 1 min 00 s, ETA 3 min 00 s"  # 30 s each, 6 left
    assert logs.plan_clock(100.0, 2, 0, now=160.0) == " | elapsed 1 min 00 s"


def test_the_pretraining_lines_say_1_epoch_and_1_step(tmp_path: Path, write_toml, monkeypatch, capsys, one_thread):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    path = write_toml("""
name = "one"
seeds = [0]
[pretrain]
dataset = { name = "shapes", params = { n_train = 16, n_test = 16, image_size = 16 } }
backbone = { name = "convnet_small" }
epochs = 1
batch_size = 16
[[methods]]
name = "simclr"
[[evaluations]]
name = "knn"
params = { k = 3 }
""")
    assert main(["--no-plugins", "run", str(path), "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "pretraining simclr seed 0 (1 epoch of shapes on cpu)" in err
    assert "pretrained simclr seed 0: 1 step, loss " in err
    assert "[1/1] simclr seed 0 | knn on shapes: " in err and " | elapsed " in err


class StepEvents:
    """A tracker that keeps every ``bench_step_logged`` call."""

    def __init__(self):
        self.seen = []

    @hookimpl
    def bench_step_logged(self, job, step, metrics, artifacts):
        self.seen.append((job, step, dict(metrics), artifacts))


def test_hook_bench_step_logged(tmp_path, monkeypatch, one_thread):
    from ssl_bench.harness.components import DataContext
    from ssl_bench.harness.pipeline.plan import make_plan
    from ssl_bench.harness.pipeline.runner import Run, execute
    from ssl_bench.harness.pipeline.specs import load_benchmark
    from ssl_bench.harness.pipeline.train import resolve_device
    from ssl_bench.harness.plugins import collect, make_plugin_manager

    monkeypatch.setenv("BENCH_LOG_EVERY", "2")
    pm = make_plugin_manager(load_entrypoints=False)
    events = StepEvents()
    pm.register(events, name="test-step-events")
    registry = collect(pm)
    path = tmp_path / "t.toml"
    path.write_text("""
name = "steps"
seeds = [0]
[pretrain]
dataset = { name = "shapes", params = { n_train = 24, n_test = 16, image_size = 16 } }
backbone = { name = "convnet_small" }
epochs = 1
batch_size = 8
[[methods]]
name = "vicreg"
params = { proj_hidden_dim = 16, proj_dim = 8 }
[[methods]]
name = "random_init"
[[evaluations]]
name = "knn"
params = { k = 3 }
""")
    spec = load_benchmark(path, registry=registry)
    run = Run(spec, make_plan(spec, registry), registry, pm, tmp_path / "out", resolve_device("cpu"),
              DataContext(root=tmp_path, cache_dir=tmp_path / "cache"), progress=False)
    assert execute(run) == 0
    vicreg = next(j for j in run.plan.pretrain_jobs if j.method.name == "vicreg")
    assert [(job, step) for job, step, _, _ in events.seen] == [(vicreg, 2), (vicreg, 3)]  # random_init trains not
    assert all(artifacts == run.folder.artifacts(vicreg.key) for *_, artifacts in events.seen)
    assert all({"loss/invariance", "loss/variance", "loss/covariance", "lr"} <= set(m) for _, _, m, _ in events.seen)
    logged = [json.loads(line) for line in run.folder.metrics_log(vicreg.key).read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in logged] == [(s, m["loss"]) for _, s, m, _ in events.seen]  # by jsonl
    untrained = next(j for j in run.plan.pretrain_jobs if j.method.name == "random_init")
    assert run.folder.text_log(vicreg.key).is_file() and not run.folder.text_log(untrained.key).exists()
