"""The generic pretraining loop: device, precision, resumable checkpoints, progress.

Data stays a uint8 tensor on the device; each step indexes a batch, augments it there with the
method's pipelines (random parameters per sample, drawn from a per-step seeded generator) and takes
one optimizer step. A memory-mapped set (``ImageSet.mapped``, larger than memory) stays on the host
instead: each step's batch is read from its file and copied over (pinned, non-blocking on CUDA).
Every ``checkpoint_every_steps`` the whole state (model, optimizer, schedule, step, loss history) is
written atomically to ``last.pt``; a rerun resumes from it. Batch order and augmentation depend only
on (seed, epoch) and (seed, step), so a resumed run sees the same data.

A method's loss is a scalar Tensor or a :class:`~ssl_bench.harness.components.LossTerms` (the total it
back-propagates plus named terms). Every ``BENCH_LOG_EVERY`` steps and at the last one, ``on_step`` gets
the step's loss, terms, learning rate, images/s and epoch (one host sync per call; see
:mod:`~ssl_bench.harness.pipeline.progress`); without a progress bar, one progress line at most every
``BENCH_PROGRESS_EVERY`` seconds goes to the ``ssl_bench`` logger.

Under torchrun (several processes, see :mod:`ssl_bench.harness.scale.launch`) the method is wrapped in
DistributedDataParallel: every process steps through the same global batch order, takes its
contiguous ``batch_size / world_size`` rows of each global batch (so a method that gathers
embeddings through :func:`harness.gather` sees the global batch in the single-process order),
augments them with its own generator, and the gradients are averaged. Momentum updates in
``on_step_end`` act on identical weights in every process. ``BENCH_SYNC_BN=1`` (``bench run
--sync-bn``) converts batch norm to SyncBatchNorm (CUDA only). Only rank 0 writes checkpoints.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ssl_bench.harness.components import Augmentation, Batch, Method, loss_parts
from ssl_bench.harness.data import ImageSet, normalize, to_float
from ssl_bench.harness.errors import BenchError, UsageError
from ssl_bench.harness.pipeline.checkpoint import read_resumable
from ssl_bench.harness.pipeline.logs import counted, log_every_steps
from ssl_bench.harness.pipeline.online_probe import OnlineProbe
from ssl_bench.harness.pipeline.optim import build_optimizer, build_schedule
from ssl_bench.harness.pipeline.precision import autocast, channels_last, resolve_precision
from ssl_bench.harness.pipeline.progress import OnStep, StepReporter
from ssl_bench.harness.pipeline.specs import PretrainSpec
from ssl_bench.harness.record.atomic import atomic_torch_save
from ssl_bench.harness.scale.distributed import is_main, mean_over_processes, rank, world_size

CHECKPOINT = "last.pt"
FINITE_CHECK_EVERY = 10
"""Every step's loss is checked finite. On the CPU in one process each step, before its update (free: no
device to wait for). On CUDA, or under several processes, the losses are checked every this many steps,
at the end of each epoch and before every checkpoint (and, in one process, every snapshot): one host sync,
or one collective, per check instead of per step. The job still fails naming the first non-finite step,
at most this many steps late, and never checkpoints weights a non-finite step has touched."""


@dataclass
class PretrainStats:
    """What a pretraining run reports (stored beside the encoder and copied into result rows)."""

    steps: int = 0
    steps_per_epoch: int = 0
    batch_size: int = 0
    images_seen: int = 0
    train_s: float = 0.0
    """Seconds spent in training steps, summed over resumed sessions."""
    images_per_s: float = 0.0
    final_loss: float = float("nan")
    epoch_losses: list[float] = field(default_factory=list)
    """Mean loss of each epoch."""
    resumed_from_step: int = 0
    threads: int = 0
    """torch threads it trained with (0: not recorded, an older run)."""
    load_others: float = 0.0
    """Cores other processes kept busy on average while it trained (see scale/machine.py)."""
    contended: bool = False
    """The timing was taken on a busy machine: ``train_s`` and ``images_per_s`` are not quiet figures."""
    precision: str = ""
    """What the steps computed in, ``fp32`` or ``bf16`` (pipeline/precision.py; empty: not recorded)."""
    device: str = ""
    """What it trained on, ``"AMD EPYC (family 23, model 49) x2 (AVX2)"`` or a GPU's name (scale/machine.py;
    empty: not recorded)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(name: str, *, check_available: bool = True) -> torch.device:
    """The device of ``--device NAME``: 'auto' -> cuda when available, else cpu.

    Args:
        name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; anything else (``tpu``, ``meta``, ``mps``, ...) is
            refused up front rather than accepted and then failing every job.
        check_available: also refuse a CUDA device torch does not see (off for ``--dry-run``, which
            computes nothing: a plan can be printed on a login node without a GPU).

    Raises:
        UsageError: a device name outside the list, or (with ``check_available``) CUDA without a GPU or
            ``cuda:N`` beyond the GPUs.
    """
    kind, colon, index = name.partition(":")
    if not (name in ("auto", "cpu", "cuda") or (kind == "cuda" and colon and index.isascii() and index.isdecimal())):
        raise UsageError(f"--device {name}: not a device ssl-bench runs on; use one of auto, cpu, cuda, cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and check_available:
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name} was requested but torch sees no CUDA device; use --device auto or cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device(name)


def step_seed(seed: int, step: int) -> int:
    """Seed of step ``step``'s augmentation generator (independent streams per seed and step)."""
    return (seed * 1_000_003 + step * 7_919 + 17) % (2**63)


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> Tensor:
    """The permutation of ``n`` rows used in ``epoch``."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


def rank_seed(seed: int, step: int, rank: int) -> int:
    """Seed of process ``rank``'s augmentation generator at ``step`` (rank 0: :func:`step_seed`)."""
    return (step_seed(seed, step) + rank * 1_000_000_007) % (2**63)


def sync_batchnorm_requested() -> bool:
    """``BENCH_SYNC_BN=1`` (set by ``bench run --sync-bn``)."""
    return os.environ.get("BENCH_SYNC_BN", "") not in ("", "0")


class _Loss(nn.Module):
    """A method's loss as a forward pass, so DistributedDataParallel can hook its gradients.

    The forward pass returns the total alone (what DDP traces); the named terms of a
    :class:`~ssl_bench.harness.components.LossTerms` are kept, detached, in ``terms``.
    """

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method
        self.terms: Mapping[str, Tensor] = {}

    def forward(self, batch: Batch) -> Tensor:
        total, terms = loss_parts(self.method.loss(batch))
        self.terms = {name: t.detach() if isinstance(t, Tensor) else t for name, t in terms.items()}
        total_tensor: Tensor = total  # a scalar Tensor, or what the loop then refuses
        return total_tensor


def distributed_loss(method: Method, device: torch.device, *, sync_batchnorm: bool = False) -> nn.Module:
    """``method.loss`` wrapped in DistributedDataParallel (call it on this process's share of a batch).

    Gradients are averaged over processes; a method that gathers embeddings with gradients
    (:func:`harness.gather`, whose backward sums over processes) thereby gets the gradient of its
    global-batch loss. Parameters a step leaves unused (heads of other views) are allowed.
    """
    if sync_batchnorm:
        if device.type != "cuda":
            raise UsageError("--sync-bn needs CUDA: torch's SyncBatchNorm has no CPU kernel")
        nn.SyncBatchNorm.convert_sync_batchnorm(method)
    return DistributedDataParallel(_Loss(method), device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def pretrain(
    method: Method,
    pipelines: Mapping[str, Augmentation],
    data: ImageSet,
    spec: PretrainSpec,
    *,
    seed: int,
    device: torch.device,
    workdir: Path,
    progress: bool = True,
    desc: str = "pretrain",
    snapshots: Mapping[int, Callable[[PretrainStats], None]] | None = None,
    stop_at: int | None = None,
    on_step: OnStep | None = None,
    progress_every_s: float | None = None,
    probe: OnlineProbe | None = None,
) -> PretrainStats:
    """Train ``method`` on ``data`` for ``spec.epochs`` epochs, resuming from ``workdir/last.pt``.

    Args:
        method: the method module (backbone and heads), already seeded and built.
        pipelines: augmentation pipelines by name; ``method.views`` picks from them.
        data: training images, uint8 (N, C, H, W), and labels (N,); a mapped set stays on the host.
        spec: budget, optimizer and schedule.
        seed: seeds batch order and augmentation.
        device: where to train.
        workdir: folder of the resumable checkpoint.
        progress: show a progress bar on stderr.
        desc: progress bar label.
        snapshots: step -> callback, called (on rank 0) with the stats right after that optimizer step,
            while the model holds that step's weights.
        stop_at: end after this step (the schedule stays the full run's); None: run to the end.
        on_step: ``on_step(step, metrics)``, called on rank 0 every ``BENCH_LOG_EVERY`` steps (default 10)
            and at the last step, after the optimizer step; ``metrics``: ``loss``, ``loss/<name>`` per
            named term, ``lr``, ``images_per_s``, ``epoch`` (see the ``bench_step_logged`` hook).
        progress_every_s: without a bar (``progress`` False), log one progress line on rank 0 at most
            this often (seconds); None: no lines.
        probe: an online linear probe to train on the backbone's detached first-view features each step
            (:mod:`~ssl_bench.harness.pipeline.online_probe`; it changes nothing of the method's training),
            checkpointed with the method.
    """
    n = len(data)
    batch_size = min(spec.batch_size, n)
    world, me = world_size(), rank()
    if batch_size % world:
        raise UsageError(f"{desc}: batch_size {batch_size} cannot be split evenly over {world} processes; "
                         f"make it a multiple of {world}")
    local = batch_size // world
    steps_per_epoch = n // batch_size
    total = spec.epochs * steps_per_epoch
    method.to(device).to(memory_format=torch.channels_last)
    precision = resolve_precision(spec.precision, device)
    loss_of: Any = method.loss
    if world > 1:
        loss_of = distributed_loss(method, device, sync_batchnorm=sync_batchnorm_requested())
    optimizer = build_optimizer(spec.optimizer, method)
    schedule = build_schedule(spec.schedule, optimizer, total, steps_per_epoch)
    snapshots = snapshots or {}
    beyond = sorted(s for s in snapshots if s > total)
    if beyond:
        raise UsageError(f"{desc}: pretrain.snapshot_steps {beyond} lie beyond the run's {counted(total, 'step')} "
                         f"({counted(spec.epochs, 'epoch')} of {steps_per_epoch})")
    end = total if stop_at is None else min(stop_at, total)
    stats = PretrainStats(steps_per_epoch=steps_per_epoch, batch_size=batch_size, precision=precision)
    step_losses: list[Tensor] = []
    ckpt_path = workdir / CHECKPOINT
    state = read_resumable(ckpt_path, method, device, probe)
    if state is not None:
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        stats = PretrainStats(**state["stats"])
        stats.precision = precision
        stats.resumed_from_step = stats.steps
        step_losses = [torch.tensor(v) for v in state["step_losses"]]
        if probe is not None:
            probe.load_state_dict(state["online_probe"])

    images, labels = (data.images if data.mapped else data.images.to(device)), data.labels.to(device)
    method.train()
    if probe is not None:
        probe.attach(method.backbone)
    bar = tqdm(total=total, initial=stats.steps, desc=desc, unit="step", disable=not progress,
               leave=False, mininterval=0.5, dynamic_ncols=True)
    order = None
    main = is_main()
    reporter = StepReporter(desc=desc, end=end, steps_per_epoch=steps_per_epoch, epochs=spec.epochs,
                            batch_size=batch_size, on_step=on_step if main else None, every_steps=log_every_steps(),
                            line_every_s=progress_every_s if main and not progress else None)
    t0, steps_this_session = time.perf_counter(), 0
    each_step, unchecked = _checks_each_step(device, world), 0
    for step in range(stats.steps, end):
        epoch, i = divmod(step, steps_per_epoch)
        if order is None or i == 0:
            order = epoch_order(n, seed, epoch, device)
            host_order = order.cpu() if data.mapped else order
        rows = slice(i * batch_size + me * local, i * batch_size + (me + 1) * local)
        idx = order[rows]
        x = to_float(data.batch(host_order[rows], device) if data.mapped else images[idx])
        g = torch.Generator(device=device).manual_seed(rank_seed(seed, step, me))
        views = channels_last([normalize(pipelines[name](x, generator=g)) for name in method.views])
        if probe is not None:
            probe.expect(views[0])
        with autocast(precision, device):
            out = loss_of(Batch(views=views, labels=labels[idx], indices=idx))
        if probe is not None:  # outside autocast (float32 loss); the lr factor is read by a "method"-schedule head
            group = optimizer.param_groups[0]
            probe.step(labels[idx], lr_factor=group["lr"] / group["initial_lr"] if group.get("initial_lr") else 1.0)
        loss, terms = _checked_parts(out, loss_of.module.terms if world > 1 else None, method.name, desc)
        step_losses.append(loss.detach().float())
        unchecked += 1
        if each_step:  # before the update: a non-finite loss never reaches the weights
            unchecked = _check_finite(step_losses, unchecked, step + 1, steps_per_epoch, total, desc)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr = optimizer.param_groups[0]["lr"]  # this step's (a Python float, no sync)
        schedule.step()
        method.on_step_end(step + 1, total)
        steps_this_session += 1
        stats.steps = step + 1
        closes_epoch = (step + 1) % steps_per_epoch == 0 or step + 1 == total
        saves = stats.steps % spec.checkpoint_every_steps == 0 or stats.steps == end or (
            world == 1 and stats.steps in snapshots)  # several processes: only what every process agrees on
        if unchecked and (closes_epoch or saves or stats.steps % FINITE_CHECK_EVERY == 0):
            unchecked = _check_finite(step_losses, unchecked, step + 1, steps_per_epoch, total, desc)
        if closes_epoch:
            _close_epoch(stats, step_losses, steps_per_epoch, desc)
        if progress:
            if step % 10 == 0:
                elapsed = time.perf_counter() - t0
                rate = steps_this_session * batch_size / max(elapsed, 1e-9)
                bar.set_postfix(loss=f"{float(step_losses[-1]):.3f}", img_s=f"{rate:.0f}", refresh=False)
            bar.update(1)
        reporter.step_done(stats.steps, step_losses[-1], terms, lr)
        if stats.steps in snapshots and is_main():
            snapshots[stats.steps](_timed_copy(stats, t0, steps_this_session))
        if stats.steps % spec.checkpoint_every_steps == 0 and stats.steps < end and is_main():
            _checkpoint(ckpt_path, method, optimizer, schedule, stats, step_losses, t0, steps_this_session, probe)
    bar.close()
    if probe is not None:
        probe.detach()
    if device.type == "cuda":
        torch.cuda.synchronize()
    _account_time(stats, t0, steps_this_session)
    return stats


def _checked_parts(out: object, ddp_terms: Mapping[str, Tensor] | None, name: str,
                   desc: str) -> tuple[Tensor, Mapping[str, Tensor]]:
    """The scalar loss and the named terms of what ``name``'s loss returned (``ddp_terms``: what the DDP
    wrapper kept of them, its output being the total alone).

    Raises:
        BenchError: the total is not a scalar Tensor, or a term is not a scalar Tensor.
    """
    total, terms = loss_parts(out) if ddp_terms is None else (out, ddp_terms)
    if not isinstance(total, Tensor) or total.ndim != 0:
        got = f"a tensor of shape {tuple(total.shape)}" if isinstance(total, Tensor) else type(total).__name__
        raise BenchError(f"{desc}: {name}.loss must return a scalar Tensor (with a gradient) or LossTerms, got {got}")
    for term, value in terms.items():
        if not isinstance(value, Tensor) or value.numel() != 1:
            got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
            raise BenchError(f"{desc}: {name}.loss: LossTerms term '{term}' must be a scalar Tensor, got {got}")
    return total, terms


def _checks_each_step(device: torch.device, world: int) -> bool:
    """Whether every loss is checked finite right away (CPU, one process); else see :data:`FINITE_CHECK_EVERY`."""
    return device.type != "cuda" and world == 1


def _check_finite(step_losses: list[Tensor], count: int, last_step: int, steps_per_epoch: int, total: int,
                  desc: str) -> int:
    """Fail at the first non-finite loss among the last ``count`` steps (the last is step ``last_step``).

    One host sync for the ``count`` losses. Under several processes it is a collective (every process
    calls it at the same steps) and the earliest bad step of any process is reported.

    Returns:
        0, the number of losses left unchecked.

    Raises:
        BenchError: naming the step, its epoch and the value, with advice that fits the step.
    """
    recent = torch.stack(step_losses[-count:])
    bad = ~torch.isfinite(recent)
    first = int(bad.int().argmax()) if bool(bad.any()) else count
    if world_size() > 1:
        earliest = torch.tensor([first], device=recent.device)
        torch.distributed.all_reduce(earliest, op=torch.distributed.ReduceOp.MIN)
        first = int(earliest.item())
    if first == count:
        return 0
    step = last_step - count + 1 + first
    value = float(recent[first])
    what = f"loss = {value}" if not math.isfinite(value) else "the loss of another process"
    if step == 1:
        advice = ("that is before any update, so the learning rate is not the cause: the method's loss (or the "
                  "data) is broken; ssl_bench.harness.testing.check_method reproduces it on tiny data")
    else:
        advice = ("lower the learning rate (optimizer.lr), add warmup (schedule.warmup_epochs), or guard the loss "
                  "against a division by a vanishing norm or a log of zero")
    raise BenchError(f"{desc}: the loss is not finite at step {step} of {total} (epoch "
                     f"{(step - 1) // steps_per_epoch + 1}): {what}; {advice}")


def _close_epoch(stats: PretrainStats, step_losses: list[Tensor], steps_per_epoch: int, desc: str) -> None:
    """Record the epoch's mean loss and the last step's (over processes); the steps were checked finite."""
    epoch_losses = torch.stack(step_losses[-steps_per_epoch:]).cpu()
    mean = mean_over_processes(float(epoch_losses.mean()))
    if not math.isfinite(mean):  # a backstop: _check_finite has seen every step of the epoch
        raise BenchError(f"{desc}: the loss is not finite ({mean}) in epoch {len(stats.epoch_losses) + 1}; "
                         "lower the learning rate")
    stats.epoch_losses.append(mean)
    stats.final_loss = mean_over_processes(float(epoch_losses[-1]))


def _account_time(stats: PretrainStats, t0: float, steps_this_session: int) -> None:
    stats.train_s += time.perf_counter() - t0
    stats.images_seen += steps_this_session * stats.batch_size
    stats.images_per_s = stats.images_seen / stats.train_s if stats.train_s > 0 else 0.0


def _timed_copy(stats: PretrainStats, t0: float, steps_this_session: int) -> PretrainStats:
    """``stats`` as they stand now, with this session's time so far accounted for."""
    snapshot = PretrainStats(**stats.as_dict())
    _account_time(snapshot, t0, steps_this_session)
    return snapshot


def _checkpoint(path: Path, method: Method, optimizer: torch.optim.Optimizer, schedule: Any,
                stats: PretrainStats, step_losses: list[Tensor], t0: float, steps_this_session: int,
                probe: OnlineProbe | None = None) -> None:
    snapshot = _timed_copy(stats, t0, steps_this_session)
    extra = {"online_probe": probe.state_dict()} if probe is not None else {}
    atomic_torch_save({"method": method.state_dict(), "optimizer": optimizer.state_dict(),
                       "schedule": schedule.state_dict(), "stats": snapshot.as_dict(),
                       "step_losses": [float(v) for v in step_losses[-snapshot.steps_per_epoch:]]} | extra, path)
