"""The leaderboard tells the truth: a row is one configuration, intervals need three seeds, one budget per
ranking, ``bench run`` shows its own plan, user strings are escaped, and one stray file breaks nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ssl_bench.harness.record.layout import RunFolder
from ssl_bench.harness.record.leaderboard import ci95, publish, render
from ssl_bench.harness.record.report import Heading, Table, Text, to_html, to_markdown
from ssl_bench.harness.record.results import SCHEMA, read_rows, result_path, write_rows
from tests.harness.test_results_leaderboard import row


def simclr(seed: int, value: float, temperature: float, **kw):
    r = row("SimCLR", "simclr", seed, "top1", value, key=f"simclr-t{temperature}-{seed}")
    return r | {"method_params": json.dumps({"temperature": temperature}),
                "pretrain_key": f"p-t{temperature}-{seed}"} | kw


def table_lines(text: str) -> list[str]:
    """The lines of the detail tables (a study's summary, its first table, is tested in test_leaderboard_summary.py)."""
    lines, summary = [], False
    for line in text.splitlines():
        if line.startswith("#"):
            summary = re.fullmatch(r"#+ Summary", line) is not None
        elif line.startswith("|") and not summary:
            lines.append(line)
    return lines


def cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def column(text: str, line: str, header: str) -> str:
    head = next(h for h in table_lines(text) if header in h)
    return cells(line)[cells(head).index(header)]


def test_two_configurations_under_one_label_are_two_rows_named_by_what_differs():
    rows = [simclr(0, 60.0, 0.2), simclr(0, 70.0, 0.5), row("Random init", "random_init", 0, "top1", 30.0)]
    text = render(rows)
    lines = table_lines(text)
    low = next(line for line in lines if "SimCLR (temperature=0.2)" in line)
    high = next(line for line in lines if "SimCLR (temperature=0.5)" in line)
    for line, value in ((low, "60.00"), (high, "70.00")):
        assert column(text, line, "top1") == value  # not pooled into 65.00 ± 7.07
        assert column(text, line, "n") == "1" and column(text, line, "top1 95% CI") == "n=1"
    assert not any("±" in line or "65.00" in line for line in lines)
    assert lines.index(high) < lines.index(low)


def test_seeds_of_one_configuration_pool_and_other_columns_do_not_split_them():
    rows = [simclr(s, v, 0.5, eval_wall_s=float(s), timestamp=f"t{s}", host=f"h{s}", git_sha=f"g{s}",
                   harness_version=f"0.{s}", hparams=json.dumps({"lr": 0.1 * (s + 1)}))
            for s, v in [(0, 70.0), (1, 72.0), (2, 74.0)]]
    text = render(rows)
    simclr_lines = [line for line in table_lines(text) if "SimCLR" in line]
    assert len(simclr_lines) == 1 and "(" not in cells(simclr_lines[0])[0]
    line = simclr_lines[0]
    assert column(text, line, "n") == "3" and column(text, line, "top1") == "72.00 ± 2.00"
    assert column(text, line, "top1 95% CI") == "[67.03, 76.97]"  # t(2) = 4.303, std 2, n 3


def test_evaluator_params_are_part_of_the_configuration():
    rows = [simclr(0, 60.0, 0.5, evaluator_params='{"k": 5}'), simclr(0, 62.0, 0.5, evaluator_params='{"k": 20}')]
    rows[1]["job_key"] = "other"
    text = render(rows)
    assert "SimCLR (knn k=20)" in text and "SimCLR (knn k=5)" in text


def test_interval_needs_three_seeds_and_is_clipped_to_percentages():
    assert ci95([]) == "" and ci95([70.0]) == "n=1" and ci95([70.0, 72.0]) == "n=2"
    assert ci95([99.0, 100.0, 95.0]) == "[91.43, 100.00]"
    assert ci95([1.0, 0.0, 5.0]) == "[0.00, 8.57]"
    two = render([simclr(s, v, 0.5) for s, v in [(0, 70.0), (1, 72.0)]])
    line = next(line for line in table_lines(two) if "SimCLR" in line)
    assert column(two, line, "top1") == "71.00 ± 1.41" and column(two, line, "top1 95% CI") == "n=2"


def budget_rows() -> list[dict]:
    """Pretext-tasks-like: three pretraining sizes, a random init recorded once per size, a 12-epoch SimCLR."""
    rows = []
    for size in (2500, 5000, 10000):
        r = row("Rotation", "rotnet", 0, "top1", 40.0 + size / 1000, key=f"rot{size}")
        rows.append(r | {"pretrain_dataset": f"cifar10[{size}]", "pretrain_key": f"prot{size}"})
        r = row("Random init", "random_init", 0, "top1", 30.0, key=f"ri{size}")
        rows.append(r | {"pretrain_dataset": f"cifar10[{size}]", "pretrain_key": f"pri{size}"})
    r = row("Rotation", "rotnet", 0, "top1", 55.0, key="rot-long")
    rows.append(r | {"pretrain_dataset": "cifar10[10000]", "pretrain_epochs": 12, "pretrain_steps": 90,
                     "pretrain_key": "prot-long"})
    return rows


def test_a_table_ranks_one_budget_and_random_init_appears_once_in_each():
    text = render(budget_rows())
    chunks = [chunk.split("\n\n") for chunk in text.split("#### ")[1:]]
    assert [chunk[0] for chunk in chunks] == [f"pretrained on cifar10[{size}], {budget}, batch 32" for size, budget in
                                              [(2500, "3 ep (30 steps)"), (5000, "3 ep (30 steps)"),
                                               (10000, "3 ep (30 steps)"), (10000, "12 ep (90 steps)")]]
    for title, shared, t in (chunk[:3] for chunk in chunks):
        lines = table_lines(t)
        assert sum("Random init" in line for line in lines) == 1
        assert sum("Rotation" in line for line in lines) == 1
        # one budget in the table: its Pretraining column holds one value, said once above it
        assert shared.startswith(f"All rows: convnet_small, {title.removeprefix('pretrained on ')},")
        assert "Pretraining" not in lines[0]
    assert text.count("### knn on shapes (all labels)") == 1


def test_the_supervised_baseline_with_its_held_out_rows_shares_the_table_of_its_budget():
    # supervised trains without the validation rows: fewer steps per epoch at the same epochs and batch
    sup = row("Supervised", "supervised", 0, "top1", 80.0, key="sup") | {"pretrain_steps": 24,
                                                                          "pretrain_total_steps": 24}
    text = render([simclr(0, 60.0, 0.5), sup, row("Random init", "random_init", 0, "top1", 30.0)])
    assert "####" not in text and "not run at this budget" not in text
    lines = table_lines(text.split("### ")[2])
    assert column(text.split("### ")[2], next(x for x in lines if "Supervised" in x), "Pretraining").endswith(
        "(24 steps), batch 32")


def test_one_budget_is_one_table_without_a_budget_heading():
    rows = [simclr(0, 60.0, 0.5), row("Random init", "random_init", 0, "top1", 30.0)]
    assert "####" not in render(rows)


def test_stale_rows_are_left_out_or_shown_apart():
    current, old = simclr(0, 70.0, 0.5), simclr(0, 12.0, 0.2)
    assert "12.00" in render([current, old])  # bench leaderboard: everything
    text = render([current, old], current_keys={current["job_key"]})
    assert "70.00" in text and "12.00" not in text and "left out" in text
    both = render([current, old], current_keys={current["job_key"]}, show_stale=True)
    stale = both.index("## Stale or from other files")
    assert both.index("70.00") < stale < both.index("12.00")


def test_benchmark_filter():
    a, b = simclr(0, 70.0, 0.5), simclr(0, 12.0, 0.5, benchmark="other", job_key="x")
    text = render([a, b], benchmarks=["b"])
    assert "70.00" in text and "12.00" not in text and "## other" not in text


def test_write_leaderboard_shows_only_the_plan_it_ran(tmp_path):
    from ssl_bench.harness.pipeline.runner import write_leaderboard

    folder = RunFolder(tmp_path)
    kept, gone = simclr(0, 70.0, 0.5), simclr(0, 12.0, 0.2)
    for r in (kept, gone):
        write_rows(folder.result(r["job_key"]), [r])
    run = SimpleNamespace(folder=folder, spec=SimpleNamespace(name="b"),
                          plan=SimpleNamespace(pretrain_jobs=[], eval_jobs=[SimpleNamespace(key=kept["job_key"])]))
    text = write_leaderboard(run)
    assert "70.00" in text and "12.00" not in text
    assert folder.leaderboard.read_text() == text and folder.result(gone["job_key"]).is_file()


HOSTILE = "<script>alert(1)</script> | x"


def raw_html(markdown: str) -> bool:
    """Whether Markdown holds an HTML tag that is not backslash-escaped."""
    return re.search(r"(?<!\\)<[a-z/]", markdown) is not None


def test_user_strings_are_escaped_in_markdown():
    r = simclr(0, 70.0, 0.5, label=HOSTILE, benchmark="evil\n# injected", dataset="d|e")
    text = render([r])
    assert not raw_html(text) and "\n# injected" not in text and "# injected" in text
    assert len({len(re.split(r"(?<!\\)\|", line)) for line in table_lines(text)}) == 1  # no column injected
    assert r"\<script>alert(1)\</script> \| x" in text


def test_markdown_escape_keeps_dataset_sizes_and_kills_links():
    from ssl_bench.harness.record.report import md_escape

    assert md_escape("cifar10[10000]") == "cifar10[10000]" and md_escape("mean_class_acc") == "mean_class_acc"
    assert md_escape("[x](javascript:alert(1))") == r"\[x\](javascript:alert(1))"
    assert md_escape("a\nb\r\nc") == "a b c" and md_escape("*a* `b`") == r"\*a\* \`b\`"


def test_user_strings_are_escaped_in_html():
    from ssl_bench.harness.record.report import md_escape

    blocks = [Heading(2, HOSTILE), Text(f"**Finding.** {md_escape(HOSTILE)}"), Table(["Method"], [[HOSTILE]])]
    page = to_html(blocks, HOSTILE)
    assert "<script>" not in page and page.count("&lt;script&gt;") == 4
    assert "<p class=\"note\"><b>Finding.</b> &lt;script&gt;alert(1)&lt;/script&gt; | x</p>" in page
    assert not raw_html(to_markdown(blocks))


def test_notes_cannot_inject_html_or_lines():
    text = render([simclr(0, 70.0, 0.5)], notes={"b": {"study": "Good <img src=x> `a<b` \\`<i>`\n# heading"}})
    assert not raw_html(text.replace("`a<b`", "")) and "`a<b`" in text and "\n# heading" not in text


def write_table(path: Path, columns: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def test_a_file_of_another_schema_is_skipped_with_one_line(tmp_path, capsys):
    good = simclr(0, 70.0, 0.5)
    write_rows(result_path(tmp_path, good["job_key"]), [good])
    write_table(tmp_path / "other.parquet", {"job_key": ["k"], "value": [1.0]})
    text_value = {k: [v] for k, v in simclr(1, 0.0, 0.5).items()} | {"value": ["70.0"], "schema_version": [2]}
    write_table(tmp_path / "strings.parquet", text_value)
    rows = read_rows([tmp_path])
    assert [r["value"] for r in rows] == [70.0]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    other = next(line for line in err if "other.parquet" in line)
    assert "missing columns: schema_version, benchmark" in other and "label" in other
    strings = next(line for line in err if "strings.parquet" in line)
    assert "value is string, not number" in strings
    assert "70.00" in render(rows)


def test_an_older_schema_version_is_upgraded_on_read(tmp_path):
    old = {k: [v] for k, v in simclr(0, 70.0, 0.5).items() if k != "pretrain_total_steps"}
    write_table(tmp_path / "v1.parquet", old | {"schema_version": [1]})
    new = simclr(1, 72.0, 0.5)
    write_rows(result_path(tmp_path, new["job_key"]), [new])
    rows = read_rows([tmp_path])
    assert all(set(r) == set(SCHEMA.names) for r in rows)
    v1 = next(r for r in rows if r["schema_version"] == 1)
    assert v1["pretrain_total_steps"] is None and v1["value"] == 70.0
    line = next(line for line in table_lines(render(rows)) if "SimCLR" in line)
    assert "71.00 ± 1.41" in line  # the two versions' rows are one configuration


def test_publish_passes_the_filters(tmp_path):
    current, old = simclr(0, 70.0, 0.5), simclr(0, 12.0, 0.2)
    text = publish([current, old], title="T", output=tmp_path / "README.md", current_keys={current["job_key"]},
                   show_stale=True, benchmarks=["b"])
    assert "## Stale or from other files" in text and (tmp_path / "README.md").read_text() == text


def test_plot_labels_are_not_mathtext():
    from ssl_bench.harness.record.plots import plain

    assert plain("cost $5$ and _x") == r"cost \$5\$ and _x" and plain("_nolegend_") == " _nolegend_"


@pytest.mark.parametrize("label", ["SimCLR", HOSTILE])
def test_html_page_has_the_table(tmp_path, label):
    page = tmp_path / "index.html"
    publish([simclr(0, 70.0, 0.5, label=label)], title="T", html=page)
    assert "<script>" not in page.read_text() and "70.00" in page.read_text()


def test_image_alt_and_path_cannot_break_the_image():
    from ssl_bench.harness.record.report import Image

    assert to_markdown([Image("figures/a b.png", "x]y (1)")]) == "![x\\]y (1)](figures/a%20b.png)\n"
    assert to_markdown([Image("f.png", "knn on cifar10[10000]")]) == "![knn on cifar10[10000]](f.png)\n"


def test_a_file_that_is_not_parquet_is_skipped_with_one_line(tmp_path, capsys):
    good = simclr(0, 70.0, 0.5)
    write_rows(result_path(tmp_path, good["job_key"]), [good])
    (tmp_path / "broken.parquet").write_text("not parquet")
    assert [r["value"] for r in read_rows([tmp_path])] == [70.0]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.parquet: skipped, not a readable Parquet file" in err[0]


def test_untrained_encoders_of_other_pretraining_data_get_a_table_of_their_own():
    rows = [simclr(0, 60.0, 0.5)]  # pretrained on shapes
    for data, value in (("shapes", 30.0), ("digits", 20.0)):
        r = row("Random init", "random_init", 0, "top1", value, key=f"ri-{data}")
        rows.append(r | {"pretrain_dataset": data, "pretrain_key": f"pri-{data}"})
    text = render(rows)
    first, second = text.split("#### ")[1:]
    assert first.startswith("pretrained on shapes") and "30.00" in first and "20.00" not in first
    assert second.startswith("untrained encoders") and "20.00" in second and "60.00" not in second
