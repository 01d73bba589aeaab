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

from ssl_bench.harness.errors import UsageError

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
    """
    if "://" not in where:
        path = Path(where)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
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
    raise UsageError(f"--storage {describe(where)}: cannot open it: {error}")
