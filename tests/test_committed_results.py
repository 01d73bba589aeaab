"""The committed results folder reads in one call, with every column, in the tools researchers use.

Every file under leaderboard/results is written with the current schema (older files were rewritten
through the upgrade path, their values unchanged), so a reader that needs one schema across files
(polars raises on a missing column; pyarrow datasets and pandas silently drop it) sees them all.
"""

from __future__ import annotations

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from ssl_bench.harness.record.results import SCHEMA, SCHEMA_VERSION
from tests.conftest import ROOT

RESULTS = ROOT / "leaderboard" / "results"
FILES = sorted(RESULTS.rglob("*.parquet"))


def test_there_are_committed_results() -> None:
    assert len(FILES) > 100


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(RESULTS)))
def test_each_file_has_the_current_schema(path) -> None:  # noqa: ANN001
    assert pq.read_schema(path).remove_metadata().equals(SCHEMA.remove_metadata()), path
    assert set(pq.read_table(path, columns=["schema_version"]).column(0).to_pylist()) == {SCHEMA_VERSION}


def test_pyarrow_dataset_reads_every_column_of_every_file() -> None:
    table = ds.dataset(RESULTS, format="parquet").to_table()
    assert table.num_rows == sum(pq.read_metadata(f).num_rows for f in FILES)
    assert set(SCHEMA.names) <= set(table.column_names)
    assert table.column("pretrain_total_steps").null_count < table.num_rows  # the column holds values, not nulls


def test_polars_reads_the_folder_in_one_call() -> None:
    pl = pytest.importorskip("polars", reason="polars is in the test extra; this checks the files, not the harness")
    frame = pl.read_parquet(str(RESULTS / "**" / "*.parquet"))
    assert frame.height == sum(pq.read_metadata(f).num_rows for f in FILES)
    assert set(SCHEMA.names) <= set(frame.columns)
