"""The five study benchmark files: every profile validates, and the smoke profile runs end to end."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from ssl_bench.harness.pipeline.plan import make_plan
from ssl_bench.harness.pipeline.specs import load_benchmark
from ssl_bench.harness.plugins import collect, make_plugin_manager
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from tests.conftest import ROOT
from tests.test_cli import bench

REGISTRY = collect(make_plugin_manager(load_entrypoints=False))
STUDIES = ["transfer", "pretrained_inference", "simclr_vs_rotnet", "pretext_tasks", "survey"]


@pytest.mark.parametrize("study", STUDIES)
@pytest.mark.parametrize("profile", ["paper", "cpu", "smoke"])
def test_every_profile_validates(study, profile, monkeypatch):
    monkeypatch.setenv("BENCH_CHECKPOINT", "unused.pt")
    spec = load_benchmark(ROOT / "benchmarks" / f"{study}.toml", profile=profile, registry=REGISTRY)
    assert spec.name == study


def pretraining_keys(path, profile=None):
    plan = make_plan(load_benchmark(path, profile=profile, registry=REGISTRY), REGISTRY)
    return {job.key: job.label for job in plan.pretrain_jobs}


@pytest.mark.parametrize("study", ["transfer", "simclr_vs_rotnet", "pretext_tasks", "survey"])
def test_cpu_profile_shares_encoders_with_methods_cifar10_cpu(study):
    """Every method of a cpu profile is pretrained at least once exactly as in methods_cifar10_cpu.toml,
    so one ``--out`` trains each shared encoder once (and a profile inherits no 224 px ImageNet params)."""
    shared = pretraining_keys(ROOT / "benchmarks" / "methods_cifar10_cpu.toml")
    own = pretraining_keys(ROOT / "benchmarks" / f"{study}.toml", "cpu")
    assert {label for key, label in own.items() if key in shared} == set(own.values())


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_smoke_profile_runs_every_job(study, tmp_path, cli_env):
    torch.manual_seed(0)
    checkpoint = tmp_path / "encoder.pt"  # pretrained_inference's smoke profile loads it
    torch.save(ConvNetSmall(ConvNetSmall.Params(width=8)).state_dict(), checkpoint)
    cli_env["BENCH_CHECKPOINT"] = str(checkpoint)
    out = tmp_path / study
    proc = bench("run", str(ROOT / "benchmarks" / f"{study}.toml"), "--profile", "smoke", "--out", str(out),
                 env=cli_env)
    assert "0 failed" in proc.stderr
    spec = load_benchmark(ROOT / "benchmarks" / f"{study}.toml", profile="smoke")
    rows = [r for f in (out / "results").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert {r["label"] for r in rows} == {m.label or m.name for m in spec.methods}
    assert {r["evaluator"] for r in rows} == {e.name for e in spec.evaluations}
