"""Optuna storages that several ``bench worker`` processes share.

``--storage`` takes a SQLAlchemy URL for a database server (``postgresql://user@host/db``; any URL
Optuna's RDBStorage accepts) or a file path for the embedded default, Optuna's JournalStorage on a
journal file (append-only, locked with symlinks, so it also works on NFS). A bare ``postgresql://``
uses whichever driver is installed, psycopg 3 (``pip install "psycopg[binary]"``) or psycopg2.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage

from ssl_bench.harness.errors import DiskFullError, UsageError

DEFAULT_JOURNAL = "optuna.journal"
"""File name of the embedded storage inside the output folder."""


def describe(where: str) -> str:
    """``where`` with any password hidden."""
    if "://" not in where:
        return where
    try:
        from sqlalchemy.engine import make_url

        return make_url(where).render_as_string(hide_password=True)
    except Exception:
        return where.split("://", 1)[0] + "://..."


def with_driver(url: str) -> str:
    """``postgresql://...`` -> ``postgresql+psycopg://...`` (or ``+psycopg2``), whichever is installed."""
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres"):
        for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
            if importlib.util.find_spec(module) is not None:
                return f"postgresql+{driver}{sep}{rest}"
    return url


def open_storage(where: str, *, attempts: int = 5) -> optuna.storages.BaseStorage:
    """The storage at ``where``: a database URL (contains ``://``) or a journal file path.

    Workers that start together may race to create a database's tables; opening is retried.

    Raises:
        UsageError: a folder, a journal file that cannot be created or read, a file that is not an Optuna
            journal, a database that cannot be reached (one line naming ``--storage``).
        DiskFullError: no space left to create the journal file.
    """
    if "://" not in where:
        return _open_journal(Path(where))
    error: Exception | None = None
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(with_driver(where), engine_kwargs={"pool_pre_ping": True})
        except ImportError as exc:
            raise UsageError(f"--storage {describe(where)}: the database driver is not installed ({exc}); "
                             'for PostgreSQL: pip install "psycopg[binary]"') from None
        except Exception as exc:
            error = exc
            time.sleep(0.5 * (attempt + 1))
    raise UsageError(f"--storage {describe(where)}: cannot open it: {_first_line(error)}")


def _open_journal(path: Path) -> JournalStorage:
    """The journal storage in the file ``path`` (created with its folder when missing)."""
    if path.is_dir():
        raise UsageError(f"--storage {path}: is a folder; give a journal file (e.g. {path / DEFAULT_JOURNAL}) "
                         "or a database URL")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as exc:
        if (full := DiskFullError.of(exc, path)) is not None:
            raise full from None
        raise UsageError(f"--storage {path}: cannot open the journal file: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - whatever the journal's parser trips over, the file is not a journal
        raise UsageError(f"--storage {path}: not an Optuna journal file ({type(exc).__name__}: "
                         f"{_first_line(exc)})") from None


def _first_line(exc: BaseException | None) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
