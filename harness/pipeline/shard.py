"""A deterministic share of a job plan, for Slurm array jobs and other fan-outs over machines.

``bench run FILE --shard i/n`` runs shard ``i`` (0-based) of ``n``. The unit of sharing is a
pretraining job together with every evaluation of its encoder (a pretraining sweep counts as one
job with all its cells, a run with its snapshots), so a shard never needs another shard's encoder.
Units are dealt round robin in the order of their sorted content keys: every machine that expands
the same benchmark file with the same profile computes the same shares, the shares differ in size by
at most one unit, and their union is the whole plan. Each shard writes one Parquet file per finished
evaluation, named by job key (``RunFolder.result``), so copying the ``results/`` folders of all
shards into one folder merges them.
"""

from __future__ import annotations

import re

from ssl_bench.harness.errors import UsageError
from ssl_bench.harness.pipeline.plan import Plan

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; anything else is a usage error (exit 2)."""
    match = _SHARD.fullmatch(text)
    if not match:
        raise UsageError(f"--shard {text!r}: expected INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4 "
                         "(in a Slurm array: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT with --array=0-3)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise UsageError(f"--shard {text!r}: INDEX must be in 0..COUNT-1 and COUNT at least 1 (shards are numbered "
                         f"from 0, so {count} shards are 0/{count} .. {max(count - 1, 0)}/{count})")
    return index, count


def shard_plan(plan: Plan, index: int, count: int) -> Plan:
    """The jobs of shard ``index`` of ``count``: whole pretraining jobs with their evaluations."""
    units = plan.units()
    mine = [units[key] for key in sorted(units)[index::count]]
    return Plan([j for u in mine for j in u.pretrain_jobs], [e for u in mine for e in u.eval_jobs])
