"""Per-component notes in the leaderboard's notes file (``[methods] byol = "..."``) and the committed findings."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from ssl_bench.harness.components import COMPONENT_KINDS
from ssl_bench.harness.errors import SpecError
from ssl_bench.harness.record.leaderboard import NOTE_KINDS, publish, read_notes, render
from tests.conftest import ROOT
from tests.harness.test_results_leaderboard import row

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FINDINGS = ROOT / "leaderboard" / "findings.toml"
NOTES = {"b": {"study": "Bigger is better."},
         "methods": {"swav": "Epsilon 0.03 learns faster.", "byol": "LARS helps.", "study": "not a study line"},
         "backbones": {"convnet_small": "Fast on CPUs."}}


def test_method_notes_come_last_one_paragraph_per_method_by_name():
    text = render([row("SimCLR", "simclr", 0, "top1", 70.0)], notes=NOTES)
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings == ["b", "Method notes", "Backbone notes"]
    methods = text[text.index("## Method notes"):text.index("## Backbone notes")]
    assert methods.index("**byol**: LARS helps.") < methods.index("**swav**: Epsilon 0.03 learns faster.")
    assert "**convnet_small**: Fast on CPUs." in text
    assert text.count("**Finding.**") == 1 and "**Finding.** Bigger is better." in text


def test_a_component_table_is_never_a_benchmarks_notes():
    rows = [{**row("SimCLR", "simclr", 0, "top1", 70.0), "benchmark": "methods"}]
    text = render(rows, notes=NOTES)
    assert "**Finding.**" not in text and "**study**: not a study line" in text


def test_no_component_tables_no_sections_and_no_rows_still_shows_them():
    assert " notes" not in render([row("SimCLR", "simclr", 0, "top1", 70.0)], notes={"b": {"study": "x"}})
    text = render([], notes=NOTES)
    assert "No results yet." in text and "## Method notes" in text


def test_publish_reads_method_notes_from_the_file_into_markdown_and_html(tmp_path):
    notes = tmp_path / "notes.toml"
    notes.write_text('[b]\nstudy = "Bigger is better."\n\n[methods]\nbyol = "LARS at lr 1.0 beat SGD."\n')
    md, page = tmp_path / "lb" / "README.md", tmp_path / "lb" / "index.html"
    text = publish([row("SimCLR", "simclr", 0, "top1", 70.0)], title="T", output=md, html=page, notes=notes,
                   figures=tmp_path / "figures")
    assert text.rstrip().endswith("**byol**: LARS at lr 1.0 beat SGD.")
    html = page.read_text()
    assert "<h2>Method notes</h2>" in html and "<p><b>byol</b>: LARS at lr 1.0 beat SGD.</p>" in html


def test_a_method_note_that_is_not_a_string_names_the_file_and_table(tmp_path):
    notes = tmp_path / "notes.toml"
    notes.write_text("[methods]\nbyol = 3\n")
    with pytest.raises(SpecError, match="notes.toml: methods"):
        read_notes(notes)


def test_note_kinds_are_the_registry_kinds():
    assert set(NOTE_KINDS) == set(COMPONENT_KINDS)


def _benchmark_names() -> set[str]:
    names = set()
    for path in (ROOT / "benchmarks").glob("*.toml"):
        with open(path, "rb") as f:
            names.add(tomllib.load(f).get("name", path.stem))
    return names


def test_committed_findings_name_benchmarks_and_registered_components():
    from ssl_bench.harness.plugins import collect, make_plugin_manager

    registry = collect(make_plugin_manager(load_entrypoints=False))
    found = read_notes(FINDINGS)
    for kind in NOTE_KINDS:
        unknown = set(found.get(kind, {})) - set(registry.names(kind))
        assert not unknown, f"[{kind}] of {FINDINGS.name} names unregistered {kind}: {sorted(unknown)}"
    studies = {k: v for k, v in found.items() if k not in NOTE_KINDS}
    assert set(studies) <= _benchmark_names() and all("study" in v for v in studies.values())
    assert found["methods"], "the measured numbers moved out of method docstrings live here"


def test_studies_are_named_not_numbered_in_the_committed_texts():
    files = [FINDINGS, ROOT / "leaderboard" / "README.md", *sorted((ROOT / "benchmarks").glob("*.toml"))]
    for path in files:
        assert not re.search(r"\bseed 00[0-4]", Path(path).read_text(), flags=re.I), path
