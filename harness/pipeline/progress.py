"""What the pretraining loop reports while it trains: the per-step event and, without bars, progress lines.

:class:`StepReporter` is told of every optimizer step and reads the loss from the device only when it
has something to report: every ``every_steps`` steps (and at the last step) it calls ``on_step`` with
the step's metrics (the ``bench_step_logged`` feed); when ``line_every_s`` is set (no progress bar:
stderr is not a terminal) it logs one progress line once that many seconds have passed since the last
(job, step k/N, epoch, loss, images/s, ETA). One host sync per report, none on the other steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from ssl_bench.harness.pipeline.logs import duration, logger

OnStep = Callable[[int, dict[str, float]], None]
"""``on_step(step, metrics)``: see the ``bench_step_logged`` hook for the keys of ``metrics``."""


class StepReporter:
    """Reports the steps of one pretraining session (one process: rank 0's; the others pass nothing).

    Args:
        desc: the job's label in progress lines.
        end: the last step of this session (the run's total unless it stops early).
        steps_per_epoch: optimizer steps per epoch.
        epochs: epochs of the whole run.
        batch_size: images per optimizer step (the global batch).
        on_step: called every ``every_steps`` steps and at step ``end``; None: no event.
        every_steps: the event's period in steps.
        line_every_s: seconds between progress lines; None: no lines (a progress bar shows instead).
    """

    def __init__(self, *, desc: str, end: int, steps_per_epoch: int, epochs: int, batch_size: int,
                 on_step: OnStep | None, every_steps: int, line_every_s: float | None) -> None:
        self.desc, self.end, self.steps_per_epoch, self.epochs = desc, end, steps_per_epoch, epochs
        self.batch_size, self.on_step, self.every_steps = batch_size, on_step, every_steps
        self.line_every_s = line_every_s
        self.t0 = self.window_t0 = self.last_line = time.perf_counter()
        self.session_steps = self.window_steps = 0

    def step_done(self, step: int, loss: Tensor, terms: Mapping[str, Tensor], lr: float) -> None:
        """Step ``step`` (counted from 1) took its optimizer step with this loss, these terms and this lr.

        Args:
            step: optimizer steps done.
            loss: the step's scalar loss (any dtype, on the device). Shape: ().
            terms: the method's named terms. Each of shape ().
            lr: the learning rate of the optimizer's first parameter group at this step.
        """
        self.session_steps += 1
        self.window_steps += 1
        event = self.on_step is not None and (step % self.every_steps == 0 or step == self.end)
        line = self.line_every_s is not None and time.perf_counter() - self.last_line >= self.line_every_s
        if not (event or line):
            return
        parts = [loss.detach().float().reshape(())] + [t.detach().float().reshape(()).to(loss.device)
                                                        for t in terms.values()]
        values: list[float] = torch.stack(parts).tolist()  # the one host sync of this report
        now = time.perf_counter()
        if event and self.on_step is not None:
            metrics = {"loss": values[0], **{f"loss/{name}": v for name, v in zip(terms, values[1:])}, "lr": float(lr),
                       "images_per_s": self.window_steps * self.batch_size / max(now - self.window_t0, 1e-9),
                       "epoch": step / self.steps_per_epoch}
            self.window_t0, self.window_steps = now, 0
            self.on_step(step, metrics)
        if line:
            self.last_line = now
            logger().info(self.line(step, values[0], now))

    def line(self, step: int, loss: float, now: float) -> str:
        """``  simclr s0: step 120/400, epoch 2/5, loss 4.213, 812 img/s, ETA 1 min 09 s``."""
        elapsed = max(now - self.t0, 1e-9)
        rate = self.session_steps * self.batch_size / elapsed
        eta = (self.end - step) * elapsed / self.session_steps
        epoch = min((step - 1) // self.steps_per_epoch + 1, self.epochs)
        return (f"  {self.desc}: step {step}/{self.end}, epoch {epoch}/{self.epochs}, loss {loss:.3f}, "
                f"{rate:.0f} img/s, ETA {duration(eta)}")
