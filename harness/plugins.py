"""The plugin manager and the typed registry built from it.

Built-in plugins are the modules in :data:`DEFAULT_PLUGINS`; third-party ones come from the
``bench.plugins`` entry-point group. Both are ordinary pluggy plugins. The registry asks every
plugin's registration hooks once and keys components by ``name``; two plugins registering one name
is a :class:`~ssl_bench.harness.errors.DuplicateComponentError` naming both.

Switches (environment):
    BENCH_DISABLE_PLUGIN_AUTOLOAD=1  load no entry points (``--no-plugins`` on the CLI).
    BENCH_LOAD_PLUGINS=a,b           load only these entry points.
    BENCH_TRACE_PLUGINS=1            print every hook call to stderr.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from ssl_bench.harness import hookspecs
from ssl_bench.harness.components import COMPONENT_KINDS
from ssl_bench.harness.errors import DuplicateComponentError, PluginError, UnknownComponentError

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
    "ssl_bench.plugins.datasets.shapes",
    "ssl_bench.plugins.datasets.digits",
    "ssl_bench.plugins.datasets.parquet",
    "ssl_bench.plugins.datasets.cifar",
    "ssl_bench.plugins.datasets.imagefolder",
    "ssl_bench.plugins.datasets.torchvision_sets",
    "ssl_bench.plugins.datasets.folder_sets",
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
    "ssl_bench.plugins.evaluators.knn",
    "ssl_bench.plugins.evaluators.linear",
    "ssl_bench.plugins.evaluators.finetune",
    "ssl_bench.plugins.evaluators.adversarial",
    "ssl_bench.plugins.evaluators.robustness",
    "ssl_bench.plugins.evaluators.gallery",
)


def make_plugin_manager(
    *, load_entrypoints: bool | None = None, blocked: Iterable[str] = (), builtins: bool = True
) -> pluggy.PluginManager:
    """Create a plugin manager with the built-in plugins and (unless disabled) the entry points.

    Args:
        load_entrypoints: load the ``bench.plugins`` entry points; None reads the environment.
        blocked: plugin names (module or entry-point names) not to load.
        builtins: register :data:`DEFAULT_PLUGINS`.
    """
    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    if builtins:
        for module_name in DEFAULT_PLUGINS:
            if pm.is_blocked(module_name):
                continue
            pm.register(importlib.import_module(module_name), name=module_name)
    if load_entrypoints is None:
        load_entrypoints = os.environ.get("BENCH_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0")
    if load_entrypoints:
        only = [n for n in os.environ.get("BENCH_LOAD_PLUGINS", "").split(",") if n]
        installed = md.entry_points(group=ENTRY_POINT_GROUP)
        unknown = sorted(set(only) - {ep.name for ep in installed})
        if unknown:
            names = ", ".join(sorted(ep.name for ep in installed)) or "none"
            raise PluginError(f"BENCH_LOAD_PLUGINS names {', '.join(unknown)}, which no installed distribution "
                              f"provides; installed plugins: {names}")
        for ep in installed:
            if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None or (only and ep.name not in only):
                continue
            try:
                pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=ep.name)
            except Exception as exc:  # a broken third-party install must name itself
                raise PluginError(f"Plugin '{ep.name}' ({ep.value}) failed to load: {exc}") from exc
    pm.check_pending()
    if os.environ.get("BENCH_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    return pm


def plugin_distribution(pm: pluggy.PluginManager, plugin: object) -> tuple[str, str]:
    """(distribution name, version) of a registered plugin; built-ins belong to ssl-bench."""
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
    """Components by kind and name, collected once from a plugin manager."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> type[Any]:
        """The class registered as ``name`` in ``kind`` (e.g. "methods"), or UnknownComponentError.

        ``"family:member"`` resolves through the class registered as ``"family:"`` and its
        ``variant(member)`` classmethod (``timm:resnet18``).
        """
        entries = self.entries.get(kind, {})
        if name in entries:
            return entries[name].cls
        family, colon, member = name.partition(":")
        if colon and member and f"{family}:" in entries:
            family_cls: Any = entries[f"{family}:"].cls  # a family (e.g. timm:) makes its members
            cls: type[Any] = family_cls.variant(member)
            return cls
        raise UnknownComponentError(kind.rstrip("s"), name, entries)

    def entry(self, kind: str, name: str) -> Entry:
        """The registration record of ``name``; a family member shares its family's record."""
        self.get(kind, name)
        entries = self.entries[kind]
        return entries[name] if name in entries else entries[name.partition(":")[0] + ":"]

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries.get(kind, {}))


def collect(pm: pluggy.PluginManager) -> Registry:
    """Call every registration hook of every plugin once and build the registry."""
    registry = Registry({kind: {} for kind in COMPONENT_KINDS})
    for kind, base in COMPONENT_KINDS.items():
        caller = getattr(pm.hook, f"bench_register_{kind}")
        for impl in caller.get_hookimpls():
            dist, version = plugin_distribution(pm, impl.plugin)

            def register(cls: Any, *, _kind: str = kind, _base: type = base, _plugin: str = impl.plugin_name,
                         _dist: str = dist, _version: str = version) -> None:
                _check_component(cls, _base, _kind, _plugin)
                known = registry.entries[_kind].get(cls.name)
                if known is not None:
                    raise DuplicateComponentError(
                        f"{_kind[:-1].capitalize()} '{cls.name}' is registered twice: by {known.plugin} "
                        f"({known.distribution} {known.version}) and by {_plugin} ({_dist} {_version})"
                    )
                registry.entries[_kind][cls.name] = Entry(cls, _plugin, _dist, _version)

            impl.function(register=register)
    return registry


def _check_component(cls: Any, base: type, kind: str, plugin: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"Plugin {plugin} registered {cls!r} as one of the {kind}, "
                          f"but it is not a {base.__name__} subclass")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"Plugin {plugin} registered {cls.__name__} without a `name`")


def plugin_report(pm: pluggy.PluginManager, registry: Registry) -> list[dict[str, Any]]:
    """What ``bench plugins`` prints: each plugin, its distribution, hooks and what it registers."""
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None:
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
    return rows


def load_registry(*, load_entrypoints: bool | None = None,
                  blocked: Iterable[str] = ()) -> tuple[pluggy.PluginManager, Registry]:
    """A plugin manager and its registry in one call (what the CLI uses)."""
    pm = make_plugin_manager(load_entrypoints=load_entrypoints, blocked=blocked)
    return pm, collect(pm)
