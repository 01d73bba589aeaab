"""The one family of user-facing errors.

Every mistake a user can make (a bad benchmark file, an unknown plugin name, a missing dataset)
raises a subclass of :class:`BenchError`. The CLI prints its message without a traceback and exits
with :attr:`BenchError.exit_code`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(Exception):
    """Base of every error meant for the user rather than for a debugger."""

    exit_code: int = 1


class SpecError(BenchError):
    """A benchmark file or command line is wrong; the message names the file and dotted key."""

    exit_code = 2

    def __init__(self, source: str, loc: str, message: str) -> None:
        self.source, self.loc = source, loc
        where = f"{source}: {loc}: " if loc else f"{source}: "
        super().__init__(where + message)


class UsageError(BenchError):
    """A command-line option that cannot be honoured (e.g. ``--device cuda`` without a GPU)."""

    exit_code = 2


class UnknownComponentError(BenchError):
    """A plugin name that nothing registered; lists the available names and the closest match."""

    exit_code = 2

    def __init__(self, kind: str, name: str, available: Iterable[str]) -> None:
        names = sorted(available)
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        super().__init__(f"Unknown {kind} '{name}'; available: {', '.join(names) or '(none)'}.{hint}")
        self.kind, self.name, self.available = kind, name, names


class DuplicateComponentError(BenchError):
    """Two plugins registered the same component name."""

    exit_code = 2


class DataError(BenchError):
    """A dataset is missing, unreadable or corrupt; the message names the file or folder."""


class PluginError(BenchError):
    """A plugin failed to load or broke its contract."""
