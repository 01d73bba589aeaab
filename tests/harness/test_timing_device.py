"""Every timing names the machine it was measured on: one host name (``vm``) and one core count have stood for
CPUs of 4x different speed, so a time without its device is not comparable with another."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ssl_bench.harness.record.leaderboard import render
from ssl_bench.harness.record.pooling import timing_mark
from ssl_bench.harness.record.report import Table, Text
from ssl_bench.harness.record.results import read_rows, write_rows
from ssl_bench.harness.record.summary import summary
from ssl_bench.harness.scale import machine
from tests.harness.test_results_leaderboard import row

AMD, XEON = "AMD EPYC x2 (AVX2)", "Intel(R) Xeon(R) Platinum 8480+ x2 (AVX512)"


def test_the_cpu_is_named_by_model_cores_and_vector_unit(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD   EPYC\nflags\t: avx2\n")
    real = machine.Path
    monkeypatch.setattr(machine, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real(p))
    monkeypatch.setattr(machine, "cpu_count", lambda: 2)
    capability = torch.backends.cpu.get_cpu_capability()
    assert machine.device_name(torch.device("cpu")) == f"AMD EPYC x2 ({capability})"


def test_x86_family_and_model_tell_apart_cpus_that_share_a_model_name(monkeypatch, tmp_path):
    block = "processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\nmodel\t\t: {m}\nmodel name\t: AMD EPYC\n"
    names = []
    for model in (1, 49):
        cpuinfo = tmp_path / f"cpuinfo{model}"
        # two processors: the first one's numbers are read, the second's (a different model) are not
        cpuinfo.write_text(block.format(n=0, m=model) + "\n" + block.format(n=1, m=99))
        monkeypatch.setattr(machine, "Path", lambda p, f=cpuinfo: f)
        names.append(machine.processor_model())
    assert names == ["AMD EPYC (family 23, model 1)", "AMD EPYC (family 23, model 49)"]


def test_without_cpuinfo_the_platform_names_the_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(machine, "Path", lambda p: tmp_path / "absent")
    monkeypatch.setattr(machine.platform, "processor", lambda: "arm")
    assert machine.processor_model() == "arm"


def trained(seed: int, device: str | None, label: str = "SimCLR", evaluator: str = "knn") -> dict:
    return row(label, label.lower(), seed, "top1", 60.0 + seed, evaluator=evaluator) | {"pretrain_device": device}


def test_a_row_keeps_its_device_and_an_older_file_reads_it_as_none(tmp_path):
    write_rows(tmp_path / "new.parquet", [trained(0, AMD)])
    old = pa.Table.from_pylist([row("SimCLR", "simclr", 1, "top1", 61.0) | {"schema_version": 4}])
    pq.write_table(old, tmp_path / "old.parquet")  # schema 4: no pretrain_device
    back = {r["seed"]: r for r in read_rows([tmp_path])}
    assert back[0]["pretrain_device"] == AMD and back[1]["pretrain_device"] is None


def test_seeds_timed_on_two_devices_are_marked_and_one_device_is_not():
    assert timing_mark([trained(0, AMD), trained(1, XEON)], "12 s") == "12 s (mixed devices)"
    assert timing_mark([trained(0, AMD), trained(1, AMD), trained(2, None)], "12 s") == "12 s"
    busy = trained(0, AMD) | {"pretrain_contended": True}
    assert timing_mark([busy, trained(1, XEON)], "12 s") == "12 s (contended, mixed devices)"


def blocks_text(rows: list[dict]) -> tuple[str, Table]:
    blocks = summary(rows)
    table = next(b for b in blocks if isinstance(b, Table))
    return " ".join(b.text for b in blocks if isinstance(b, Text)), table


def test_the_summary_says_one_device_once_and_shows_a_column_where_they_differ():
    same = [trained(s, AMD, label) for s in range(3) for label in ("SimCLR", "BYOL")]
    text, table = blocks_text(same)
    assert f"timed on {AMD}" in text and "Timed on" not in table.headers
    differ = [trained(s, AMD) for s in range(3)] + [trained(s, XEON, "BYOL") for s in range(3)]
    text, table = blocks_text(differ)
    assert "timed on" not in text and "Timed on" in table.headers
    cells = {r[0]: r[table.headers.index("Timed on")] for r in table.rows}
    assert cells["SimCLR"] == AMD and cells["BYOL"] == XEON


def test_rows_that_predate_the_device_say_nothing_about_it():
    text, table = blocks_text([trained(s, None, label) for s in range(3) for label in ("SimCLR", "BYOL")])
    assert "timed on" not in text and "Timed on" not in table.headers
    mixed = [trained(s, None) for s in range(3)] + [trained(s, AMD, "BYOL") for s in range(3)]
    _, table = blocks_text(mixed)
    assert {r[table.headers.index("Timed on")] for r in table.rows} - {""} == {"not recorded", AMD}  # "" not run


def test_the_detail_table_names_the_device_the_encoders_were_timed_on():
    page = render([trained(s, AMD) for s in range(3)] + [trained(s, XEON, "BYOL") for s in range(3)])
    assert AMD in page and XEON in page and "(mixed devices)" not in page
    assert "(mixed devices)" in render([trained(0, AMD), trained(1, XEON), trained(2, AMD)])
