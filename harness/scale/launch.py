"""Start ``bench run`` as N processes with torchrun, and join the process group inside each.

``bench run FILE --nproc N`` re-executes itself as ``python -m torch.distributed.run --standalone
--nproc-per-node N -m ssl_bench.harness run FILE ...``; ``torchrun --nproc-per-node N -m
ssl_bench.harness run FILE`` (on one node or many) does the same by hand. Each process finds
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in its environment, joins the process group (NCCL on CUDA, one
GPU per process; gloo on the CPU) and trains every pretraining job with DistributedDataParallel (see
:mod:`ssl_bench.harness.pipeline.train`). Rank 0
writes checkpoints, encoders and results and runs the evaluations; the others wait for it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist

from ssl_bench.harness.errors import UsageError

WAIT = timedelta(hours=24)
"""How long a process waits in a collective: rank 0 evaluates while the others wait for the next job.
A crashed process does not leave the others hanging this long: torchrun stops them all."""


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def torchrun_command(argv: Sequence[str], nproc: int) -> list[str]:
    """The torchrun command line that runs ``bench ARGV`` (without ``--nproc``) in ``nproc`` processes."""
    rest: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "ssl_bench.harness", *rest]


def check_nproc(nproc: int, device: torch.device | None) -> None:
    """Refuse ``--nproc N`` that cannot be honoured, before anything is computed.

    Args:
        nproc: the processes asked for.
        device: where they would run (None for ``--dry-run``: only the count itself is checked). On CUDA each
            process needs a GPU of its own; on the CPU more processes than cores only thrash.

    Raises:
        UsageError: fewer than 1 process, or more than the GPUs (CUDA) or the CPU cores (``os.cpu_count()``).
    """
    if nproc < 1:
        raise UsageError(f"--nproc {nproc}: needs at least 1 process")
    if device is None:
        return
    if device.type == "cuda":
        count, what = torch.cuda.device_count(), "GPUs"
    else:
        count, what = os.cpu_count() or 1, "CPU cores"
    if nproc > count:
        raise UsageError(f"--nproc {nproc}: more processes than {what} on this machine ({count}); "
                         f"use --nproc {count} or fewer")


def relaunch(argv: Sequence[str], nproc: int) -> NoReturn:
    """Replace this process by torchrun running ``bench ARGV`` in ``nproc`` processes."""
    if launched_by_torchrun():
        raise UsageError("--nproc inside torchrun: torchrun already started the processes; drop --nproc")
    cmd = torchrun_command(argv, nproc)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)


def die_with_launcher() -> None:
    """Have Linux SIGKILL this process when its parent (torchrun's agent) dies.

    torchrun starts each process in a session of its own, so killing ``bench run --nproc N`` (the
    agent), even its whole process group, would leave the processes training on; a rerun would then
    race them for the same checkpoint. No-op outside Linux.
    """
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))


def join_process_group(device: torch.device) -> torch.device:
    """Join torchrun's process group if there is one; returns this process's device.

    On CUDA each process takes the GPU numbered by its ``LOCAL_RANK`` (a ``cuda:N`` asked for is
    replaced: each process needs its own GPU).
    """
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return device
    die_with_launcher()
    if device.type == "cuda":
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise UsageError("torchrun started more processes per node than there are GPUs "
                             f"({torch.cuda.device_count()}); "
                             "start one process per GPU")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl", timeout=WAIT, device_id=device)
    elif not dist.is_initialized():
        dist.init_process_group("gloo", timeout=WAIT)
    return device


def leave_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
