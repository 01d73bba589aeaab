"""Three hygiene rules: the supervised baseline never trains on the rows that choose its probe, no
``train_split`` may be the scored split, and kNN votes stay finite at any temperature."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from ssl_bench.harness.components import DataContext, EvalTask
from ssl_bench.harness.data import ImageSet
from ssl_bench.harness.errors import SpecError
from ssl_bench.harness.kit.metrics import classification_metrics
from ssl_bench.harness.pipeline import encoders, sweep
from ssl_bench.harness.pipeline.plan import make_plan
from ssl_bench.harness.pipeline.runner import Run, execute
from ssl_bench.harness.pipeline.specs import load_benchmark
from ssl_bench.harness.pipeline.train import resolve_device
from ssl_bench.harness.plugins import Registry, collect, make_plugin_manager
from ssl_bench.plugins.evaluators.knn import KNN, knn_scores
from tests.conftest import bench_cmd

BENCH = """
name = "hygiene"
seeds = [1]
val_fraction = 0.25

[pretrain]
dataset = { name = "shapes", params = { n_train = 64, n_test = 32, image_size = 16 } }
backbone = { name = "convnet_small", params = { width = 4, stages = 2 } }
epochs = 1
batch_size = 16

[[methods]]
name = "supervised"

[[methods]]
name = "simclr"

[[evaluations]]
name = "linear"
sweep = { lr = [0.1, 0.01] }
"""

SHAPES = '{ name = "shapes", params = { n_train = 64, n_test = 32, image_size = 16 }'


@pytest.fixture(scope="module")
def registry() -> Registry:
    return collect(make_plugin_manager(load_entrypoints=False))


def rows(images: Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


@pytest.mark.parametrize("case", ["pretrain on a subset", "evaluate on a subset"])
def test_supervised_never_trains_on_the_sweeps_validation_rows_and_simclr_sees_every_row(
        case: str, tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    if case == "pretrain on a subset":  # the pretraining split is a 48-row subset, the probe's the whole split
        text = BENCH.replace("batch_size = 16", "batch_size = 16\naxes = { train_size = [48] }")
    else:  # the probe sweeps on a 40-row subset of the split the encoders pretrain on whole
        text = BENCH.replace("sweep = { lr", f"datasets = [{SHAPES}, train_size = 40 }}]\nsweep = {{ lr")
    bench = tmp_path / "bench.toml"
    bench.write_text(text)
    spec = load_benchmark(bench, registry=registry)
    plan = make_plan(spec, registry, bench.name)
    ctx = DataContext(root=tmp_path / "data", cache_dir=tmp_path / "cache")
    run = Run(spec, plan, registry, make_plugin_manager(load_entrypoints=False), tmp_path / "out",
              resolve_device("cpu"), ctx, progress=False)
    trained_on: dict[str, ImageSet] = {}
    validated_on: list[Tensor] = []
    real_pretrain, real_split = encoders.pretrain, sweep.stratified_split

    def pretrain(method: Any, pipelines: Any, data: ImageSet, *args: Any, **kwargs: Any) -> Any:
        trained_on[method.name] = data
        return real_pretrain(method, pipelines, data, *args, **kwargs)

    def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
        rest, val = real_split(labels, fraction, seed)
        validated_on.append(val)
        return rest, val

    monkeypatch.setattr(encoders, "pretrain", pretrain)
    monkeypatch.setattr(sweep, "stratified_split", stratified_split)
    assert execute(run) == 0

    target = plan.eval_jobs[0].dataset
    probe_train = run.load_split(target, "train")
    assert len(validated_on) == 2 and torch.equal(validated_on[0], validated_on[1])  # one carve-out per encoder
    val = rows(probe_train.subset(validated_on[0]).images)
    pretrain_split = run.load_split(plan.pretrain_jobs[0].dataset, "train")
    assert len(rows(pretrain_split.images)) == len(pretrain_split)  # every shape image is distinct
    overlap = rows(pretrain_split.images) & val
    assert overlap  # the check means something: some validation rows are pretraining rows
    supervised = trained_on["supervised"]
    assert not rows(supervised.images) & val
    assert len(supervised) == len(pretrain_split) - len(overlap)  # nothing else is dropped
    assert torch.equal(trained_on["simclr"].images, pretrain_split.images)  # SimCLR's data is unchanged
    assert torch.equal(trained_on["simclr"].labels, pretrain_split.labels)


def test_only_a_method_that_reads_labels_holds_rows_out_and_only_where_something_is_chosen(
        tmp_path: Path, registry: Registry) -> None:
    def plan_of(text: str) -> dict[str, Any]:
        bench = tmp_path / "bench.toml"
        bench.write_text(text)
        plan = make_plan(load_benchmark(bench, registry=registry), registry, bench.name)
        return {j.method.name + ("/" + j.kind if j.kind != "run" else ""): j.holdout for j in
                (c for p in plan.pretrain_jobs for c in p.all_jobs())}

    held = plan_of(BENCH)
    assert held["simclr"] is None and held["supervised"] is not None
    assert held["supervised"].payload() == {"val_fraction": 0.25, "train_sizes": [None]}
    no_sweep = BENCH.replace('name = "linear"\nsweep = { lr = [0.1, 0.01] }', 'name = "knn"')
    assert plan_of(no_sweep)["supervised"] is None  # nothing is chosen on validation rows
    elsewhere = BENCH.replace("sweep = { lr", 'datasets = ["digits"]\nsweep = { lr')
    assert plan_of(elsewhere)["supervised"] is None  # the probe carves its rows from another dataset
    cells = plan_of(no_sweep.replace("batch_size = 16", "batch_size = 16\nsweep = { lr = [0.1, 0.2] }"))
    assert cells["supervised/cell"] is not None and cells["supervised/cell"].payload()["train_sizes"] == [None]
    assert cells["simclr/cell"] is None  # a pretraining sweep's cells: its own choice, on the same split


SCORED = "'test' is the split every evaluation scores; train on another split (e.g. 'train')"


def test_bench_validate_refuses_pretraining_on_the_scored_split(tmp_path: Path, cli_env: dict[str, str]) -> None:
    bench = tmp_path / "bench.toml"
    bench.write_text(BENCH.replace("image_size = 16 } }", 'image_size = 16 }, train_split = "test" }'))
    proc = subprocess.run(bench_cmd("validate", str(bench)), capture_output=True, text=True, env=cli_env, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"bench: error: bench.toml: pretrain.dataset.train_split: {SCORED}\n"


@pytest.mark.parametrize("where", ["evaluations[0].datasets[0]", "methods[1].pretrain.dataset", "profiles.p: pretrain"])
def test_no_training_split_may_be_the_scored_split(where: str, tmp_path: Path) -> None:
    if where.startswith("evaluations"):
        text = BENCH.replace("sweep = { lr", f'datasets = [{SHAPES}, train_split = "test" }}]\nsweep = {{ lr')
    elif where.startswith("methods"):
        text = BENCH.replace('name = "simclr"', 'name = "simclr"\npretrain = { dataset = { train_split = "test" } }')
    else:
        text = BENCH + '\n[profiles.p]\npretrain = { dataset = { train_split = "test" } }\n'
    bench = tmp_path / "bench.toml"
    bench.write_text(text)
    key = f"{where}.dataset" if where.startswith("profiles") else where
    with pytest.raises(SpecError) as info:
        load_benchmark(bench, profile="p" if where.startswith("profiles") else None)
    assert str(info.value) == f"bench.toml: {key}.train_split: {SCORED}"


def reference_scores(fit: Tensor, fit_y: Tensor, target: Tensor, num_classes: int, k: int, t: float) -> Tensor:
    """Vote shares in float64 with the maximum subtracted: (N_target, C), each row summing to 1."""
    sims = F.normalize(target.double(), dim=1) @ F.normalize(fit.double(), dim=1).T
    top, idx = sims.topk(k, dim=1)
    votes = torch.zeros(target.shape[0], num_classes, dtype=torch.float64)
    votes.scatter_add_(1, fit_y[idx], ((top - top[:, :1]) / t).exp())
    return votes / votes.sum(dim=1, keepdim=True)


def planted(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Features of 4 classes around planted centres: fit (80, 16) and target (40, 16), with labels."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 16, generator=g)
    fit_y, target_y = torch.arange(80) % 4, torch.arange(40) % 4
    fit = centres[fit_y] + 0.8 * torch.randn(80, 16, generator=g)
    target = centres[target_y] + 0.8 * torch.randn(40, 16, generator=g)
    return fit, fit_y, target, target_y


def test_knn_votes_are_finite_at_a_tiny_temperature_and_match_a_float64_reference() -> None:
    fit, fit_y, target, target_y = planted()
    scores = knn_scores(fit, fit_y, target, num_classes=4, k=10, temperature=0.001)
    assert torch.isfinite(scores).all() and (scores.amax(dim=1) >= 1).all()
    want = reference_scores(fit, fit_y, target, 4, 10, 0.001)
    got = scores.double() / scores.double().sum(dim=1, keepdim=True)
    assert torch.allclose(got, want, atol=1e-6)

    task = EvalTask(encoder=torch.nn.Identity(), fit=_set(fit_y), target=_set(target_y), num_classes=4,
                    features=lambda s: fit if len(s) == 80 else target, device=torch.device("cpu"), seed=0)
    metrics = KNN(KNN.Params(k=10, temperature=0.001)).evaluate(task, {})
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values()), metrics
    expected = classification_metrics(want.clamp_min(1e-12).log(), target_y, 4)
    assert metrics == pytest.approx(expected, abs=1e-9)


def test_knn_votes_at_ordinary_temperatures_are_exactly_the_plain_formula() -> None:
    """The shift applies only where float32 would overflow: ordinary results keep every bit."""
    fit, fit_y, target, _ = planted(1)
    for t in (0.07, 0.5):
        sims, idx = (F.normalize(target, dim=1) @ F.normalize(fit, dim=1).T).topk(10, dim=1)
        plain = torch.zeros(40, 4).scatter_add_(1, fit_y[idx], (sims / t).exp())
        assert torch.equal(knn_scores(fit, fit_y, target, num_classes=4, k=10, temperature=t), plain)


def _set(labels: Tensor) -> ImageSet:
    return ImageSet(torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8), labels, ("a", "b", "c", "d"), "k")
