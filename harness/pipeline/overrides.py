"""``--set KEY=VALUE``: change one value of a benchmark file from the command line.

``bench run FILE --set pretrain.epochs=2 --set 'methods[0].params.temperature=0.5'`` reads the file,
merges the ``--profile`` (when one is named), then applies each override in order to the raw TOML
tables, and only then validates: an override is checked exactly as the same value written in the file
would be, and it is part of every content key the changed value reaches (another value, other jobs).

``KEY`` is a dotted path of table keys and list indices: ``pretrain.optimizer.lr``,
``methods[0].params.temperature``, ``evaluations[1].sweep.lr``; a key may be double-quoted
(``profiles."a.b".seeds``). A missing table on the way is created (``methods[0].pretrain.epochs=3`` in a
file whose method has no ``pretrain`` table); an index must name an existing entry. ``VALUE`` is a TOML
value (``2``, ``0.5``, ``true``, ``[0, 1]``, ``{ name = "sgd", lr = 0.1 }``, ``"text"``); anything that is
not one is the bare string it reads as (``--set pretrain.backbone.name=resnet18``).

Every error names the override, ``--set methods[7].params.x=1: methods has 3 entries``; a value the
file's validation refuses gets that validation's message behind the override.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ssl_bench.harness.errors import BenchError, SpecError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_TOKEN = re.compile(r'\.?(?:(?P<bare>[A-Za-z0-9_-]+)|"(?P<quoted>[^"\\]*)")|\[(?P<index>\d+)\]')


@dataclass(frozen=True)
class Override:
    """One ``--set KEY=VALUE``: the text as given, the path it names and the parsed value."""

    text: str
    """The argument as the user wrote it (errors quote it)."""
    path: tuple[str | int, ...]
    """Table keys (str) and list indices (int), outermost first."""
    value: Any
    """The parsed TOML value (or the bare string)."""

    @property
    def loc(self) -> str:
        """The path as a benchmark-file error cites it: ``methods[0].params.temperature``."""
        return format_path(self.path)

    def error(self, message: str) -> UsageError:
        """A one-line error naming this override: ``--set KEY=VALUE: message``."""
        return UsageError(f"--set {self.text}: {message}")


def format_path(path: Sequence[str | int]) -> str:
    """``('methods', 0, 'params', 'temperature')`` -> ``methods[0].params.temperature``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def parse_override(text: str) -> Override:
    """Parse ``KEY=VALUE`` (see the module docstring).

    Raises:
        UsageError: no ``=``, an empty key, or a key that is not a dotted path of keys and ``[index]``es.
    """
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise UsageError(f"--set {text}: expected KEY=VALUE, for example --set pretrain.epochs=2")
    path: list[str | int] = []
    pos = 0
    while pos < len(key):
        match = _TOKEN.match(key, pos)
        if match is None or (not path and key.startswith((".", "["), pos)) or (
                path and match.group("index") is None and not key.startswith(".", pos)):
            raise UsageError(f"--set {text}: cannot read the key at '{key[pos:]}'; write a dotted path such as "
                             "pretrain.optimizer.lr or methods[0].params.temperature")
        index, quoted = match.group("index"), match.group("quoted")
        path.append(int(index) if index is not None else quoted if quoted is not None else match.group("bare"))
        pos = match.end()
    return Override(text, tuple(path), parse_value(raw))


def parse_value(raw: str) -> Any:
    """``raw`` as a TOML value (``2`` -> 2, ``[0, 1]`` -> [0, 1], ``true`` -> True); else the stripped string."""
    text = raw.strip()
    try:
        doc = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return doc["value"] if list(doc) == ["value"] else text  # 'x\ny = 1' is text, not two keys


def apply_overrides(raw: dict[str, Any], overrides: Sequence[Override]) -> dict[str, Any]:
    """A copy of the parsed file ``raw`` with each override applied in order (``raw`` is left as it was).

    Raises:
        UsageError: an index past the end of its list, an index into something that is not a list, or a
            key into something that is not a table; the message names the override and what is there.
    """
    out = copy.deepcopy(raw)
    for override in overrides:
        node: Any = out
        for depth, part in enumerate(override.path):
            last = depth == len(override.path) - 1
            where = format_path(override.path[:depth]) or "the file"
            if isinstance(part, int):
                if not isinstance(node, list):
                    raise override.error(f"{where} is {_kind(node)}, not a list")
                if part >= len(node):
                    entries = f"{len(node)} entr{'y' if len(node) == 1 else 'ies'}"
                    raise override.error(f"{where} has {entries}")
            elif not isinstance(node, dict):
                raise override.error(f"{where} is {_kind(node)}, not a table")
            if last:
                node[part] = copy.deepcopy(override.value)
            else:
                if isinstance(part, str) and part not in node:
                    node[part] = {}
                node = node[part]
    return out


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "a table"
    return f"{value!r}"


def blame(error: SpecError, overrides: Sequence[Override]) -> BenchError:
    """The error to report for ``error``, raised validating a file with ``overrides`` applied.

    When the key the error cites lies on an override's path (the override's key, a key inside the value it
    set, or the table whose check it tripped), it is that override's: ``--set KEY=VALUE: <the file's
    message>``. Otherwise it is the file's own mistake and comes back unchanged. The last override
    that matches wins (it is the one that set the value).
    """
    for override in reversed(overrides):
        if _related(error.loc, override.loc):
            return override.error(str(error))
    return error


def _related(loc: str, key: str) -> bool:
    """Whether one of two dotted locations contains the other (``pretrain`` and ``pretrain.epochs``)."""
    if not loc or not key:
        return False
    short, long = sorted((loc, key), key=len)
    return long == short or (long.startswith(short) and long[len(short)] in ".[")
