"""Scaffolding of the 2-process gloo tests: a method's loss on halves of a batch in two processes must
equal (or average to) its loss on the whole batch in one, with the same gradients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ssl_bench.harness.pipeline.train import distributed_loss


@contextmanager
def gloo_group(rank: int, init: str) -> Iterator[None]:
    """Process ``rank`` of a 2-process gloo group on one CPU thread, for the body of the block."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        yield
    finally:
        dist.destroy_process_group()


def run_two(worker: Callable[[int, str, str], None], tmp_path: Path) -> list[dict[str, Any]]:
    """Spawn ``worker(rank, init, out)`` twice; each saves ``out/rank{rank}.pt``; returns what they saved."""
    mp.spawn(worker, args=(f"file://{tmp_path / 'init'}", str(tmp_path)), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def assert_same_gradients(ranks: list[dict[str, Any]], model: nn.Module) -> None:
    """Every process's saved ``grads`` equal ``model``'s (after its 1-process backward)."""
    expected = gradients(model)
    for r in ranks:
        assert r["grads"].keys() == expected.keys()
        for name, grad in expected.items():
            assert torch.allclose(r["grads"][name], grad, rtol=1e-4, atol=1e-5 * grad.abs().max().item()), name


def loss_on_my_half(rank: int, init: str, out: str, build: Callable[[], nn.Module]) -> None:
    """Process ``rank`` of 2: the DDP loss of ``build()`` on its half of the test views, saved with its gradients."""
    from tests.plugins.method_inputs import batch, views

    with gloo_group(rank, init):
        m = build().eval()  # eval: batch norm on running statistics, the same function in 1 and 2 processes
        ddp = distributed_loss(m, torch.device("cpu"))  # kept alive until backward
        loss = ddp(batch([v[rank * 4:(rank + 1) * 4] for v in views()]))
        loss.backward()
        torch.save({"loss": loss.detach(), "grads": gradients(m)}, f"{out}/rank{rank}.pt")
