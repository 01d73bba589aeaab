"""The code of README.md's "Writing a plugin" section runs, and every example plugin passes its checks.

Each ```python block of the section is executed as a module of its own and registered with a fresh
plugin manager beside the built-ins; every component the blocks register goes through the
conformance check of its kind, and a block's ``test_*`` functions (the README's plugin test) are
called with the resulting registry as ``bench_registry``.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from ssl_bench.harness.components import COMPONENT_KINDS, DataContext
from ssl_bench.harness.plugins import collect, make_plugin_manager
from ssl_bench.harness.testing import (
    check_augmentation,
    check_backbone,
    check_dataset,
    check_evaluator,
    check_method,
)
from tests.conftest import ROOT

SECTION = "## Writing a plugin"


def section() -> str:
    """The text of the section, up to the next second-level heading."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end == -1 else text[start:end]


BLOCKS = re.findall(r"```python\n(.*?)```", section(), flags=re.S)


def load_examples() -> tuple[list[types.ModuleType], object]:
    """Execute every block as a module (kept in sys.modules: pydantic resolves annotations there)."""
    pm = make_plugin_manager(load_entrypoints=False)
    modules = []
    for i, code in enumerate(BLOCKS):
        module = types.ModuleType(f"readme_example_{i}")
        sys.modules[module.__name__] = module
        exec(compile(code, f"README.md ({SECTION}, python block {i + 1})", "exec"), module.__dict__)
        modules.append(module)
        if any(name.startswith("bench_") for name in vars(module)):
            pm.register(module, name=module.__name__)
    return modules, collect(pm)


MODULES, REGISTRY = load_examples()
EXAMPLES = [(kind, name) for kind, entries in REGISTRY.entries.items()
            for name, entry in entries.items() if entry.plugin.startswith("readme_example_")]


def test_the_section_has_an_example_of_every_kind_and_covers_the_contracts():
    assert {kind for kind, _ in EXAMPLES} == set(COMPONENT_KINDS)
    text = section()
    for topic in ("Batch", "`views`", "`labels`", "`indices`", "IMAGENET_MEAN", "Devices", "seeds torch only",
                  "Python's `random` and numpy are not seeded", "Multi-crop", "kit.momentum", "ema_update",
                  "bench_registry", "entry point's name", "in percent", "`top1`", "sweepable", "py.typed",
                  "-p no:NAME", "load(split, ctx)", "features(images)"):
        assert topic in text, f"README {SECTION} says nothing of {topic}"


@pytest.mark.parametrize("kind, name", EXAMPLES)
def test_every_example_component_passes_its_conformance_check(kind, name, tmp_path: Path, one_thread):
    if kind == "methods":
        check_method(REGISTRY, name)
    elif kind == "datasets":
        check_dataset(REGISTRY, name, ctx=DataContext(root=tmp_path, cache_dir=tmp_path / "cache"))
    elif kind == "augmentations":
        check_augmentation(REGISTRY, name)
    elif kind == "backbones":
        check_backbone(REGISTRY, name)
    else:
        check_evaluator(REGISTRY, name)


def test_the_plugin_test_of_the_readme_passes(monkeypatch, tmp_path: Path, one_thread):
    monkeypatch.setenv("BENCH_DATA_ROOT", str(tmp_path))
    tests = [fn for module in MODULES for name, fn in vars(module).items()
             if name.startswith("test_") and callable(fn)]
    assert tests, "the README shows no plugin test"
    for fn in tests:
        fn(bench_registry=REGISTRY)
