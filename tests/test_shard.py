"""``bench run --shard i/n``: deterministic shares of the plan whose merged results make the same leaderboard."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from ssl_bench.harness.errors import UsageError
from ssl_bench.harness.pipeline.plan import make_plan
from ssl_bench.harness.pipeline.shard import parse_shard, shard_plan
from ssl_bench.harness.pipeline.specs import load_benchmark
from tests.conftest import TINY, bench_cmd

pytestmark = pytest.mark.slow  # end to end: the CLI, whole runs, several processes

SEEDS = TINY.replace("seeds = [0]", "seeds = [0, 1]")


def bench(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(bench_cmd(*args), capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert proc.returncode == 0, f"bench {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_parse_shard():
    assert parse_shard("0/1") == (0, 1) and parse_shard("3/4") == (3, 4) and parse_shard(" 1 / 2 ") == (1, 2)
    for bad in ("4/4", "1/0", "-1/2", "1", "a/b", "1/2/3", ""):
        with pytest.raises(UsageError, match="--shard"):
            parse_shard(bad)


def test_shards_partition_the_plan_and_keep_evaluations_with_their_encoder(write_toml, bench_registry):
    text = SEEDS + '\n[[methods]]\nname = "simclr"\nlabel = "SimCLR t0.2"\nparams = { temperature = 0.2 }\n'
    spec = load_benchmark(write_toml(text), None, bench_registry)
    plan = make_plan(spec, bench_registry)
    assert len(plan.pretrain_jobs) == 6
    for n in (1, 2, 4, 7):
        shards = [shard_plan(plan, i, n) for i in range(n)]
        pre = [j.key for s in shards for j in s.pretrain_jobs]
        evals = [e.key for s in shards for e in s.eval_jobs]
        assert sorted(pre) == sorted(j.key for j in plan.pretrain_jobs)  # each job in exactly one shard
        assert sorted(evals) == sorted(e.key for e in plan.eval_jobs)
        assert max(len(s.pretrain_jobs) for s in shards) - min(len(s.pretrain_jobs) for s in shards) <= 1
        for s in shards:
            assert {e.pretrain.key for e in s.eval_jobs} <= {j.key for j in s.pretrain_jobs}
    # the same file expands to the same shares (another machine of the array), whatever the job order
    again = make_plan(load_benchmark(write_toml(text), None, bench_registry), bench_registry)
    def keys(p, i=1):
        return [j.key for j in shard_plan(p, i, 4).pretrain_jobs]

    assert keys(again) == keys(plan)
    reordered = type(plan)(list(reversed(plan.pretrain_jobs)), list(reversed(plan.eval_jobs)))
    assert set(keys(reordered)) == set(keys(plan))


def without_timings(board: str) -> str:
    """The leaderboard with its wall-clock columns blanked (they differ between any two runs)."""
    lines, drop = [], set()
    for line in board.splitlines():
        if line.startswith("| Method"):
            cells = line.split("|")
            drop = {i for i, c in enumerate(cells) if c.strip() in ("Pretrain time", "img/s")}
        if line.startswith("|"):
            line = "|".join("" if i in drop else c for i, c in enumerate(line.split("|")))
        lines.append(re.sub(r"\s+", " ", line))
    return "\n".join(lines).strip()


def test_merged_shards_make_the_single_machine_leaderboard(tmp_path, write_toml, cli_env):
    path = write_toml(SEEDS)
    single = tmp_path / "single"
    bench("run", str(path), "--out", str(single), env=cli_env)
    merged = tmp_path / "merged"
    merged.mkdir()
    counts = []
    for i in range(2):
        out = tmp_path / f"shard{i}"
        dry = bench("run", str(path), "--out", str(out), "--shard", f"{i}/2", "--dry-run", env=cli_env).stdout
        counts.append(dry.count("[todo] pretrain"))
        bench("run", str(path), "--out", str(out), "--shard", f"{i}/2", env=cli_env)
        for f in (out / "results").glob("*.parquet"):
            shutil.copy(f, merged)
    assert counts == [2, 2]  # 2 methods x 2 seeds, dealt round robin
    assert sorted(p.name for p in merged.iterdir()) == sorted(p.name for p in (single / "results").iterdir())
    board = bench("leaderboard", str(merged), "--title", "Leaderboard: tiny", env=cli_env).stdout
    assert "± " in board  # both seeds of each method
    assert without_timings(board) == without_timings((single / "leaderboard.md").read_text())


def test_bad_shard_exits_2_with_one_clear_line(write_toml, cli_env):
    proc = bench("run", str(write_toml(TINY)), "--shard", "2/2", env=cli_env, check=False)
    assert proc.returncode == 2 and "--shard '2/2'" in proc.stderr and "Traceback" not in proc.stderr
