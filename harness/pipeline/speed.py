"""How long one pretraining step of a job takes on this device: measured, for the preflight's estimate.

A probe builds the job's method (its backbone, heads, view pipelines and optimizer) afresh and takes
real training steps, as :func:`~ssl_bench.harness.pipeline.train.pretrain` does (views made on the
device, the job's precision, channels-last), on random uint8 images of the training set's shape.
A step costs a fixed part (launching the work, the optimizer over every parameter) and a part per
image, so the probe times a few batch sizes, from small to the job's, within a budget of seconds
(:data:`PROBE_S` per configuration, :data:`PROBE_TOTAL_S` for a plan), and reads the job's batch off
them (:func:`seconds_at`). Everything a probe builds is its own and dropped after; the global RNG is
the caller's to keep (:func:`fork_rng`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from ssl_bench.harness.components import Batch, instantiate_method
from ssl_bench.harness.data import ImageSet, normalize, to_float
from ssl_bench.harness.pipeline.encoders import build_backbone
from ssl_bench.harness.pipeline.optim import build_optimizer
from ssl_bench.harness.pipeline.plan import PretrainJob, content_key
from ssl_bench.harness.pipeline.precision import autocast, channels_last, resolve_precision

if TYPE_CHECKING:
    from ssl_bench.harness.pipeline.runner import Run

PROBE_S = 0.5
"""Seconds one probe may take (a single step of a heavy configuration may exceed it: it is still timed)."""
PROBE_TOTAL_S = 10.0
"""Seconds all probes of a plan may take; configurations left over are not measured."""


class StepTimer:
    """Seconds per pretraining step of each distinct configuration (method, backbone, views, optimizer, image
    shape, batch), measured once on the run's device within :data:`PROBE_TOTAL_S` in all."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.spent = 0.0
        self.usable = usable(run.device)
        self._memo: dict[str, float | None] = {}

    def seconds_per_step(self, job: PretrainJob, data: ImageSet, batch: int) -> float | None:
        """Seconds of one step of ``job`` at ``batch`` images shaped like ``data``'s; None when not measured
        (the device is not here, the budget is spent, or no step could run)."""
        key = content_key({"method": job.method.payload(), "backbone": job.backbone.payload(),
                           "views": {v: r.payload() for v, r in job.views.items()},
                           "optimizer": job.pretrain.optimizer.name, "shape": list(data.images.shape[1:]),
                           "batch": batch})
        if key not in self._memo:
            self._memo[key] = self._probe(job, data, batch) if self.usable else None
        return self._memo[key]

    def _probe(self, job: PretrainJob, data: ImageSet, batch: int) -> float | None:
        """Seconds per training step of ``job`` at ``batch`` images; None if no step could run."""
        budget = min(PROBE_S, PROBE_TOTAL_S - self.spent)
        if budget <= 0 or batch < 1:
            return None
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return time_steps(self.run, job, data, batch, budget)
        except Exception:  # noqa: BLE001 - a probe that fails (memory, a method's own check) is not measured
            return None
        finally:
            self.spent += time.perf_counter() - t0
            if self.run.device.type == "cuda":
                torch.cuda.empty_cache()


def time_steps(run: Run, job: PretrainJob, data: ImageSet, batch: int, budget_s: float) -> float | None:
    """Seconds per training step of ``job`` at ``batch`` images, from steps on random images shaped like ``data``'s.

    A step costs a fixed part (launching the work, the optimizer over every parameter) and a part per image:
    one untimed step at the smallest of the halvings of ``batch`` (at least 2 images), one timed, then
    one timed per doubling while the next is expected to fit in ``budget_s``. At ``batch`` itself, the
    fastest of up to three steps; short of it, the line through the last two sizes timed (with one size,
    its time per image, an overestimate). A step that fails ends the probe with what was timed before it.
    """
    device = run.device
    cuda = device.type == "cuda"
    method_cls = run.registry.get("methods", job.method.name)
    torch.manual_seed(0)
    method = instantiate_method(method_cls, job.method.params, build_backbone(run, job),
                                num_classes=max(1, data.num_classes), num_samples=len(data)).to(device)
    method.to(memory_format=torch.channels_last)
    precision = resolve_precision(job.pretrain.precision, device)
    method.train()
    pipelines = {view: run.registry.get("augmentations", r.name)(r.params) for view, r in job.views.items()}
    optimizer = build_optimizer(job.pretrain.optimizer, method)
    images = torch.randint(0, 256, (batch, *data.images.shape[1:]), dtype=torch.uint8, device=device)
    labels = torch.randint(0, max(1, data.num_classes), (batch,), device=device)

    def step(b: int) -> float:
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        g = torch.Generator(device=device).manual_seed(b)
        x = to_float(images[:b])
        views = channels_last([normalize(pipelines[name](x, generator=g)) for name in method.views])
        with autocast(precision, device):
            loss = method.loss(Batch(views=views, labels=labels[:b], indices=torch.arange(b, device=device)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.on_step_end(1, 2)
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    b = batch
    while b % 2 == 0 and b // 2 >= 2:
        b //= 2
    spent = step(b)  # warm-up: first-call allocations and kernel choices
    timed = [(b, step(b))]
    spent += timed[-1][1]
    while b < batch:
        nb = min(batch, 2 * b)
        if spent + seconds_at(timed, nb) > budget_s:
            break
        try:
            t = step(nb)
        except Exception:  # noqa: BLE001 - a larger batch that fails (memory): keep what the smaller ones said
            break
        b, spent = nb, spent + t
        timed.append((b, t))
    for _ in range(2):
        if b != batch or spent + timed[-1][1] > budget_s:
            break
        t = step(b)
        spent += t
        timed[-1] = (b, min(t, timed[-1][1]))
    return seconds_at(timed, batch)


def seconds_at(timed: Sequence[tuple[int, float]], batch: int) -> float:
    """Seconds per step at ``batch`` from ``(batch size, seconds)`` timings in increasing size: the timing of
    that size, else the line through the last two (never falling with size), else proportional to one."""
    last_b, last_t = timed[-1]
    if last_b == batch:
        return last_t
    if len(timed) == 1:
        return last_t * batch / last_b
    prev_b, prev_t = timed[-2]
    slope = max(0.0, (last_t - prev_t) / (last_b - prev_b))
    return last_t + slope * (batch - last_b)


def usable(device: torch.device) -> bool:
    """Whether steps can be timed on ``device`` here (a dry run may name a GPU this machine lacks)."""
    if device.type != "cuda":
        return True
    return torch.cuda.is_available() and (device.index is None or device.index < torch.cuda.device_count())


@contextmanager
def fork_rng(device: torch.device) -> Iterator[None]:
    """The global RNG (CPU, and the CUDA device's) restored afterwards: the jobs draw what they drew before."""
    devices = [device.index or 0] if device.type == "cuda" and usable(device) else []
    with torch.random.fork_rng(devices=devices):
        yield
