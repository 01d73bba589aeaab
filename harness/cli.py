"""``bench``: a thin command line over the harness.

    bench run FILE [--profile NAME] [--out DIR] [--data-root DIR] [--device auto|cpu|cuda] [--dry-run]
                   [--shard I/N] [--nproc N] [--sync-bn]
    bench worker FILE [--storage URL|PATH] [--out DIR] [--profile NAME] [--heartbeat S] [--stale-after S]
    bench validate FILE [--profile NAME]
    bench list [methods|datasets|augmentations|backbones|evaluators]
    bench plugins
    bench schema
    bench leaderboard RESULTS_DIR... [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from ssl_bench.harness.components import COMPONENT_KINDS, DataContext
from ssl_bench.harness.errors import BenchError, UsageError
from ssl_bench.harness.pipeline.plan import Plan, make_plan
from ssl_bench.harness.pipeline.shard import parse_shard, shard_plan
from ssl_bench.harness.pipeline.specs import BenchmarkSpec, load_benchmark
from ssl_bench.harness.plugins import Registry, load_registry, make_plugin_manager, plugin_report
from ssl_bench.harness.record.layout import RunFolder
from ssl_bench.harness.record.leaderboard import publish
from ssl_bench.harness.record.results import read_rows
from ssl_bench.harness.scale.distributed import is_main

if TYPE_CHECKING:
    import torch

    from ssl_bench.harness.pipeline.runner import Run


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="Benchmark self-supervised learning methods.")
    p.add_argument("--no-plugins", action="store_true", help="load no third-party plugins (entry points)")
    p.add_argument("-p", dest="blocked", action="append", default=[], metavar="no:NAME",
                   help="block a plugin by name, e.g. -p no:ssl_bench.plugins.methods.simclr")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="pretrain, evaluate, record results and regenerate the leaderboard")
    run.add_argument("file", type=Path)
    run.add_argument("--profile", help="apply the file's [profiles.NAME] overrides")
    run.add_argument("--out", type=Path, help="output folder (default: runs/<benchmark name>)")
    run.add_argument("--data-root", type=Path, help="dataset root (default: $BENCH_DATA_ROOT or ./data)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    run.add_argument("--dry-run", action="store_true", help="print the job plan and exit")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bars (default: when stderr is a terminal)")
    run.add_argument("--shard", metavar="I/N", help="run only shard I (0-based) of N of the job plan (Slurm arrays)")
    run.add_argument("--nproc", type=int, metavar="N", help="pretrain with N processes (DistributedDataParallel "
                     "through torchrun; one per GPU on CUDA)")
    run.add_argument("--sync-bn", action="store_true", help="with several processes, synchronise batch norm "
                     "statistics over the global batch (SyncBatchNorm, CUDA only; same as BENCH_SYNC_BN=1)")

    wk = sub.add_parser("worker", help="take jobs from a queue in a shared Optuna storage until none are left")
    wk.add_argument("file", type=Path)
    wk.add_argument("--storage", help="postgresql://user@host/db (or any SQLAlchemy URL), or a journal file path "
                    "(default: <out>/optuna.journal)")
    wk.add_argument("--profile", help="apply the file's [profiles.NAME] overrides")
    wk.add_argument("--out", type=Path, help="output folder (default: runs/<benchmark name>)")
    wk.add_argument("--data-root", type=Path, help="dataset root (default: $BENCH_DATA_ROOT or ./data)")
    wk.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    wk.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bars (default: when stderr is a terminal)")
    wk.add_argument("--heartbeat", type=float, default=30.0, metavar="S",
                    help="seconds between heartbeats of a running job (default: 30)")
    wk.add_argument("--stale-after", type=float, default=300.0, metavar="S",
                    help="a job without a heartbeat for this long is retried by another worker (default: 300)")

    val = sub.add_parser("validate", help="check a benchmark file against the registry without running it")
    val.add_argument("file", type=Path)
    val.add_argument("--profile")

    ls = sub.add_parser("list", help="list registered components")
    ls.add_argument("kind", nargs="?", choices=sorted(COMPONENT_KINDS))
    sub.add_parser("plugins", help="JSON report of loaded plugins and what they register")
    sub.add_parser("schema", help="JSON schema of a benchmark file, with every component's params")

    lb = sub.add_parser("leaderboard", help="regenerate the leaderboard from Parquet results")
    lb.add_argument("results", type=Path, nargs="+", help="results folders or files")
    lb.add_argument("--output", "-o", type=Path, help="write the markdown here as well as to stdout")
    lb.add_argument("--title", default="Leaderboard")
    lb.add_argument("--html", type=Path, help="also write one static HTML page here")
    lb.add_argument("--notes", type=Path,
                    help="TOML of findings lines: [benchmark] study = '...', '<table heading>' = '...'")
    lb.add_argument("--figures", type=Path, help="folder for the figures (default: figures/ beside the output)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    try:
        return _dispatch(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        code: int = exc.exit_code
        return code
    except KeyboardInterrupt:
        print("bench: interrupted; finished jobs are kept, rerun to resume", file=sys.stderr)
        return 130


def _registry(args: argparse.Namespace) -> tuple[pluggy.PluginManager, Registry]:
    blocked = [b.removeprefix("no:") for b in args.blocked]
    loaded: tuple[pluggy.PluginManager, Registry] = load_registry(
        load_entrypoints=False if args.no_plugins else None, blocked=blocked)
    return loaded


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "leaderboard":
        print(publish(read_rows(args.results), title=args.title, output=args.output, html=args.html,
                      notes=args.notes, figures=args.figures))
        return 0
    pm, registry = _registry(args)
    if args.command == "list":
        for kind in [args.kind] if args.kind else sorted(COMPONENT_KINDS):
            print(f"{kind}:")
            for name in registry.names(kind):
                entry = registry.entry(kind, name)
                doc = (entry.cls.__doc__ or "").strip().splitlines()
                print(f"  {name:<18} {doc[0] if doc else ''}  [{entry.distribution} {entry.version}]")
        return 0
    if args.command == "plugins":
        print(json.dumps(plugin_report(pm, registry), indent=2))
        return 0
    if args.command == "schema":
        print(json.dumps(_schema(registry), indent=2))
        return 0
    shard = parse_shard(args.shard) if getattr(args, "shard", None) else None
    spec = load_benchmark(args.file, args.profile, registry)
    plan = make_plan(spec, registry, args.file.name)
    if shard:
        plan = shard_plan(plan, *shard)
    if args.command == "validate":
        print(f"{args.file}: ok ({len(plan.pretrain_jobs)} pretraining jobs, {len(plan.eval_jobs)} evaluation jobs)")
        return 0
    if args.command == "worker":
        return _worker(args, spec, plan, pm, registry)
    return _run(args, spec, plan, pm, registry)


def _run(args: argparse.Namespace, spec: BenchmarkSpec, plan: Plan, pm: pluggy.PluginManager,
         registry: Registry) -> int:
    from ssl_bench.harness.pipeline.runner import execute, log, write_leaderboard
    from ssl_bench.harness.pipeline.train import resolve_device
    from ssl_bench.harness.scale.launch import join_process_group, leave_process_group, relaunch

    out = args.out or Path("runs") / spec.name
    if args.nproc is not None and args.nproc < 1:
        raise UsageError(f"--nproc {args.nproc}: needs at least 1 process")
    if args.sync_bn:
        os.environ["BENCH_SYNC_BN"] = "1"
    if args.nproc and args.nproc > 1 and not args.dry_run:
        relaunch(args.argv, args.nproc)
    if args.dry_run:
        folder = RunFolder(out)
        for job in (j for p in plan.pretrain_jobs for j in p.all_jobs()):
            state = "done" if folder.done_marker(job.key, select=job.kind == "select").exists() else "todo"
            print(f"[{state}] {job.describe()}")
        for ejob in plan.eval_jobs:
            state = "done" if folder.has_result(ejob.key) else "todo"
            print(f"[{state}] {ejob.describe()}")
        return 0
    device = join_process_group(resolve_device(args.device))
    if not is_main():  # under torchrun: only rank 0 reports to plugins and shows progress
        pm, args.progress = make_plugin_manager(load_entrypoints=False, builtins=False), False
    run = _make_run(args, spec, plan, pm, registry, out, device)
    t0 = time.perf_counter()
    failed = execute(run)
    if is_main():
        print(write_leaderboard(run))
        log(f"{spec.name}: {len(plan.eval_jobs) - failed} of {len(plan.eval_jobs)} evaluations recorded in "
            f"{run.folder.results_dir}, {failed} failed; {time.perf_counter() - t0:.1f} s; "
            f"leaderboard in {run.folder.leaderboard}")
    leave_process_group()
    return 1 if failed else 0


def _make_run(args: argparse.Namespace, spec: BenchmarkSpec, plan: Plan, pm: pluggy.PluginManager,
              registry: Registry, out: Path, device: torch.device, **kw: Any) -> Run:
    from ssl_bench.harness.pipeline.runner import Run

    data_root = args.data_root or Path(os.environ.get("BENCH_DATA_ROOT", "data"))
    cache = Path(os.environ.get("BENCH_CACHE_DIR", Path.home() / ".cache" / "ssl-bench"))
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    return Run(spec, plan, registry, pm, out, device, DataContext(root=data_root, cache_dir=cache), progress=progress,
               **kw)


def _worker(args: argparse.Namespace, spec: BenchmarkSpec, plan: Plan, pm: pluggy.PluginManager,
            registry: Registry) -> int:
    from ssl_bench.harness.pipeline.train import resolve_device
    from ssl_bench.harness.pipeline.worker import serve
    from ssl_bench.harness.scale.launch import launched_by_torchrun
    from ssl_bench.harness.scale.storage import DEFAULT_JOURNAL, open_storage

    if launched_by_torchrun():
        raise UsageError("bench worker runs one process per worker; start several workers instead of torchrun")
    if args.heartbeat <= 0 or args.stale_after <= args.heartbeat:
        raise UsageError(f"--heartbeat {args.heartbeat} --stale-after {args.stale_after}: "
                         "need 0 < heartbeat < stale-after")
    out = args.out or Path("runs") / spec.name
    storage = open_storage(args.storage or str(out / DEFAULT_JOURNAL))
    run = _make_run(args, spec, plan, pm, registry, out, resolve_device(args.device), storage=storage)
    failed = serve(run, storage, heartbeat_s=args.heartbeat, stale_after_s=args.stale_after)
    return 1 if failed else 0


def _schema(registry: Registry) -> dict[str, object]:
    schema: dict[str, object] = BenchmarkSpec.model_json_schema()
    schema["x-components"] = {
        kind: {name: registry.get(kind, name).Params.model_json_schema() for name in registry.names(kind)}
        for kind in COMPONENT_KINDS
    }
    return schema


if __name__ == "__main__":
    sys.exit(main())
