"""Nothing a run folder holds executes code when the harness reads it back.

A shared output folder (a cluster's group-writable scratch) may hold files someone else planted. The
resumable checkpoint ``last.pt`` is the one file the harness used to unpickle without restriction.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest
import torch

from ssl_bench.harness.pipeline.plan import make_plan
from ssl_bench.harness.pipeline.specs import ComponentRef, DatasetRef, OptimizerSpec, PretrainSpec, load_benchmark
from ssl_bench.harness.pipeline.train import CHECKPOINT, pretrain
from ssl_bench.harness.testing import build_method, tiny_images
from tests.conftest import ROOT, TINY, bench_cmd
from tests.interrupt import Interrupt, stop_at


class Payload:
    """Unpickling this creates ``marker``: proof that a file ran code when it was read."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def spec() -> PretrainSpec:
    return PretrainSpec(dataset=DatasetRef(name="x"), backbone=ComponentRef(name="convnet_small"),
                        epochs=2, batch_size=8, checkpoint_every_steps=3, optimizer=OptimizerSpec(lr=0.05))


def train(registry, workdir: Path, stop_at_step: int | None = None):
    method = build_method(registry, "simclr")
    pipelines = {n: registry.get("augmentations", n)(registry.get("augmentations", n).Params()) for n in method.views}
    if stop_at_step is not None:
        stop_at(method, stop_at_step)
    return method, pretrain(method, pipelines, tiny_images(32), spec(), seed=0, device=torch.device("cpu"),
                            workdir=workdir, progress=False)


def test_genuine_checkpoint_with_a_hidden_payload_runs_nothing_and_the_run_starts_over(tmp_path, bench_registry, capfd):
    _, clean = train(bench_registry, tmp_path / "clean")
    with pytest.raises(Interrupt):
        train(bench_registry, tmp_path / "run", stop_at_step=5)
    ckpt = tmp_path / "run" / CHECKPOINT
    state = torch.load(ckpt, weights_only=True)
    marker = tmp_path / "payload-ran"
    state["stats"]["note"] = Payload(marker)  # a real checkpoint, one extra object inside
    torch.save(state, ckpt)

    _, again = train(bench_registry, tmp_path / "run")
    assert not marker.exists()
    assert again.resumed_from_step == 0 and again.epoch_losses == clean.epoch_losses
    assert (tmp_path / "run" / f"{CHECKPOINT}.discarded").exists()  # set aside, not deleted
    assert "set aside" in capfd.readouterr().err


@pytest.mark.parametrize("content", ["payload", "truncated", "foreign"])
def test_bad_checkpoint_is_discarded_with_a_warning(tmp_path, bench_registry, capfd, content):
    workdir = tmp_path / "run"
    workdir.mkdir()
    marker = tmp_path / "payload-ran"
    if content == "payload":
        torch.save(Payload(marker), workdir / CHECKPOINT)
    elif content == "truncated":
        with pytest.raises(Interrupt):
            train(bench_registry, workdir, stop_at_step=5)
        data = (workdir / CHECKPOINT).read_bytes()
        (workdir / CHECKPOINT).write_bytes(data[: len(data) // 2])
    else:
        torch.save({"method": {"w": torch.zeros(3)}, "optimizer": {}, "schedule": {}, "stats": {},
                    "step_losses": []}, workdir / CHECKPOINT)
    _, stats = train(bench_registry, workdir)
    assert not marker.exists()
    assert stats.steps == 8 and stats.resumed_from_step == 0
    assert f"{CHECKPOINT}:" in capfd.readouterr().err


@pytest.mark.slow
def test_planted_last_pt_in_a_run_folder_runs_nothing_through_the_cli(tmp_path, bench_registry, cli_env):
    bench_file = tmp_path / "tiny.toml"
    bench_file.write_text(TINY)
    plan = make_plan(load_benchmark(bench_file, None, bench_registry), bench_registry)
    job = next(j for j in plan.pretrain_jobs if j.method.name == "simclr")
    out = tmp_path / "out"
    planted = out / "artifacts" / job.key / CHECKPOINT
    planted.parent.mkdir(parents=True)
    marker = tmp_path / "payload-ran"
    torch.save(Payload(marker), planted)
    proc = subprocess.run(bench_cmd("run", str(bench_file), "--out", str(out)), capture_output=True, text=True,
                          env=cli_env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    assert "set aside" in proc.stderr
    assert list((out / "results").glob("*.parquet"))


UNSAFE_CALLS = {"eval", "exec", "compile"}
UNSAFE_ATTRS = {("pickle", "load"), ("pickle", "loads"), ("yaml", "load"), ("marshal", "loads"),
                ("numpy", "load"), ("np", "load")}


def test_no_unsafe_deserialisation_or_shell_in_the_product():
    """Every torch.load is weights-only; no eval/exec/pickle.load/yaml.load/shell=True anywhere."""
    offences = []
    for path in [*ROOT.joinpath("harness").rglob("*.py"), *ROOT.joinpath("plugins").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            fn = node.func
            if isinstance(fn, ast.Name) and fn.id in UNSAFE_CALLS:
                offences.append(f"{where} {fn.id}()")
            if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name):
                if (fn.value.id, fn.attr) in UNSAFE_ATTRS:
                    offences.append(f"{where} {fn.value.id}.{fn.attr}()")
                if (fn.value.id, fn.attr) == ("torch", "load"):
                    kw = {k.arg: k.value for k in node.keywords}
                    if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                        offences.append(f"{where} torch.load without weights_only=True")
            for k in node.keywords:
                if k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False):
                    offences.append(f"{where} shell=")
    assert not offences, "\n".join(offences)
