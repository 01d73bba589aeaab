"""The pytest plugin ssl-bench installs (entry point ``pytest11``): the ``bench_registry`` fixture.

It imports pytest alone. torch and the plugins load when a test first asks for the fixture, so a
project that shares the environment but never uses ssl-bench pays nothing for it at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ssl_bench.harness.plugins import Registry


@pytest.fixture(scope="session")
def bench_registry() -> Registry:
    """The registry of built-in and installed plugins."""
    from ssl_bench.harness.plugins import collect, make_plugin_manager

    return collect(make_plugin_manager())
