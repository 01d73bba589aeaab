"""The one family of user-facing errors.

Every mistake a user can make (a bad benchmark file, an unknown plugin name, a missing dataset)
raises a subclass of :class:`BenchError`. The CLI prints its message without a traceback and exits
with :attr:`BenchError.exit_code`.
"""

from __future__ import annotations

import difflib
import errno
import re
from collections.abc import Iterable
from pathlib import Path


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


class DiskFullError(BenchError):
    """The disk filled up (``ENOSPC``) while the harness wrote a file; the run stops (finished jobs are kept)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(f"no space left on device writing {path}")
        self.path = str(path)

    @classmethod
    def of(cls, exc: BaseException, where: str | Path | None = None) -> DiskFullError | None:
        """The disk-full error behind ``exc`` (itself, its cause or its context), or None when it is another error.

        Args:
            exc: any exception; an ``OSError`` with errno ``ENOSPC`` (or pyarrow's, which only says so in its
                message) anywhere in its chain counts.
            where: the path to name when the ``OSError`` carries no file name (e.g. the job's output folder).

        Returns:
            A :class:`DiskFullError` naming the file (an atomic write's temporary name is reported as the file
            it stands for), or None.
        """
        seen: set[int] = set()
        cause: BaseException | None = exc
        while cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            if isinstance(cause, DiskFullError):
                return cause
            if isinstance(cause, OSError) and (cause.errno == errno.ENOSPC
                                               or "No space left on device" in str(cause)):
                name = cause.filename if cause.filename is not None else where
                return cls(_final_name(Path(str(name))) if name is not None else "the output folder")
            cause = cause.__cause__ or cause.__context__
        return None


def _final_name(path: Path) -> Path:
    """``dir/.x.parquet.tmp123`` (an atomic write's temporary file) -> ``dir/x.parquet``; other paths unchanged."""
    match = re.fullmatch(r"\.(.+)\.tmp\d+", path.name)
    return path.with_name(match.group(1)) if match else path
