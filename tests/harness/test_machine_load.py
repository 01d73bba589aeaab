"""The load meter tells a quiet machine from a busy one, by other processes' CPU time."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import pytest

from ssl_bench.harness.scale import machine
from ssl_bench.harness.scale.machine import LoadMeter, busy_now, choose_threads


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_choose_threads_splits_the_cores_over_processes(monkeypatch):
    monkeypatch.setattr(machine, "cpu_count", lambda: 16)
    assert choose_threads() == 16 and choose_threads(processes=4) == 4 and choose_threads(processes=32) == 1
    assert choose_threads(requested=3, processes=4) == 3


@pytest.mark.parametrize(("machine_s", "own_s", "contended"), [(1.0, 1.0, False), (3.0, 1.0, True)])
def test_others_are_the_machine_minus_this_process(monkeypatch, machine_s, own_s, contended):
    ticks = iter([0, int(machine_s * 100)])
    own = iter([0.0, own_s])
    clock = iter([0.0, 1.0])
    monkeypatch.setattr(machine, "_machine_busy_ticks", lambda: next(ticks))
    monkeypatch.setattr(machine, "_own_cpu_seconds", lambda: next(own))
    monkeypatch.setattr(machine.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(machine.os, "sysconf", lambda name: 100)
    load = LoadMeter(threads=2).start().stop()
    assert load.others == pytest.approx(machine_s - own_s) and load.contended is contended and load.threads == 2


@pytest.mark.skipif(not machine.PROC_STAT.exists(), reason="needs /proc/stat")
def spin_until_stopped(started: Any) -> None:
    started.set()
    spin(60.0)  # stopped by the test long before


def test_another_busy_process_makes_the_timing_contended():
    ctx = mp.get_context("fork")  # Linux (/proc/stat): starts at once; the child only spins in Python
    started = ctx.Event()
    other = ctx.Process(target=spin_until_stopped, args=(started,), daemon=True)
    other.start()
    try:
        assert started.wait(10.0), "the spinning process did not start"
        load = busy_now(1.0)
    finally:
        other.terminate()
        other.join()
    assert load.contended and load.others > 0.5 and load.source == "proc-stat"


def test_proc_stat_parsing(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 50 1000 20 3 2 0 7 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    monkeypatch.setattr(machine, "PROC_STAT", stat)
    assert machine._machine_busy_ticks() == 100 + 5 + 50 + 3 + 2 + 0  # guest (7) is inside user already
