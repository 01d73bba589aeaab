from __future__ import annotations

import re

import pytest

from ssl_bench.harness.record.leaderboard import mean_std, render
from ssl_bench.harness.record.results import SCHEMA_VERSION, read_rows, result_path, write_rows


def row(label, method, seed, metric, value, evaluator="knn", key=None):
    return {
        "benchmark": "b", "job_key": key or f"{label}-{seed}-{evaluator}", "pretrain_key": f"p-{label}-{seed}",
        "method": method, "label": label, "backbone": "convnet_small", "pretrain_dataset": "shapes",
        "pretrain_epochs": 3, "pretrain_steps": 30 if method != "random_init" else 0, "pretrain_batch_size": 32,
        "pretrain_wall_s": 12.0, "pretrain_images_per_s": 800.0, "pretrain_final_loss": 1.0,
        "pretrain_epoch_losses": [2.0, 1.5, 1.0], "evaluator": evaluator, "evaluator_params": "{}",
        "dataset": "shapes", "label_fraction": 1.0, "seed": seed, "split": "test", "metric": metric,
        "value": value, "hparams": "{}", "trials": 0, "val_score": None, "eval_wall_s": 1.0, "device": "cpu",
        "harness_version": "0", "plugin_versions": "{}", "torch_version": "2", "git_sha": "", "host": "h",
        "timestamp": "t", "status": "ok", "method_params": "{}",
    }


def test_write_read_round_trip_and_no_temp_files(tmp_path):
    rows = [row("SimCLR", "simclr", 0, "top1", 70.0), row("SimCLR", "simclr", 0, "top5", 95.0)]
    path = result_path(tmp_path, "SimCLR-0-knn")
    write_rows(path, rows)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    back = read_rows([tmp_path])
    assert [(r["metric"], r["value"]) for r in back] == [("top1", 70.0), ("top5", 95.0)]
    assert back[0]["schema_version"] == SCHEMA_VERSION and back[0]["pretrain_epoch_losses"] == [2.0, 1.5, 1.0]


def test_copied_results_count_once(tmp_path):
    rows = [row("SimCLR", "simclr", 0, "top1", 70.0)]
    write_rows(tmp_path / "a" / "k.parquet", rows)
    write_rows(tmp_path / "b" / "k.parquet", rows)
    assert len(read_rows([tmp_path])) == 1


def test_mean_std():
    assert mean_std([70.0]) == "70.00"
    assert mean_std([70.0, 72.0]) == "71.00 ± 1.41"


def test_leaderboard_pivots_seeds_and_always_shows_baselines():
    rows = [row("SimCLR", "simclr", s, "top1", v) for s, v in [(0, 70.0), (1, 72.0)]]
    rows += [row("Random init", "random_init", 0, "top1", 30.0)]
    text = render(rows)
    lines = [l for l in text[text.index("### knn"):].splitlines() if l.startswith("|")]  # the table after the summary
    simclr = next(l for l in lines if "SimCLR" in l)
    assert "71.00 ± 1.41" in simclr and re.search(r"\|\s+2\s+\|", simclr)
    assert lines.index(simclr) < lines.index(next(l for l in lines if "Random init" in l))  # sorted by top1
    assert any("supervised (not run)" in l for l in lines)
    assert "### knn on shapes (all labels)" in text


def test_leaderboard_ignores_failed_rows():
    good, bad = row("A", "simclr", 0, "top1", 50.0), row("B", "simclr", 0, "top1", 99.0)
    bad["status"] = "failed"
    assert "99.00" not in render([good, bad])


def test_ci95_uses_student_t():
    from ssl_bench.harness.record.leaderboard import ci95

    assert ci95([70.0]) == "n=1" and ci95([70.0, 72.0]) == "n=2"  # too few seeds for an interval
    # n = 4: mean 71, std 1.1547, t(3) = 3.182 -> half width 3.182 * 1.1547 / 2 = 1.837
    assert ci95([70.0, 72.0, 70.0, 72.0]) == "[69.16, 72.84]"


def test_variants_of_one_label_are_separate_rows():
    rows = [row("SimCLR", "simclr", 0, "top1", 60.0), row("SimCLR", "simclr", 0, "top1", 70.0, key="b")]
    rows[1].update(pretrain_batch_size=64, pretrain_key="p-other")
    text = render(rows)
    assert "batch 32" in text and "batch 64" in text and "60.00" in text and "70.00" in text


def test_curve_metrics_get_their_own_table_not_columns():
    rows = [row("SimCLR", "simclr", 0, "top1", 80.0, evaluator="adversarial")]
    rows += [row("SimCLR", "simclr", 0, f"fgsm_eps{e}", v, evaluator="adversarial")
             for e, v in [(0, 80.0), (0.1, 40.0)]]
    text = render(rows)
    assert "fgsm: top-1 (%) by eps" in text and "eps 0.1" in text and "fgsm_eps" not in text


def test_publish_writes_markdown_html_figures_and_notes(tmp_path):
    pytest.importorskip("matplotlib")
    from ssl_bench.harness.record.leaderboard import publish

    rows = []
    for size, value in [(1000, 50.0), (2000, 55.0), (4000, 58.0)]:
        r = row("SimCLR", "simclr", 0, "top1", value, key=f"k{size}")
        r.update(pretrain_dataset=f"cifar10[{size}]", pretrain_key=f"p{size}")
        rows.append(r)
    notes = tmp_path / "notes.toml"
    notes.write_text('[b]\nstudy = "Bigger is better."\n"knn on shapes (all labels)" = "Ours agrees."\n')
    md, page = tmp_path / "lb" / "README.md", tmp_path / "lb" / "index.html"
    text = publish(rows, title="T", output=md, html=page, notes=notes)
    assert md.read_text() == text
    assert "**Finding.** Bigger is better." in text and "**Finding.** Ours agrees." in text
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert any("pretraining-set-size" in i for i in images) and any("pretraining-loss" in i for i in images)
    assert all((md.parent / i).is_file() for i in images)
    assert "Sensitivity to pretraining size" in text
    html_text = page.read_text()
    assert html_text.startswith("<!DOCTYPE html>") and "<table>" in html_text and all(i in html_text for i in images)


def test_bad_notes_file_names_the_file_and_key(tmp_path):
    from ssl_bench.harness.errors import SpecError
    from ssl_bench.harness.record.leaderboard import publish

    notes = tmp_path / "notes.toml"
    notes.write_text("[b]\nstudy = 3\n")
    with pytest.raises(SpecError, match="notes.toml: b"):
        publish([], title="T", notes=notes)


def test_loss_axis_goes_log_only_when_lines_span_two_decades():
    from ssl_bench.harness.record.plots import spans_decades

    assert spans_decades([0.5, 5.0, 400.0])  # BYOL, InfoNCE and counting losses on one figure
    assert not spans_decades([0.9, 5.0, 60.0])
    assert not spans_decades([-1.0, 400.0]) and not spans_decades([0.0, 5.0]) and not spans_decades([])


def test_rows_carry_the_machine_state_and_the_job_spec_and_old_files_read_with_every_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    fresh = row("SimCLR", "simclr", 0, "top1", 70.0) | {"pretrain_threads": 2, "pretrain_load_others": 1.5,
                                                          "pretrain_contended": True, "job_spec": '{"seed": 0}'}
    write_rows(tmp_path / "new" / "a.parquet", [fresh])
    old = pa.Table.from_pylist([row("SimCLR", "simclr", 1, "top1", 60.0) | {"schema_version": 2}])
    (tmp_path / "old").mkdir()
    pq.write_table(old, tmp_path / "old" / "b.parquet")  # a version-2 file: no machine state, no job spec
    back = {r["seed"]: r for r in read_rows([tmp_path])}
    assert back[0]["pretrain_contended"] is True and back[0]["pretrain_threads"] == 2 and back[0]["job_spec"]
    assert back[1]["pretrain_contended"] is None and back[1]["job_spec"] is None
    assert set(back[0]) == set(back[1])
    assert "(contended)" in render(list(back.values()))
