"""A study opens with a summary table that reads at a glance (rank, best values bold, baselines apart, budget as
columns, what every row shares said once), detail tables drop what is the same in every row, detection rows get the
survey's frozen / fine-tuned layout and the online linear probe is never ranked as the offline one."""

from __future__ import annotations

import json
import re

from ssl_bench.harness.record.leaderboard import render
from ssl_bench.harness.record.report import to_html
from tests.harness.test_results_leaderboard import row


def cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def section_of(text: str, heading: str) -> str:
    """The text under ``heading`` (a line of its own) up to the next heading of any level."""
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    end = text.find("\n#", start)
    return text[start:] if end < 0 else text[start:end]


def grid(text: str) -> list[dict[str, str]]:
    """The first table in ``text`` as dicts keyed by its headers (the alignment line left out)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    head = cells(lines[0])
    return [dict(zip(head, cells(line))) for line in lines[2:]]


def probe_rows(label: str, method: str, knn: list[float], linear: list[float], **kw) -> list[dict]:
    rows = []
    for seed, (k, lin) in enumerate(zip(knn, linear)):
        for evaluator, value in (("knn", k), ("linear", lin)):
            r = row(label, method, seed, "top1", value, evaluator=evaluator, key=f"{label}-{seed}-{evaluator}-{kw}")
            rows.append(r | {"pretrain_key": f"p-{label}-{seed}-{kw}"} | kw)
    return rows


def study() -> list[dict]:
    return (probe_rows("SimCLR", "simclr", [60.0, 62.0, 64.0], [70.0, 71.0, 72.0])
            + probe_rows("BYOL", "byol", [65.0, 66.0, 67.0], [68.0, 69.0, 70.0])
            + probe_rows("MoCo", "moco_v2", [50.0], [75.0])
            + probe_rows("Random init", "random_init", [30.0], [35.0])
            + probe_rows("Supervised", "supervised", [90.0], [95.0]))


def test_the_summary_comes_first_and_ranks_the_methods_by_the_linear_probe():
    text = render(study())
    study_section = text[text.index("## b\n"):]
    assert study_section.split("\n### ")[1].startswith("Summary")  # before every detail table
    table = grid(section_of(text, "### Summary"))
    names = [r["Method"] for r in table]
    assert names == ["MoCo", "SimCLR", "BYOL", "**Baselines**", "Supervised", "Random init"]
    assert [r["Rank"] for r in table] == ["1", "2", "3", "", "", ""]
    assert {"kNN top-1", "Linear top-1"} <= set(table[0])


def test_methods_on_two_backbones_are_ranked_in_two_blocks_at_one_budget():
    rows = study() + probe_rows("MAE (ViT)", "mae", [20.0], [99.0], backbone="vit_tiny_cifar")
    table = grid(section_of(render(rows), "### Summary"))
    blocks = [r["Method"] for r in table if r["Method"].startswith("**") and r["Method"] != "**Baselines**"]
    assert len(blocks) == 2 and any("vit_tiny_cifar" in b for b in blocks)
    ranks = {r["Method"]: r["Rank"] for r in table}
    assert ranks["MAE (ViT)"] == "1" and ranks["MoCo"] == "1"  # each first of its own block, never ranked across


def test_summary_cells_show_the_interval_from_three_seeds_and_n_below():
    table = {r["Method"]: r for r in grid(section_of(render(study()), "### Summary"))}
    assert table["SimCLR"]["Linear top-1"] == "71.00 ± 2.48"  # t(2) 4.303 x std 1 / sqrt(3)
    assert table["SimCLR"]["kNN top-1"] == "62.00 ± 4.97"
    assert table["MoCo"]["Linear top-1"] == "**75.00 (n=1)**" and "±" not in table["MoCo"]["kNN top-1"]
    assert table["Random init"]["kNN top-1"] == "30.00 (n=1)"


def test_the_best_ssl_value_of_each_column_is_bold_and_baselines_never_are():
    table = grid(section_of(render(study()), "### Summary"))
    bold = {(r["Method"], h) for r in table for h, v in r.items() if v.startswith("**") and h != "Method"}
    assert bold == {("BYOL", "kNN top-1"), ("MoCo", "Linear top-1")}  # supervised (90 / 95) is higher, not bold


def test_columns_the_same_in_every_row_are_said_once_above_the_table():
    summary = section_of(render(study()), "### Summary")
    assert ("All rows: convnet_small, pretrained on shapes, 3 epochs, 30 steps, batch 32 "
            "(untrained encoders: no pretraining).") in summary
    headers = set(grid(summary)[0])
    assert headers == {"Method", "Rank", "kNN top-1", "Linear top-1", "Pretrain time"}  # a measurement stays


def test_budgets_are_columns_and_each_budget_is_ranked_on_its_own():
    rows = study() + probe_rows("SimCLR", "simclr", [80.0], [85.0], pretrain_epochs=12, pretrain_steps=90,
                                pretrain_wall_s=40.0)
    summary = section_of(render(rows), "### Summary")
    table = grid(summary)
    assert "Epochs" in table[0] and "Steps" in table[0] and "Pretrain time" in table[0]
    assert "All rows: convnet_small, pretrained on shapes, batch 32" in summary
    blocks = [r["Method"] for r in table if r["Rank"] == "" and r["Method"].startswith("**")]
    assert blocks == ["**3 ep, 30 steps**", "**12 ep, 90 steps**", "**Baselines**"]
    long = next(r for r in table if r["Epochs"] == "12")
    # alone at its budget: rank 1, and not bold (no other row of that budget to beat; 85 > 75 of the others)
    assert long["Rank"] == "1" and long["Steps"] == "90" and long["Linear top-1"] == "85.00 (n=1)"
    assert long["Pretrain time"] == "40 s"
    short = [r for r in table if r["Epochs"] == "3" and r["Rank"]]
    assert [r["Rank"] for r in short] == ["1", "2", "3"]  # 12 epochs (85.00) ranks apart, above none of them
    assert next(r for r in short if r["Method"] == "MoCo")["Linear top-1"] == "**75.00 (n=1)**"


def test_ties_share_a_rank():
    rows = (probe_rows("A", "simclr", [60.0], [70.0]) + probe_rows("B", "byol", [61.0], [70.0])
            + probe_rows("C", "moco_v2", [62.0], [69.0]))
    table = grid(section_of(render(rows), "### Summary"))
    assert [(r["Method"], r["Rank"]) for r in table[:3]] == [("A", "1"), ("B", "1"), ("C", "3")]


def test_the_summary_escapes_user_strings():
    hostile = "<b>x</b> | y"
    text = render(probe_rows(hostile, "simclr", [60.0], [70.0]) + probe_rows("BYOL", "byol", [61.0], [71.0]))
    summary = section_of(text, "### Summary")
    lines = [line for line in summary.splitlines() if line.startswith("|")]
    assert len({len(cells(line)) for line in lines}) == 1 and r"\<b>x\</b> \| y" in summary


def test_detail_tables_drop_columns_the_same_in_every_row():
    detail = section_of(render(study()), "### knn on shapes (all labels)")
    assert detail.strip().startswith("All rows: convnet_small, shapes, 3 ep (30 steps), batch 32, cpu")
    headers = set(grid(detail)[0])
    assert not headers & {"Backbone", "Pretraining", "Device"} and {"top1", "n", "top1 95% CI"} <= headers
    assert [r["Method"] for r in grid(detail)][-3:] == ["**Baselines**", "Supervised", "Random init"]


def test_a_column_that_differs_stays():
    rows = study()
    rows[0] = rows[0] | {"device": "cuda"}
    detail = section_of(render(rows), "### knn on shapes (all labels)")
    assert "Device" in grid(detail)[0] and "cpu" not in detail.split("\n|")[0]


def detection_rows() -> list[dict]:
    rows = []
    for label, method, frozen, tuned in [("SimCLR", "simclr", 30.0, 40.0), ("BYOL", "byol", 32.0, 38.0),
                                         ("Supervised", "supervised", 50.0, 55.0)]:
        for freeze, base in ((True, frozen), (False, tuned)):
            for dataset in ("voc07", "coco"):
                for metric, value in (("ap", base), ("ap50", base + 20), ("ap75", base + 5)):
                    r = row(label, method, 0, metric, value, evaluator="detection",
                            key=f"{label}-{freeze}-{dataset}")
                    rows.append(r | {"dataset": dataset, "pretrain_key": f"p-{label}",
                                     "evaluator_params": json.dumps({"freeze": freeze, "epochs": 12})})
    return rows


def test_detection_is_one_table_per_dataset_with_frozen_and_fine_tuned_groups():
    text = render(detection_rows())
    assert "### Summary" not in text  # no top-1 to summarise
    for dataset in ("voc07", "coco"):
        table = grid(section_of(text, f"### detection on {dataset} (all labels)"))
        assert list(table[0]) == ["Method", "Frozen backbone AP", "Frozen backbone AP50", "Frozen backbone AP75",
                                  "Fine-tuned AP", "Fine-tuned AP50", "Fine-tuned AP75", "n"]
        names = [r["Method"] for r in table]
        assert names == ["SimCLR", "BYOL", "**Baselines**", "Supervised", "random_init (not run)"]
        simclr, byol = table[0], table[1]
        assert simclr["Fine-tuned AP"] == "**40.00 (n=1)**" and byol["Fine-tuned AP"] == "38.00 (n=1)"
        assert byol["Frozen backbone AP"] == "**32.00 (n=1)**" and simclr["Frozen backbone AP50"] == "50.00 (n=1)"
        assert table[3]["Fine-tuned AP"] == "55.00 (n=1)"  # supervised: higher, not bold
        assert "freeze" not in "".join(r["Method"] for r in table)  # the setting is the column group, not the row


def test_detection_html_groups_the_columns():
    from ssl_bench.harness.record.leaderboard import build

    page = to_html(build(detection_rows()), "T")
    assert page.count('<th colspan="3" class="span">Frozen backbone</th>') == 2
    assert page.count('<th colspan="3" class="span">Fine-tuned</th>') == 2


def test_online_linear_is_a_protocol_of_its_own_never_ranked():
    rows = study()
    for label, method, value in (("SimCLR", "simclr", 99.0), ("BYOL", "byol", 10.0)):
        r = row(label, method, 0, "top1", value, evaluator="online_linear", key=f"{label}-online")
        rows.append(r | {"pretrain_key": f"p-{label}-0-{{}}"})
    text = render(rows)
    summary = section_of(text, "### Summary")
    table = grid(summary)
    assert "Online linear top-1" in table[0] and "Online linear" in summary.split("\n|")[0]
    assert [r["Method"] for r in table[:3]] == ["MoCo", "SimCLR", "BYOL"]  # still by the offline linear probe
    online = section_of(text, "### online_linear on shapes (all labels)")
    assert "not ranked with the offline linear probe" in online
    linear = grid(section_of(text, "### linear on shapes (all labels)"))
    assert "99.00" not in str(linear)


def test_a_table_of_untrained_encoders_says_so_once_and_drops_empty_columns():
    rows = [row("SimCLR (pretrained)", "pretrained", 0, "top1", 50.0) | {"pretrain_steps": 0},
            row("Random init", "random_init", 0, "top1", 30.0)]
    text = render(rows)
    detail = section_of(text, "### knn on shapes (all labels)")
    assert detail.strip().startswith("All rows: convnet_small, no pretraining, cpu.")
    assert set(grid(detail)[0]) == {"Method", "top1", "top1 95% CI", "n"}  # no time, no img/s: nothing trained
    summary = grid(section_of(text, "### Summary"))
    assert set(summary[0]) == {"Method", "Rank", "kNN top-1"}
