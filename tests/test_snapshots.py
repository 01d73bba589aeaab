"""Evaluating a run at intermediate steps (``pretrain.snapshot_steps``: the SimCLR-vs-RotNet study's accuracy
vs steps)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from ssl_bench.harness.errors import SpecError
from ssl_bench.harness.pipeline.plan import make_plan
from ssl_bench.harness.pipeline.shard import shard_plan
from ssl_bench.harness.pipeline.specs import load_benchmark
from ssl_bench.harness.plugins import collect, make_plugin_manager
from tests.conftest import TINY
from tests.test_cli import bench

pytestmark = pytest.mark.slow  # end to end: the CLI, whole runs, several processes

# 128 shapes at batch 32: 4 steps per epoch, 8 in the run
TWO_EPOCHS = TINY.replace("epochs = 1", "epochs = 2").replace("""
[[evaluations]]
name = "linear"
sweep = { lr = [0.1, 0.01], weight_decay = [0.0] }
""", "")
SNAPSHOTS = TWO_EPOCHS.replace("checkpoint_every_steps = 1", "checkpoint_every_steps = 1\nsnapshot_steps = [4, 2]")
REGISTRY = collect(make_plugin_manager(load_entrypoints=False))


def rows_of(out):
    return [r for f in (out / "results").glob("*.parquet") for r in pq.read_table(f).to_pylist()]


def encoder_of(out, key):
    return torch.load(out / "artifacts" / key / "encoder.pt", weights_only=True)


def test_plan_adds_a_snapshot_job_per_step_of_trained_runs_only(write_toml):
    plan = make_plan(load_benchmark(write_toml(SNAPSHOTS), registry=REGISTRY), REGISTRY)
    snaps = [j for j in plan.pretrain_jobs if j.kind == "snapshot"]
    assert [(j.label, j.snapshot_step) for j in snaps] == [("simclr", 2), ("simclr", 4)]  # sorted; random_init none
    run = snaps[0].snapshot_of
    assert run is not None and run.kind == "run" and all(s.snapshot_of == run for s in snaps)
    assert plan.snapshots_of(run) == snaps and len({j.key for j in plan.pretrain_jobs}) == 4
    assert len(plan.evals_of(snaps[0])) == 1  # evaluated like any encoder
    for i in range(2):  # a shard never splits a run from its snapshots
        shard = shard_plan(plan, i, 2)
        assert all(s.snapshot_of is None or s.snapshot_of in shard.pretrain_jobs for s in shard.pretrain_jobs)


def test_snapshots_with_a_pretraining_sweep_are_refused(write_toml):
    path = write_toml(SNAPSHOTS.replace("snapshot_steps", "sweep = { lr = [0.1, 0.2] }\nsnapshot_steps"))
    with pytest.raises(SpecError, match="pretrain: .*snapshot_steps cannot be combined with a pretraining sweep"):
        load_benchmark(path, registry=REGISTRY)


def test_snapshots_are_saved_during_the_run_and_replayed_when_asked_later(tmp_path, write_toml, cli_env):
    out = tmp_path / "during"
    bench("run", str(write_toml(SNAPSHOTS, "snap.toml")), "--out", str(out), env=cli_env)
    simclr = sorted((r for r in rows_of(out) if r["label"] == "simclr" and r["metric"] == "top1"),
                    key=lambda r: r["pretrain_steps"])
    assert [(r["pretrain_steps"], r["pretrain_total_steps"], r["pretrain_epochs"]) for r in simclr] == \
        [(2, 8, 2), (4, 8, 2), (8, 8, 2)]
    assert len(simclr[1]["pretrain_epoch_losses"]) == 1 and len(simclr[2]["pretrain_epoch_losses"]) == 2
    weights = [encoder_of(out, r["pretrain_key"]) for r in simclr]
    first = next(iter(weights[0]))
    assert (not torch.equal(weights[0][first], weights[1][first])
            and not torch.equal(weights[1][first], weights[2][first]))
    board = (out / "leaderboard.md").read_text()
    assert "step 2 of 2 ep (8 steps)" in board and "step 4 of 2 ep (8 steps)" in board

    # The same run finished without snapshots; asking for one afterwards replays the run to its step.
    later = tmp_path / "later"
    bench("run", str(write_toml(TWO_EPOCHS, "plain.toml")), "--out", str(later), env=cli_env)
    final_key = simclr[2]["pretrain_key"]
    final = later / "artifacts" / final_key / "encoder.pt"
    mtime = final.stat().st_mtime_ns
    proc = bench("run", str(write_toml(SNAPSHOTS, "snap.toml")), "--out", str(later), env=cli_env)
    assert "replaying simclr seed 0 to step 4" in proc.stderr
    assert final.stat().st_mtime_ns == mtime  # the finished run is not retrained
    for r in simclr[:2]:
        replayed, during = encoder_of(later, r["pretrain_key"]), encoder_of(out, r["pretrain_key"])
        assert all(torch.allclose(replayed[k].float(), during[k].float(), atol=1e-6) for k in during)
    assert not (later / "artifacts" / simclr[0]["pretrain_key"] / "last.pt").exists()


def test_a_snapshot_beyond_the_run_fails_its_job_with_the_key_named(tmp_path, write_toml, cli_env):
    path = write_toml(SNAPSHOTS.replace("[4, 2]", "[100]"))
    proc = bench("run", str(path), "--out", str(tmp_path / "out"), env=cli_env, check=False)
    assert proc.returncode == 1
    assert "pretrain.snapshot_steps [100] lie beyond the run's 8 steps" in proc.stderr
    assert {r["label"] for r in rows_of(tmp_path / "out")} == {"random_init"}  # the other jobs still ran
