"""What a run tells its user while it runs: the ``ssl_bench`` logger, a job's ``log.txt``, the env switches.

Every line ``bench run`` prints on stderr goes through the stdlib logger ``ssl_bench``
(:data:`LOGGER_NAME`): a progress line is INFO, a contended timing or a failed plugin hook WARNING,
a failed job ERROR, the metrics of each logged step DEBUG. By default the logger writes the message
alone to stderr at INFO and above (the text of each line is the message, nothing added);
``bench -v`` adds the DEBUG lines, ``bench -q`` keeps warnings and errors only
(:func:`configure_logging`). It does not propagate to the root logger; an application that embeds
the harness and wants the lines elsewhere adds its own handlers to ``logging.getLogger("ssl_bench")``.

While a pretraining job trains, its lines are also appended, with a timestamp, to its artifact
folder's ``log.txt`` (:func:`job_log`), at INFO and above whatever ``-q`` says.

Switches (environment), checked once when ``bench`` starts:
    BENCH_LOG_EVERY=N         the per-step event (and ``metrics.jsonl``) every N optimizer steps (default 10).
    BENCH_PROGRESS_EVERY=S    without progress bars, one progress line at most every S seconds (default 30).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from ssl_bench.harness.errors import UsageError

LOGGER_NAME = "ssl_bench"
LOG_EVERY_STEPS = 10
"""Default of ``BENCH_LOG_EVERY``: the per-step event every this many optimizer steps (and at the last step)."""
PROGRESS_EVERY_S = 30.0
"""Default of ``BENCH_PROGRESS_EVERY``: without progress bars, one progress line at most this often (seconds)."""
FILE_FORMAT = "%(asctime)s %(levelname)s %(message)s"
"""A line of a job's ``log.txt``."""


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each line (pytest and tests swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def logger() -> logging.Logger:
    """The ``ssl_bench`` logger, with its stderr handler (message only, INFO and above) on first use."""
    log = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.setLevel(logging.INFO)
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)  # the handlers choose; a job's log.txt keeps INFO under -q
        log.propagate = False
    return log


def configure_logging(verbosity: int = 0) -> None:
    """Set what reaches stderr (``bench -v``: 1, debug; ``-q``: -1, warnings only; 0: info) and check the
    env switches, so a bad value is one line and exit code 2 before any job.

    Raises:
        UsageError: ``BENCH_LOG_EVERY`` or ``BENCH_PROGRESS_EVERY`` is not a valid number.
    """
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    for handler in logger().handlers:
        if isinstance(handler, _Stderr):
            handler.setLevel(level)
    log_every_steps()
    progress_every_s()


def log_every_steps() -> int:
    """``BENCH_LOG_EVERY``, or :data:`LOG_EVERY_STEPS`: how often the per-step event fires, in steps."""
    raw = os.environ.get("BENCH_LOG_EVERY", "").strip()
    if not raw:
        return LOG_EVERY_STEPS
    if not raw.isdecimal() or int(raw) < 1:
        raise UsageError(f"BENCH_LOG_EVERY={raw}: give a whole number of optimizer steps, 1 or more")
    return int(raw)


def progress_every_s() -> float:
    """``BENCH_PROGRESS_EVERY``, or :data:`PROGRESS_EVERY_S`: seconds between progress lines without bars."""
    raw = os.environ.get("BENCH_PROGRESS_EVERY", "").strip()
    if not raw:
        return PROGRESS_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise UsageError(f"BENCH_PROGRESS_EVERY={raw}: give a number of seconds, 0 or more")
    return value


@contextmanager
def job_log(path: Path) -> Iterator[None]:
    """Append every line logged meanwhile (INFO and above) to ``path``, each with its time and level.

    The file and its folder are created on the first line, so a job that says nothing leaves no file.
    """
    handler = _FolderFileHandler(path)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.setLevel(logging.INFO)
    log = logger()
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


class _FolderFileHandler(logging.FileHandler):
    """A file handler that appends, flushes each line, and creates the file's folder on its first line."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True)

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:  # the first line: the file is opened now
            Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        super().emit(record)


def counted(n: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``, ``0 steps``: a count and its noun, in the plural unless it is 1."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def duration(seconds: float) -> str:
    """A span for humans: ``42 s``, ``3 min 05 s``, ``2 h 07 min``, ``3 d 04 h``; ``?`` if not finite."""
    if not math.isfinite(seconds):
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600:02d} h"


def plan_clock(started: float, worked: int, left: int, now: float | None = None) -> str:
    """The end of a plan-level line: `` | elapsed 2 min 10 s, ETA 4 min 20 s`` (no ETA when nothing is left).

    Args:
        started: ``time.perf_counter()`` when the plan started.
        worked: evaluations handled since then that took work (cached ones take none), this one included.
        left: evaluations still to come.
        now: the current ``time.perf_counter()``; None: read it.
    """
    elapsed = (time.perf_counter() if now is None else now) - started
    if left <= 0 or worked <= 0:
        return f" | elapsed {duration(elapsed)}"
    return f" | elapsed {duration(elapsed)}, ETA {duration(elapsed / worked * left)}"
