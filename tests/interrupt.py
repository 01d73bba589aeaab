"""Stop a pretraining run part-way, as a crash or a kill would, to test what resuming does."""

from __future__ import annotations

from ssl_bench.harness.components import Method


class Interrupt(Exception):
    """Raised by :func:`stop_at` inside the training loop."""


def stop_at(method: Method, step: int) -> None:
    """Make ``method`` raise :class:`Interrupt` right after its optimizer step ``step``."""

    def stop(done: int, total: int) -> None:
        if done == step:
            raise Interrupt

    method.on_step_end = stop  # type: ignore[method-assign]
