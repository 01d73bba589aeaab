"""Code fingerprints: the source a job's numbers come from, as part of its content key.

A job's key covers its resolved spec, plugin versions and data (:mod:`~ssl_bench.harness.pipeline.plan`);
this module adds the code, so that editing a method's loss in an editable install redoes that method's
jobs instead of reusing results the old code made. A fingerprint is a mapping ``label -> digest``, one
entry per source file, with labels named by module (``plugins/methods/simclr.py``,
``harness/pipeline/train.py``, ``bench_byol/loss.py``), so the part that changed can be named.

Which files a job covers:

- each component it uses (method, backbone, view pipelines and dataset for a pretraining; evaluator and
  target dataset for an evaluation): the module that defines the class, plus, followed transitively, every
  module it imports (statically, from its syntax tree; imports under ``if TYPE_CHECKING:`` are annotations
  and skipped) that lies in its own package (``ssl_bench.plugins`` for the built-ins, the top-level
  package of a third-party plugin such as ``bench_byol``) or in the plugin toolkit ``ssl_bench.harness.kit``,
  so built-in and third-party components are fingerprinted alike; the rest of ``ssl_bench.harness`` (what
  ``from ssl_bench.harness import ...`` names) is covered by the harness sets below, not per import;
- the harness modules the job computes with, a fixed set per kind of job (:data:`PRETRAIN_MODULES` for a
  pretraining that trains, :data:`UNTRAINED_MODULES` for a method with nothing to learn,
  :data:`EVAL_MODULES` for an evaluation). Orchestration (the runner's job loop, the CLI, result
  writing, the leaderboard) is left out on purpose: it decides what runs and where it goes, not the
  numbers, and it changes often. An evaluation's key also covers its pretraining's key, so a method's
  edit redoes its evaluations too, and no other method's jobs.

Normal form. A file's digest hashes its syntax tree with docstrings removed, written back out by
``ast.unparse`` (SHA-256, 16 hex digits): comments, formatting and docstrings change nothing, any
change to what runs does. This is kinder to plugin authors than hashing bytes (fixing a typo in a
docstring does not redo a week of pretraining), at the cost that a docstring read by code (rare in a
component) is not covered. Only file contents are hashed, never paths or modification times, so a
wheel install and an editable install of the same code give the same fingerprint; a different Python
whose ``ast.unparse`` writes some construct differently may give other digests (new keys, redone
jobs: never a wrong reuse). A file that is not Python source (a compiled module) is hashed as bytes.

Classes without a source file. A class defined in ``__main__`` (a script, a notebook cell) is hashed by
its own ``class`` statement (found through its functions' code objects and ``linecache``, where notebooks
keep their cells, else by ``inspect.getsource``), normalised the same way, not by the whole script, so
editing unrelated cells redoes nothing; helpers it calls in the same script are not covered. Where even that
source cannot be read, the entry is the qualified name alone (digest ``"unknown"``): its code changes
are then not seen.

Digests are memoised per file for the life of the process; a file is read again when its size or
modification time changes (they decide when to re-read, never the digest). :func:`forget` empties the memo.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import linecache
import os
import sys
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PRETRAIN_MODULES: tuple[str, ...] = (
    "ssl_bench.harness.pipeline.train",  # the loop: batches, views, steps, precision
    "ssl_bench.harness.pipeline.optim",  # optimizers and learning-rate schedules
    "ssl_bench.harness.pipeline.checkpoint",  # resuming (RNG state, optimizer state)
    "ssl_bench.harness.pipeline.encoders",  # seeding, building the method, the rows it trains on
    "ssl_bench.harness.components",  # Method, Batch, instantiate_method
    "ssl_bench.harness.data",  # ImageSet batches, normalisation, subsets and splits
    "ssl_bench.harness.scale.distributed",  # gather and the averages across processes
)
"""Harness modules a pretraining that trains runs through (besides its components' own code)."""

UNTRAINED_MODULES: tuple[str, ...] = (
    "ssl_bench.harness.pipeline.encoders",
    "ssl_bench.harness.components",
    "ssl_bench.harness.data",
)
"""Harness modules an untrained method's one-off encoder runs through (no loop, no optimizer)."""

EVAL_MODULES: tuple[str, ...] = (
    "ssl_bench.harness.pipeline.sweep",  # the validation carve-out, the grid, the refit on train
    "ssl_bench.harness.pipeline.features",  # cached encoder features
    "ssl_bench.harness.pipeline.optim",  # lr_factor, which evaluators that train reuse
    "ssl_bench.harness.components",  # EvalTask, Evaluator
    "ssl_bench.harness.data",  # subsets, splits, normalisation of the features' inputs
)
"""Harness modules an evaluation runs through (besides the evaluator's and the target dataset's code)."""

KIT = "ssl_bench.harness.kit"
"""The plugin toolkit: followed from any component that imports it."""

UNKNOWN = "unknown"
"""The digest of a class whose source cannot be read (only its qualified name is recorded)."""

CodeParts = dict[str, str]
"""label (a file named by module, e.g. ``plugins/methods/simclr.py``) -> digest of its normalised source."""


@dataclass(frozen=True)
class _Source:
    """One file as read: what decides whether the memo still holds, its digest and its imports."""

    stamp: tuple[int, int]
    digest: str
    imports: tuple[tuple[int, str, tuple[str, ...]], ...]
    """(level, module, names) of every run-time import: ``from ..x import a, b`` is (2, "x", ("a", "b"))."""


_memo: dict[str, _Source] = {}


def forget() -> None:
    """Empty the per-file memo (the next fingerprint reads every file again)."""
    _memo.clear()


def digest_source(text: str) -> str:
    """The digest of Python source in normal form: its tree without docstrings, unparsed, SHA-256 (16 hex).

    Raises:
        SyntaxError: ``text`` is not Python.
    """
    return _digest(ast.unparse(_strip_docstrings(ast.parse(text))).encode())


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _is_string(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _strip_docstrings(tree: ast.Module) -> ast.Module:
    """``tree`` without its docstrings (edited in place).

    Every statement that is a bare string goes: the docstrings of the module, classes and functions, and the
    attribute docstrings under fields (as ``Params`` models have). Such a statement computes nothing.
    """
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            stmts = getattr(node, name, None)
            if isinstance(stmts, list) and any(isinstance(s, ast.stmt) and _is_string(s) for s in stmts):
                setattr(node, name, [s for s in stmts if not _is_string(s)] or [ast.Pass()])
    return tree


def _imports(tree: ast.Module) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """The run-time imports of a module (those under ``if TYPE_CHECKING:`` are skipped)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    out: list[tuple[int, str, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(0, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.level, node.module or "", tuple(alias.name for alias in node.names)))
    return tuple(out)


def _read(path: str) -> _Source | None:
    """The digest and imports of the file at ``path`` (memoised), or None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    stamp = (st.st_size, st.st_mtime_ns)
    known = _memo.get(path)
    if known is not None and known.stamp == stamp:
        return known
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    try:
        tree = ast.parse(data.decode("utf-8"))
    except (UnicodeDecodeError, SyntaxError, ValueError):  # not Python source: a compiled module
        source = _Source(stamp, _digest(data), ())
    else:
        imports = _imports(tree)
        source = _Source(stamp, _digest(ast.unparse(_strip_docstrings(tree)).encode()), imports)
    _memo[path] = source
    return source


def _origin(module: str) -> str | None:
    """The file module ``module`` is loaded from (its parent packages are imported to find it), or None."""
    loaded = sys.modules.get(module)
    spec = getattr(loaded, "__spec__", None) if loaded is not None else None
    if spec is None:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError, AttributeError):
            return None
    origin = getattr(spec, "origin", None)
    return origin if isinstance(origin, str) and os.path.isfile(origin) else None


def label(module: str, path: str) -> str:
    """The name of a module's file in a fingerprint: its dotted name as a path, ``ssl_bench/`` left off.

    ``ssl_bench.plugins.methods.simclr`` -> ``plugins/methods/simclr.py`` (the repository's layout), a
    package -> ``.../__init__.py``, a third-party ``bench_byol.loss`` -> ``bench_byol/loss.py``. Built from
    the module's name, so the label is the same wherever the file is installed.
    """
    parts = module.split(".")
    if parts[0] == "ssl_bench" and len(parts) > 1:
        parts = parts[1:]
    name = Path(path).name
    if name.startswith("__init__."):
        parts.append("__init__")
    suffix = ".py" if name.endswith(".py") else Path(path).suffix
    return "/".join(parts) + suffix


def _scope(module: str) -> str:
    """The package whose modules a component's imports are followed into (besides the kit)."""
    top = module.split(".")[0]
    return "ssl_bench.plugins" if top == "ssl_bench" else top


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _is_package(path: str) -> bool:
    return Path(path).name.startswith("__init__.")


def _resolve(module: str, path: str, level: int, name: str, names: tuple[str, ...],
             within: tuple[str, ...]) -> list[str]:
    """The modules under ``within`` that one import statement of ``module`` names.

    ``from pkg import a`` names ``pkg`` and, where ``a`` is a module of it, ``pkg.a``; a relative import is
    resolved against ``module`` (found at ``path``).
    """
    if level:
        base = module if _is_package(path) else module.rpartition(".")[0]
        for _ in range(level - 1):
            base = base.rpartition(".")[0]
        if not base:
            return []
        name = f"{base}.{name}" if name else base
    candidates = [name, *(f"{name}.{alias}" for alias in names if alias != "*")]
    return [c for c in candidates if any(_within(c, w) for w in within) and (c == name or _origin(c) is not None)]


def module_parts(modules: Iterable[str], *, follow: str | None = None) -> CodeParts:
    """The fingerprint of ``modules`` (files that cannot be found are left out).

    Args:
        modules: dotted module names, hashed in this order.
        follow: also hash, transitively, what they import within this package or the kit; None: only them.
    """
    parts: CodeParts = {}
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop(0)
        if module in seen:
            continue
        seen.add(module)
        path = _origin(module)
        source = _read(path) if path is not None else None
        if path is None or source is None:
            continue
        parts[label(module, path)] = source.digest
        if follow is None:
            continue
        for level, name, names in source.imports:
            todo += [t for t in _resolve(module, path, level, name, names, (follow, KIT)) if t not in seen]
    return parts


def class_parts(cls: type) -> CodeParts:
    """The fingerprint of a component class: its module and what that imports within its package and the kit.

    A class of ``__main__`` (a script or a notebook) is hashed by its own source, and a class whose source
    cannot be read by its qualified name alone (see the module docstring).
    """
    module = cls.__module__
    try:
        path = inspect.getsourcefile(cls)
    except (TypeError, OSError):
        path = None
    if module != "__main__" and path is not None and os.path.isfile(path):
        parts = module_parts([module], follow=_scope(module))
        if parts:
            return parts
    name = f"{module}.{cls.__qualname__}"
    source = _class_source(cls)
    try:
        return {name: digest_source(source) if source is not None else UNKNOWN}
    except SyntaxError:
        return {name: UNKNOWN}


def _class_source(cls: type) -> str | None:
    """The source of ``cls``'s own ``class`` statement, or None.

    Found from one of its functions (its code object names the file or notebook cell, read through
    ``linecache``), so a class in a notebook cell, which ``inspect.getsource`` cannot place, is found too;
    a class without functions of its own falls back to ``inspect.getsource``.
    """
    for value in vars(cls).values():
        function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        code = getattr(function, "__code__", None)
        if code is None:
            continue
        lines = linecache.getlines(code.co_filename)
        if not lines:
            continue
        text = "".join(lines)
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == cls.__name__ \
                    and node.lineno <= code.co_firstlineno <= (node.end_lineno or node.lineno):
                segment = ast.get_source_segment(text, node, padded=True)
                return textwrap.dedent(segment) if segment is not None else None
    try:
        return textwrap.dedent(inspect.getsource(cls))
    except (TypeError, OSError):
        return None


def job_parts(classes: Iterable[type], harness: Iterable[str]) -> CodeParts:
    """The fingerprint of a job: each component class's parts, in order, then the ``harness`` modules'."""
    parts: CodeParts = {}
    for cls in classes:
        parts.update(class_parts(cls))
    for key, value in module_parts(harness).items():
        parts.setdefault(key, value)
    return parts
