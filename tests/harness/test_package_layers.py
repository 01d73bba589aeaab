"""The layout of ssl_bench.harness is a stack of stages, and no import runs back up it.

    front     __init__ (public API), cli, __main__, testing, pytest_plugin   may import anything below
    pipeline  specs, plan, runner, encoders, train, sweep, ...  |  kit  the plugin author's toolkit
    contract  components, data, hookspecs, plugins
    record    results, layout, leaderboard, ...  |  scale  distributed, launch, storage
    errors

A layer imports only from layers below it (and itself); the pipeline never imports the kit (built-in
plugins do), and nothing in the harness imports the built-in plugins. Imports under ``TYPE_CHECKING``
are annotations, not arrows, and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "harness"
CONTRACT = {"components", "data", "hookspecs", "plugins"}
FRONT = {"__init__", "__main__", "cli", "testing", "pytest_plugin"}
BELOW = {
    "errors": set(),
    "record": {"errors"},
    "scale": {"errors"},
    "contract": {"errors", "record", "scale"},
    "kit": {"errors", "record", "scale", "contract"},
    "pipeline": {"errors", "record", "scale", "contract"},
}


def layer_of(module: str) -> str:
    """The layer of a dotted module below ssl_bench.harness (e.g. 'pipeline.plan' -> 'pipeline')."""
    head = module.split(".")[0]
    if head in BELOW:
        return head
    if head in CONTRACT:
        return "contract"
    if head in FRONT or head == "":
        return "front"
    raise AssertionError(f"harness module '{module}' is in no layer: add it to the table above")


def runtime_imports(path: Path) -> list[str]:
    """The modules ``path`` imports at run time (skipping ``if TYPE_CHECKING:`` blocks)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    names = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def harness_modules() -> dict[str, Path]:
    out = {}
    for path in HARNESS.rglob("*.py"):
        rel = path.relative_to(HARNESS).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"] if rel.name == "__init__" else list(rel.parts)
        out[".".join(parts)] = path
    return out


def test_no_import_runs_back_up_a_layer():
    offences = []
    for module, path in harness_modules().items():
        mine = layer_of(module)
        for name in runtime_imports(path):
            if name.startswith(("plugins", "ssl_bench.plugins")):
                offences.append(f"{module} imports the built-in plugin {name}")
            if not name.startswith("ssl_bench.harness."):
                continue
            theirs = layer_of(name.removeprefix("ssl_bench.harness."))
            if theirs != mine and mine != "front" and theirs not in BELOW[mine]:
                offences.append(f"{module} ({mine}) imports {name} ({theirs})")
    assert not offences, "\n".join(offences)


def test_every_harness_module_is_in_a_layer():
    for module in harness_modules():
        layer_of(module)


def test_built_in_plugins_import_only_the_public_api_and_the_kit():
    """Plugins use ``ssl_bench.harness`` (the contract) and ``ssl_bench.harness.kit``, nothing internal."""
    offences = []
    for path in (ROOT / "plugins").rglob("*.py"):
        for name in runtime_imports(path):
            if name.startswith("ssl_bench.harness") and name != "ssl_bench.harness" \
                    and not name.startswith("ssl_bench.harness.kit"):
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offences, "\n".join(offences)
