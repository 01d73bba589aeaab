"""A failed job shows in its run's leaderboard as a failed row with the reason, until it succeeds."""

from __future__ import annotations

import json

import pytest

from ssl_bench.harness.errors import BenchError
from ssl_bench.harness.pipeline import runner
from ssl_bench.harness.pipeline.runner import execute, write_leaderboard
from ssl_bench.harness.plugins import collect, make_plugin_manager
from ssl_bench.harness.record.failures import failure_path, read_failures
from tests.reliability.test_run_summary import make_run

pytestmark = pytest.mark.slow  # whole (tiny) runs


def test_a_failed_pretraining_is_a_failed_row_with_its_reason_until_it_succeeds(tmp_path, monkeypatch, one_thread):
    registry = collect(make_plugin_manager(load_entrypoints=False))
    real = runner.ensure_pretrained

    def simclr_fails(run, job):
        if job.method.name == "simclr":
            raise BenchError("simclr: planted | failure")
        return real(run, job)

    monkeypatch.setattr(runner, "ensure_pretrained", simclr_fails)
    run = make_run(tmp_path, registry)
    assert execute(run) == 1
    text = write_leaderboard(run)
    section = text[text.index("## Failed jobs"):]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "Method" not in line]
    assert len(rows) == 1 and rows[0].startswith("| simclr | 0 | pretrain ")  # TINY's label is its name
    assert "simclr: planted \\| failure" in rows[0]  # escaped: the reason cannot add a column
    key = run.plan.pretrain_jobs[0].key if run.plan.pretrain_jobs[0].method.name == "simclr" else next(
        p.key for p in run.plan.pretrain_jobs if p.method.name == "simclr")
    record = json.loads(failure_path(run.folder.logs_dir, key).read_text())
    assert record["reason"] == "simclr: planted | failure" and record["log"].endswith(f"{key}.log")

    monkeypatch.setattr(runner, "ensure_pretrained", real)
    again = make_run(tmp_path, registry)
    assert execute(again) == 0
    assert read_failures(again.folder.logs_dir) == []
    assert "## Failed jobs" not in write_leaderboard(again)


def test_a_planted_failure_record_is_text_only(tmp_path, capsys):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.failed.json").write_text('{"label": {"__class__": "os.system"}, "reason": "x"}')
    (logs / "b.failed.json").write_bytes(b"\x80\x04cos\nsystem\n")  # a pickle, not JSON
    (logs / "c.failed.json").write_text(json.dumps({"label": "SimCLR", "seed": "0", "reason": "boom"}))
    found = read_failures(logs)
    assert [r["key"] for r in found] == ["c"] and found[0]["reason"] == "boom"
    err = capsys.readouterr().err
    assert "a.failed.json: skipped" in err and "b.failed.json: skipped" in err
