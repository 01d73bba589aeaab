"""Distributed pretraining on the CPU with gloo: 2 processes against 1 on the same global batch."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ssl_bench.harness.components import Batch
from ssl_bench.harness.pipeline.specs import ComponentRef, DatasetRef, OptimizerSpec, PretrainSpec, ScheduleSpec
from ssl_bench.harness.pipeline.train import CHECKPOINT, distributed_loss, pretrain
from ssl_bench.harness.plugins import collect, make_plugin_manager
from ssl_bench.harness.scale.launch import torchrun_command
from ssl_bench.harness.testing import build_method, tiny_images
from tests.conftest import TINY, bench_cmd

pytestmark = pytest.mark.slow  # end to end: the CLI, whole runs, several processes

WORLD = 2
BATCH = 8


def without_batchnorm(module: nn.Module) -> nn.Module:
    """Batch norm sees each process's half batch (unless synchronised, which needs CUDA): take it out
    so that 2 processes and 1 compute the same function of the global batch."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            without_batchnorm(child)
    return module


def simclr():
    return without_batchnorm(build_method(collect(make_plugin_manager()), "simclr", seed=0))


def global_views() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(BATCH, 3, 32, 32, generator=g) for _ in range(2)]


def identity(x: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    return x


def spec() -> PretrainSpec:
    return PretrainSpec(dataset=DatasetRef(name="x"), backbone=ComponentRef(name="convnet_small"), epochs=2,
                        batch_size=BATCH, checkpoint_every_steps=1, optimizer=OptimizerSpec(lr=0.1),
                        schedule=ScheduleSpec(name="constant"), precision="fp32")
    # fp32: bf16 rounds each process's half of the batch differently from the whole batch


def _in_process(rank: int, init: str, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        # one step on this process's half of the global batch
        method = simclr()
        share = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        views = [v[share] for v in global_views()]
        ddp = distributed_loss(method, torch.device("cpu"))
        loss = ddp(Batch(views=views, labels=torch.zeros(len(views[0])), indices=torch.arange(BATCH)[share]))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in method.named_parameters()}
        # the whole loop: 2 epochs of 2 steps over 16 images, each process in its own folder
        trained = simclr()
        stats = pretrain(trained, {"simclr": identity}, tiny_images(2 * BATCH), spec(), seed=0,
                         device=torch.device("cpu"), workdir=out / f"rank{rank}", progress=False)
        torch.save({"loss": loss.detach(), "grads": grads, "state": trained.state_dict(), "stats": stats.as_dict()},
                   out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_in_process, args=(f"file://{out / 'init'}", out), nprocs=WORLD, join=True)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_two_process_simclr_step_equals_one_process_step_on_the_global_batch(two_processes, one_thread):
    _, ranks = two_processes
    method = simclr()
    loss = method.loss(Batch(views=global_views(), labels=torch.zeros(BATCH), indices=torch.arange(BATCH)))
    loss.backward()
    assert len(ranks[0]["grads"]) == len(list(method.parameters())) > 4
    for r in ranks:
        assert float(r["loss"]) == pytest.approx(float(loss.detach()), rel=1e-5)  # NT-Xent over all 2 x 8 views
        for name, p in method.named_parameters():
            assert torch.allclose(r["grads"][name], p.grad, rtol=1e-4, atol=1e-6), name
    # the negatives of the other process matter: a loss over the local half alone differs
    half = simclr().loss(Batch(views=[v[:BATCH // 2] for v in global_views()], labels=torch.zeros(4),
                               indices=torch.arange(4)))
    assert abs(float(half.detach()) - float(loss.detach())) > 1e-3


def test_two_process_pretraining_equals_one_process_pretraining(two_processes, tmp_path, one_thread):
    out, ranks = two_processes
    method = simclr()
    stats = pretrain(method, {"simclr": identity}, tiny_images(2 * BATCH), spec(), seed=0,
                     device=torch.device("cpu"), workdir=tmp_path, progress=False)
    assert stats.steps == 4 and len(stats.epoch_losses) == 2
    for r in ranks:
        assert r["stats"]["steps"] == 4 and r["stats"]["batch_size"] == BATCH
        assert r["stats"]["epoch_losses"] == pytest.approx(stats.epoch_losses, rel=1e-5)
        for name, value in method.state_dict().items():
            assert torch.allclose(r["state"][name].float(), value.float(), rtol=1e-4, atol=1e-5), name
    assert (out / "rank0" / CHECKPOINT).exists() and not (out / "rank1" / CHECKPOINT).exists()  # rank 0 writes


def test_torchrun_command_drops_nproc_and_keeps_the_rest():
    cmd = torchrun_command(["-p", "no:x", "run", "f.toml", "--nproc", "2", "--out", "o", "--nproc=3", "--sync-bn"], 2)
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "ssl_bench.harness",
                       "-p", "no:x", "run", "f.toml", "--out", "o", "--sync-bn"]


# --- through the command line -------------------------------------------------------------------

def bench(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(bench_cmd(*args), capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"bench {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _rows(out: Path) -> dict[tuple[str, str], float]:
    rows = [r for f in (out / "results").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    keys = [(r["job_key"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))
    return {(r["job_key"], r["metric"]): r["value"] for r in rows}


def test_killed_distributed_run_resumes_and_equals_an_uninterrupted_one(tmp_path, write_toml, cli_env):
    text = TINY.replace("epochs = 1", "epochs = 10")
    path = write_toml(text)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    first = bench("run", str(path), "--out", str(straight), "--nproc", "2", env=cli_env)
    assert "pretrained simclr seed 0: 40 steps" in first.stderr and first.stderr.count("pretrained simclr") == 1

    proc = subprocess.Popen(bench_cmd("run", str(path), "--out", str(killed), "--nproc", "2"), env=cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list(killed.glob("artifacts/*/last.pt")):
            assert proc.poll() is None, "the run ended before it was killed"
            time.sleep(0.05)
        assert list(killed.glob("artifacts/*/last.pt")), "no checkpoint appeared"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both of its processes
        proc.wait()
    assert not list(killed.glob("results/*.parquet"))  # killed before any evaluation

    second = bench("run", str(path), "--out", str(killed), "--nproc", "2", env=cli_env)
    assert "resuming simclr seed 0" in second.stderr
    assert not list(killed.glob("artifacts/*/last.pt"))
    expected = _rows(straight)
    assert len(expected) > 4 and _rows(killed) == pytest.approx(expected)
