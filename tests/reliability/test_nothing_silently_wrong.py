"""Mistakes that used to pass without a word: an unknown plugin name, a half-written result file."""

from __future__ import annotations

import os

import pytest

from ssl_bench.harness.errors import PluginError
from ssl_bench.harness.plugins import make_plugin_manager
from ssl_bench.harness.record.atomic import atomic_write_text
from ssl_bench.harness.record.layout import RunFolder
from ssl_bench.harness.record.results import parquet_files


def test_an_unknown_name_in_bench_load_plugins_is_an_error_naming_it(monkeypatch):
    monkeypatch.setenv("BENCH_LOAD_PLUGINS", "no_such_plugin")
    monkeypatch.setenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", "0")
    with pytest.raises(PluginError, match="BENCH_LOAD_PLUGINS names no_such_plugin, which no installed"):
        make_plugin_manager()


def test_a_zero_length_result_file_is_missing_not_done(tmp_path):
    folder = RunFolder(tmp_path)
    folder.results_dir.mkdir()
    folder.result("half").write_bytes(b"")  # a kill or a full disk before any byte landed
    atomic_write_text(folder.result("whole"), "rows")
    assert not folder.has_result("half") and folder.has_result("whole") and not folder.has_result("absent")
    assert parquet_files([folder.results_dir]) == [folder.result("whole")]


def test_atomic_write_syncs_the_file_before_renaming_it(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    atomic_write_text(tmp_path / "a.txt", "x")
    assert synced and (tmp_path / "a.txt").read_text() == "x"
