"""Random-init baseline: the backbone as initialised, never trained.

The lower reference of every table in the studies (the transfer study's "random init" rows). A method
that does not beat it has learned nothing.
"""

from __future__ import annotations

from ssl_bench.harness import Method, Register, hookimpl


class RandomInit(Method):
    """No pretraining: the harness saves the seeded initial backbone and skips the training loop."""

    name = "random_init"
    trains = False


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(RandomInit)
