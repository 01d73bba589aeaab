"""The plugin manager and the typed registry built from it.

Built-in plugins are the modules in :data:`DEFAULT_PLUGINS`; third-party ones come from the
``bench.plugins`` entry-point group. Both are ordinary pluggy plugins; a plugin's name is its module
name (built-ins) or its entry-point name (third-party: ``-p no:NAME`` blocks it). The registry asks
every plugin's registration hooks once and keys components by ``name``; two plugins registering one
name is a :class:`~ssl_bench.harness.errors.DuplicateComponentError` naming both.

A broken third-party plugin never breaks the commands that do not need it. One that fails to import,
whose entry point names a missing module, that implements a hook no specification knows (a misspelt
``bench_register_method``) or whose hook signature does not match is skipped by
:func:`make_plugin_manager`; one whose registration hook raises, registers something that is not a
component, or registers a name another plugin took is skipped by ``collect(pm, strict=False)`` (what
the CLI uses; strict, the default, raises as before). Each skipped plugin is a :class:`PluginProblem`
on ``Registry.problems``: one line with the plugin, its distribution, the file and line where known
and the way out (``-p no:NAME``); :func:`load_registry` prints them to stderr. Asking the registry
for a component a skipped plugin would have provided names that plugin (exit code 2).
A built-in plugin that fails to load is a :class:`PluginError` (ssl-bench itself is broken), never skipped.

Switches (environment):
    BENCH_DISABLE_PLUGIN_AUTOLOAD=1  load no entry points (``--no-plugins`` on the CLI).
    BENCH_LOAD_PLUGINS=a,b           load only these entry points.
    BENCH_TRACE_PLUGINS=1            print every hook call to stderr.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata as md
import inspect
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from ssl_bench.harness import hookspecs
from ssl_bench.harness.components import COMPONENT_KINDS
from ssl_bench.harness.errors import BenchError, DuplicateComponentError, PluginError, UnknownComponentError

ENTRY_POINT_GROUP = "bench.plugins"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "ssl_bench.plugins.augmentations.simclr",
    "ssl_bench.plugins.augmentations.crop_flip",
    "ssl_bench.plugins.augmentations.jigsaw",
    "ssl_bench.plugins.augmentations.byol",
    "ssl_bench.plugins.augmentations.moco_v2",
    "ssl_bench.plugins.augmentations.rotation",
    "ssl_bench.plugins.augmentations.swav_multicrop",
    "ssl_bench.plugins.backbones.convnet",
    "ssl_bench.plugins.backbones.resnet",
    "ssl_bench.plugins.backbones.alexnet",
    "ssl_bench.plugins.backbones.timm_models",
    "ssl_bench.plugins.backbones.vit",
    "ssl_bench.plugins.datasets.shapes",
    "ssl_bench.plugins.datasets.digits",
    "ssl_bench.plugins.datasets.parquet",
    "ssl_bench.plugins.datasets.cifar",
    "ssl_bench.plugins.datasets.imagefolder",
    "ssl_bench.plugins.datasets.torchvision_sets",
    "ssl_bench.plugins.datasets.folder_sets",
    "ssl_bench.plugins.datasets.unlabelled_folder",
    "ssl_bench.plugins.datasets.hf_disk",
    "ssl_bench.plugins.datasets.webdataset_shards",
    "ssl_bench.plugins.datasets.shapes_detection",
    "ssl_bench.plugins.datasets.voc",
    "ssl_bench.plugins.datasets.coco",
    "ssl_bench.plugins.methods.simclr",
    "ssl_bench.plugins.methods.rotnet",
    "ssl_bench.plugins.methods.jigsaw",
    "ssl_bench.plugins.methods.colorization",
    "ssl_bench.plugins.methods.moco",
    "ssl_bench.plugins.methods.byol",
    "ssl_bench.plugins.methods.supervised",
    "ssl_bench.plugins.methods.random_init",
    "ssl_bench.plugins.methods.pretrained",
    "ssl_bench.plugins.methods.swav",
    "ssl_bench.plugins.methods.counting",
    "ssl_bench.plugins.methods.context_encoder",
    "ssl_bench.plugins.methods.pirl",
    "ssl_bench.plugins.methods.cmc",
    "ssl_bench.plugins.methods.cpc_v2",
    "ssl_bench.plugins.methods.barlow_twins",
    "ssl_bench.plugins.methods.vicreg",
    "ssl_bench.plugins.methods.simsiam",
    "ssl_bench.plugins.methods.moco_v3",
    "ssl_bench.plugins.methods.nnclr",
    "ssl_bench.plugins.methods.dino",
    "ssl_bench.plugins.methods.mae",
    "ssl_bench.plugins.methods.simmim",
    "ssl_bench.plugins.evaluators.knn",
    "ssl_bench.plugins.evaluators.linear",
    "ssl_bench.plugins.evaluators.online_linear",
    "ssl_bench.plugins.evaluators.finetune",
    "ssl_bench.plugins.evaluators.adversarial",
    "ssl_bench.plugins.evaluators.robustness",
    "ssl_bench.plugins.evaluators.gallery",
    "ssl_bench.plugins.evaluators.detection",
    "ssl_bench.plugins.trackers.jsonl",
    "ssl_bench.plugins.trackers.tensorboard",
    "ssl_bench.plugins.trackers.wandb",
)


class BenchPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers the plugins it skipped and where entry-point plugins came from."""

    def __init__(self) -> None:
        super().__init__("bench")
        self.problems: list[PluginProblem] = []
        """Plugins that failed to load, in load order."""
        self.distributions: dict[str, tuple[str, str]] = {}
        """Plugin name -> (distribution, version) of each entry-point plugin."""


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that was skipped, and why; ``str()`` is the one line the CLI prints."""

    plugin: str
    """Plugin name (the entry-point name; ``-p no:NAME`` blocks it)."""
    distribution: str
    """Distribution and version, e.g. ``bench-vicreg 0.1.0``; ``unknown`` when no metadata says."""
    reason: str
    """What went wrong, one line."""
    where: str = ""
    """``file:line`` of the mistake where known."""
    provides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Kind -> names the plugin would have registered (empty when it never got that far)."""

    def __str__(self) -> str:
        where = f" ({self.where})" if self.where else ""
        return (f"plugin '{self.plugin}' ({self.distribution}) skipped: {self.reason}{where}; "
                f"fix or uninstall {self.distribution.split(' ')[0]}, or run with -p no:{self.plugin}")


class UsageEnvironmentError(PluginError):
    """A plugin switch (``BENCH_LOAD_PLUGINS``) that cannot be honoured: a command-line mistake, exit code 2."""

    exit_code = 2


class SkippedComponentError(UnknownComponentError):
    """A component nothing registered while a plugin that provides it (or may) was skipped; names that plugin."""

    def __init__(self, kind: str, name: str, available: Iterable[str], problems: list[PluginProblem]) -> None:
        super().__init__(kind, name, available)
        owner = next((p for p in problems if name in p.provides.get(kind + "s", ())), None)
        if owner is not None:
            message = (f"{kind.capitalize()} '{name}' comes from plugin '{owner.plugin}' ({owner.distribution}), "
                       f"which was skipped: {owner.reason}; fix or uninstall {owner.distribution.split(' ')[0]}")
        else:
            maybe = "; ".join(f"'{p.plugin}' ({p.distribution}: {p.reason})" for p in problems if not p.provides)
            message = f"{self.args[0]} Skipped before registering anything, so it may come from: {maybe}"
        self.args = (message,)


def make_plugin_manager(
    *, load_entrypoints: bool | None = None, blocked: Iterable[str] = (), builtins: bool = True
) -> pluggy.PluginManager:
    """Create a plugin manager with the built-in plugins and (unless disabled) the entry points.

    An entry-point plugin that fails to load or to validate is skipped and recorded on the returned
    manager's ``problems`` (a :class:`BenchPluginManager`); a built-in one raises :class:`PluginError`.

    Args:
        load_entrypoints: load the ``bench.plugins`` entry points; None reads the environment.
        blocked: plugin names (module or entry-point names) not to load.
        builtins: register :data:`DEFAULT_PLUGINS`.

    Raises:
        PluginError: a built-in plugin is broken, or ``BENCH_LOAD_PLUGINS`` names no installed plugin.
    """
    pm = BenchPluginManager()
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    if builtins:
        for module_name in DEFAULT_PLUGINS:
            if pm.is_blocked(module_name):
                continue
            problem = _load(pm, module_name, functools.partial(importlib.import_module, module_name), "ssl-bench", "")
            if problem is not None:  # ssl-bench itself is broken: say where, never skip a built-in
                raise PluginError(f"built-in plugin {module_name}: {problem.reason}"
                                  + (f" ({problem.where})" if problem.where else ""))
    if load_entrypoints is None:
        load_entrypoints = os.environ.get("BENCH_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0")
    if load_entrypoints:
        only = [n for n in os.environ.get("BENCH_LOAD_PLUGINS", "").split(",") if n]
        installed = md.entry_points(group=ENTRY_POINT_GROUP)
        unknown = sorted(set(only) - {ep.name for ep in installed})
        if unknown:
            names = ", ".join(sorted(ep.name for ep in installed)) or "none"
            raise UsageEnvironmentError(f"BENCH_LOAD_PLUGINS names {', '.join(unknown)}, which no installed "
                                        f"distribution provides; installed plugins: {names}")
        for ep in installed:
            if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None or (only and ep.name not in only):
                continue
            dist = getattr(ep, "dist", None)
            dist_name = dist.name if dist is not None else "unknown"
            version = dist.version if dist is not None else ""
            problem = _load(pm, ep.name, ep.load, dist_name, version, ep.value)
            if problem is not None:
                pm.problems.append(problem)
            else:
                pm.distributions[ep.name] = (dist_name, version)
    pm.check_pending()
    if os.environ.get("BENCH_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    return pm


def _load(pm: pluggy.PluginManager, name: str, load: Callable[[], object], dist: str, version: str,
          target: str = "") -> PluginProblem | None:
    """Import and register one plugin; on any mistake undo the registration and describe it."""
    distribution = f"{dist} {version}".strip()
    try:
        plugin = load()
    except ModuleNotFoundError as exc:
        module = target.partition(":")[0] or name
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            source = f"its entry point '{name} = {target}' names" if target else "it is"
            return PluginProblem(name, distribution, f"{source} module '{exc.name}', which is not installed")
        return PluginProblem(name, distribution, f"failed to import: {_one_line(exc)}", _where(exc))
    except Exception as exc:  # anything a plugin's import raises names the plugin, never a traceback
        return PluginProblem(name, distribution, f"failed to import: {_one_line(exc)}", _where(exc))
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:  # a hook whose arguments its specification does not have
        if pm.get_plugin(name) is not None:
            pm.unregister(name=name)
        match = re.search(r"for hook '(\w+)'", str(exc))
        hook = match.group(1) if match else "?"
        detail = str(exc).splitlines()[-1].strip()
        return PluginProblem(name, distribution, f"hook {hook}: {detail}", _source(getattr(plugin, hook, None)))
    except ValueError:  # the same module under a second entry-point name
        return PluginProblem(name, distribution, f"its module is already registered as plugin '{pm.get_name(plugin)}'")
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.has_spec():
            continue
        impl = next((i for i in caller.get_hookimpls() if i.plugin is plugin and not i.optionalhook), None)
        if impl is not None:
            pm.unregister(name=name)
            specs = [n for n in dir(hookspecs) if n.startswith("bench_")]
            close = difflib.get_close_matches(caller.name, specs, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; hooks: {', '.join(specs)}"
            return PluginProblem(name, distribution, f"it implements unknown hook '{caller.name}'{hint}",
                                 _source(impl.function))
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _where(exc: BaseException) -> str:
    """``file:line`` of the plugin code that raised ``exc`` (a syntax error's own line)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith("<") and f.filename not in _MACHINERY]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""


_MACHINERY = {__file__, importlib.__file__, md.__file__}
"""Files whose frames never locate a plugin's mistake."""


def _source(obj: object) -> str:
    """``file:line`` where a function (or class) is defined, '' when it cannot be found."""
    try:
        _, line = inspect.getsourcelines(obj)  # type: ignore[arg-type]
        return f"{inspect.getsourcefile(obj)}:{line}"  # type: ignore[arg-type]
    except (TypeError, OSError):
        return ""


def plugin_distribution(pm: pluggy.PluginManager, plugin: object) -> tuple[str, str]:
    """(distribution name, version) of a registered plugin; built-ins belong to ssl-bench."""
    name = pm.get_name(plugin)
    if isinstance(pm, BenchPluginManager) and name in pm.distributions:
        return pm.distributions[name]
    for p, dist in pm.list_plugin_distinfo():
        if p is plugin:
            return dist.project_name, dist.version
    return "ssl-bench", harness_version()


def harness_version() -> str:
    try:
        return md.version("ssl-bench")
    except md.PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class Entry:
    """One registered component and where it came from."""

    cls: type
    plugin: str
    distribution: str
    version: str


@dataclass
class Registry:
    """Components by kind and name, collected once from a plugin manager, and the plugins skipped."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)
    """Plugins skipped while loading or collecting (see :func:`collect`), each printable as one line."""

    def get(self, kind: str, name: str) -> type[Any]:
        """The class registered as ``name`` in ``kind`` (e.g. "methods"), or UnknownComponentError.

        ``"family:member"`` resolves through the class registered as ``"family:"`` and its
        ``variant(member)`` classmethod (``timm:resnet18``). When plugins were skipped, the error
        (a :class:`SkippedComponentError`) names the one that provides ``name``, or those that may.
        """
        entries = self.entries.get(kind, {})
        if name in entries:
            return entries[name].cls
        family, colon, member = name.partition(":")
        if colon and member and f"{family}:" in entries:
            family_cls: Any = entries[f"{family}:"].cls  # a family (e.g. timm:) makes its members
            cls: type[Any] = family_cls.variant(member)
            return cls
        if any(not p.provides or name in p.provides.get(kind, ()) for p in self.problems):
            raise SkippedComponentError(kind.rstrip("s"), name, entries, self.problems)
        raise UnknownComponentError(kind.rstrip("s"), name, entries)

    def entry(self, kind: str, name: str) -> Entry:
        """The registration record of ``name``; a family member shares its family's record."""
        self.get(kind, name)
        entries = self.entries[kind]
        return entries[name] if name in entries else entries[name.partition(":")[0] + ":"]

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries.get(kind, {}))


@dataclass
class _Staged:
    """What one plugin registered, before it joins the registry."""

    components: list[tuple[str, Any]] = field(default_factory=list)
    error: PluginError | None = None
    where: str = ""


def collect(pm: pluggy.PluginManager, *, strict: bool = True) -> Registry:
    """Call every registration hook of every plugin once and build the registry.

    Plugins join the registry whole, in registration order (built-ins first). A plugin whose hook
    raises, that registers a non-component, or a name an earlier plugin took, either raises
    (``strict``: :class:`DuplicateComponentError` naming both plugins, :class:`PluginError`) or is
    skipped whole and recorded in ``Registry.problems`` with what it would have provided. Problems the
    manager met while loading (:class:`BenchPluginManager`) are copied there in both modes.
    """
    registry = Registry({kind: {} for kind in COMPONENT_KINDS},
                        list(pm.problems) if isinstance(pm, BenchPluginManager) else [])
    staged: dict[str, _Staged] = {}
    for kind, base in COMPONENT_KINDS.items():
        for impl in getattr(pm.hook, f"bench_register_{kind}").get_hookimpls():
            stage = staged.setdefault(impl.plugin_name, _Staged())
            if stage.error is not None:
                continue

            def register(cls: Any, *, _kind: str = kind, _base: type = base, _stage: _Staged = stage,
                         _plugin: str = impl.plugin_name) -> None:
                _check_component(cls, _base, _kind, _plugin)
                _stage.components.append((_kind, cls))

            try:
                impl.function(register=register)
            except PluginError as exc:
                stage.error, stage.where = exc, _where(exc) or _source(impl.function)
            except Exception as exc:  # a plugin's bug while registering: its file and line, not a traceback
                stage.error = PluginError(f"its hook {impl.function.__name__} raised {_one_line(exc)}")
                stage.where = _where(exc) or _source(impl.function)
    for name, plugin in pm.list_name_plugin():
        if name in staged and plugin is not None:
            _join(registry, pm, name, plugin, staged[name], strict)
    return registry


def _join(registry: Registry, pm: pluggy.PluginManager, name: str, plugin: object, stage: _Staged,
          strict: bool) -> None:
    """Add one plugin's components to ``registry``, or raise / record why it cannot join."""
    dist, version = plugin_distribution(pm, plugin)
    error: BenchError | None = stage.error
    seen = set()
    for kind, cls in stage.components if error is None else ():
        known = registry.entries[kind].get(cls.name)
        if known is not None or (kind, cls.name) in seen:
            by = f"{known.plugin} ({known.distribution} {known.version})" if known else "itself, earlier"
            error = DuplicateComponentError(f"{kind[:-1].capitalize()} '{cls.name}' is registered twice: by {by} "
                                            f"and by {name} ({dist} {version})")
            stage.where = _source(cls)
            break
        seen.add((kind, cls.name))
    if error is None:
        for kind, cls in stage.components:
            registry.entries[kind][cls.name] = Entry(cls, name, dist, version)
        return
    if strict:
        raise error
    pm.unregister(name=name)  # nor do its event hooks run
    provides: dict[str, list[str]] = {}
    for kind, cls in stage.components:
        provides.setdefault(kind, []).append(cls.name)
    problem = PluginProblem(name, f"{dist} {version}".strip(), str(error), stage.where,
                            {k: tuple(v) for k, v in provides.items()})
    registry.problems.append(problem)
    if isinstance(pm, BenchPluginManager):  # a later collect(pm) no longer sees the plugin: keep its record
        pm.problems.append(problem)


def _check_component(cls: Any, base: type, kind: str, plugin: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"Plugin {plugin} registered {cls!r} as one of the {kind}, "
                          f"but it is not a {base.__name__} subclass")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"Plugin {plugin} registered {cls.__name__} without a `name`")


def plugin_report(pm: pluggy.PluginManager, registry: Registry) -> list[dict[str, Any]]:
    """What ``bench plugins`` prints: each plugin, its distribution, hooks and what it registers.

    A skipped plugin is a row too, with empty ``hooks`` and ``provides`` and a ``skipped`` reason.
    """
    rows = []
    skipped = {p.plugin: p for p in registry.problems}
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None or name in skipped:
            continue
        dist, version = plugin_distribution(pm, plugin)
        provides = {
            kind: sorted(n for n, e in entries.items() if e.plugin == name)
            for kind, entries in registry.entries.items()
        }
        rows.append({
            "name": name,
            "distribution": dist,
            "version": version,
            "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
            "provides": {k: v for k, v in provides.items() if v},
        })
    for problem in skipped.values():
        dist, _, version = problem.distribution.partition(" ")
        rows.append({"name": problem.plugin, "distribution": dist, "version": version, "hooks": [],
                     "provides": {}, "skipped": str(problem)})
    return rows


def warn_problems(registry: Registry) -> None:
    """Print each skipped plugin as one ``bench: warning:`` line on stderr (rank 0 only under torchrun)."""
    if os.environ.get("RANK", "0") != "0":
        return
    for problem in registry.problems:
        print(f"bench: warning: {problem}", file=sys.stderr)


def load_registry(*, load_entrypoints: bool | None = None, blocked: Iterable[str] = (),
                  warn: bool = True) -> tuple[pluggy.PluginManager, Registry]:
    """A plugin manager and its registry in one call (what the CLI uses).

    Broken third-party plugins are skipped (``collect(pm, strict=False)``); with ``warn`` each one is
    printed once to stderr (:func:`warn_problems`).
    """
    pm = make_plugin_manager(load_entrypoints=load_entrypoints, blocked=blocked)
    registry = collect(pm, strict=False)
    if warn:
        warn_problems(registry)
    return pm, registry
