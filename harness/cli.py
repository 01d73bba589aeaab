"""``bench``: a thin command line over the harness.

    bench run FILE [--profile NAME] [--out DIR] [--data-root DIR] [--device auto|cpu|cuda] [--dry-run]
                   [--shard I/N] [--nproc N] [--sync-bn] [--set KEY=VALUE]... [--max-hours H] [--yes]
    bench worker FILE [--storage URL|PATH] [--out DIR] [--profile NAME] [--heartbeat S] [--stale-after S]
                      [--set KEY=VALUE]...
    bench validate FILE [--profile NAME] [--set KEY=VALUE]...
    bench export ARTIFACT [--format safetensors|torchvision|timm] [-o FILE]
    bench list [methods|datasets|augmentations|backbones|evaluators]
    bench plugins
    bench schema
    bench leaderboard RESULTS_DIR... [--output FILE]

Exit codes: 0 success; 1 a job failed (the others still ran), the disk is full, or an internal error (its
traceback in a log file the one line names); 2 a bad benchmark file or command line, data the plan needs that
is missing, or an estimate over ``--max-hours`` refused (the preflight, before any job); 130 interrupted; 141
stdout closed early (``bench list | head -1``). Whatever goes wrong, stderr gets one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pluggy

from ssl_bench.harness.errors import BenchError, DiskFullError, UsageError
from ssl_bench.harness.pipeline.logs import counted
from ssl_bench.harness.pipeline.specs import BenchmarkSpec, load_benchmark, load_profiles
from ssl_bench.harness.record.layout import RunFolder

if TYPE_CHECKING:  # imported when a command runs (_import_lazily): parsing a command line needs no torch
    import torch

    from ssl_bench.harness.components import COMPONENT_KINDS, DataContext
    from ssl_bench.harness.pipeline.plan import Plan, make_plan
    from ssl_bench.harness.pipeline.runner import Run
    from ssl_bench.harness.pipeline.shard import parse_shard, shard_plan
    from ssl_bench.harness.plugins import Registry, load_registry, make_plugin_manager, plugin_report
    from ssl_bench.harness.record.leaderboard import publish
    from ssl_bench.harness.record.results import read_rows
    from ssl_bench.harness.scale.distributed import is_main

KINDS = ("augmentations", "backbones", "datasets", "evaluators", "methods")
"""The kinds of ``bench list KIND``: the keys of ``components.COMPONENT_KINDS``, spelled out so that parsing a
command line (``bench --help``) imports no torch; a test keeps the two equal."""

_LAZY = {
    "COMPONENT_KINDS": "ssl_bench.harness.components", "DataContext": "ssl_bench.harness.components",
    "make_plan": "ssl_bench.harness.pipeline.plan", "parse_shard": "ssl_bench.harness.pipeline.shard",
    "shard_plan": "ssl_bench.harness.pipeline.shard", "load_registry": "ssl_bench.harness.plugins",
    "make_plugin_manager": "ssl_bench.harness.plugins", "plugin_report": "ssl_bench.harness.plugins",
    "publish": "ssl_bench.harness.record.leaderboard", "read_rows": "ssl_bench.harness.record.results",
    "is_main": "ssl_bench.harness.scale.distributed",
}
"""Names this module uses that import torch (or pyarrow), by the module they come from."""


def _import_lazily() -> None:
    """Bind the names of :data:`_LAZY` in this module, once a command is parsed; a name bound already (a test's
    monkeypatch of ``cli.make_plan``) is kept."""
    for name, module in _LAZY.items():
        if name not in globals():
            globals()[name] = getattr(importlib.import_module(module), name)


def __getattr__(name: str) -> Any:
    """``cli.make_plan`` and the other lazy names, imported on first access."""
    if name in _LAZY:
        _import_lazily()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block): ``bench run: error: ... (see 'bench run --help')``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bench", description="Benchmark self-supervised learning methods.")
    p.add_argument("--no-plugins", action="store_true", help="load no third-party plugins (entry points)")
    p.add_argument("-p", dest="blocked", action="append", default=[], metavar="no:NAME",
                   help="block a plugin by name, e.g. -p no:ssl_bench.plugins.methods.simclr")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=0,
                      help="also print debug lines (each logged step's metrics, where files go)")
    loud.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1,
                      help="print only warnings and errors on stderr (a job's log.txt still gets every line)")
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
    run.add_argument("--threads", type=int, metavar="N", help="torch threads per process (default: this machine's "
                     "cores split over --nproc processes)")
    run.add_argument("--sync-bn", action="store_true", help="with several processes, synchronise batch norm "
                     "statistics over the global batch (SyncBatchNorm, CUDA only; same as BENCH_SYNC_BN=1)")
    run.add_argument("--max-hours", type=float, metavar="H", help="ask first (on a terminal) or refuse (without "
                     "one) when the estimated pretraining time is over H hours (default: 2)")
    run.add_argument("-y", "--yes", action="store_true", help="start whatever the estimated time, without asking")

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
    wk.add_argument("--threads", type=int, metavar="N", help="torch threads (default: the cores split over the "
                    "workers running on this machine)")
    wk.add_argument("--heartbeat", type=float, default=30.0, metavar="S",
                    help="seconds between heartbeats of a running job (default: 30)")
    wk.add_argument("--stale-after", type=float, default=300.0, metavar="S",
                    help="a job without a heartbeat for this long is retried by another worker (default: 300)")

    val = sub.add_parser("validate", help="check a benchmark file against the registry without running it")
    val.add_argument("file", type=Path)
    val.add_argument("--profile")
    for command in (run, wk, val):
        command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                             help="change one value of the file after the profile, validated like the file "
                             "(e.g. --set pretrain.epochs=2 --set 'methods[0].params.temperature=0.5'); repeatable")

    ex = sub.add_parser("export", help="write a finished pretraining's encoder for torchvision, timm or safetensors")
    ex.add_argument("artifact", type=Path, help="<out>/artifacts/<key> of a finished pretraining, or its encoder.pt")
    ex.add_argument("--format", default="safetensors", help="safetensors (default), torchvision (.pth state dict "
                    "of the torchvision model) or timm (.pth state dict of the timm model)")
    ex.add_argument("-o", "--output", type=Path, help="the weights file (default: ./encoder-<key>.<suffix>); the "
                    "JSON sidecar goes beside it as FILE.json")

    ls = sub.add_parser("list", help="list registered components")
    ls.add_argument("kind", nargs="?", choices=KINDS)
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
    lb.add_argument("--benchmark", action="append", default=None, metavar="NAME",
                    help="only this benchmark's results (repeat for several)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bench ARGV``; returns the exit code (see the module docstring). Reports every error in one line.

    A user's mistake (:class:`BenchError`) is its message; an ``OSError`` (a path that cannot be read or
    written, a full disk) names the file; anything else is a bug whose traceback goes to a log file.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
        args.argv = argv
        _import_lazily()
        from ssl_bench.harness.pipeline.logs import configure_logging  # stdlib only: --help stays cheap

        configure_logging(args.verbosity)  # also checks BENCH_LOG_EVERY and BENCH_PROGRESS_EVERY
        code = _dispatch(args)
        sys.stdout.flush()  # a closed pipe (bench list | head -1) shows up here rather than at exit
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except BenchError as exc:
        return _error(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print("bench: interrupted; finished jobs are kept, rerun to resume", file=sys.stderr)
        return 130
    except OSError as exc:
        full = DiskFullError.of(exc)
        if full is not None:
            return _error(str(full), full.exit_code)
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return _error(f"{where}{exc.strerror or exc}", 1)
    except Exception as exc:
        return _internal_error(exc)


def _error(message: str, code: int) -> int:
    print(f"bench: error: {message}", file=sys.stderr)
    return code


def _stdout_closed() -> int:
    """The reader of stdout went away (``| head``): say nothing more and exit as if killed by SIGPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (called in-process, captured)
        pass
    return 128 + 13


def _internal_error(exc: Exception) -> int:
    """A bug (in the harness or a plugin): one line on stderr, the traceback in a log file it names."""
    text = "".join(traceback.format_exception(exc))
    try:
        fd, name = tempfile.mkstemp(prefix="bench-error-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        where = f"traceback in {name}"
    except OSError:
        where = "its traceback could not be saved"
    first = next(iter(str(exc).strip().splitlines()), "")
    print(f"bench: internal error: {type(exc).__name__}: {first} ({where}; please report it)", file=sys.stderr)
    return 1


def _registry(args: argparse.Namespace) -> tuple[pluggy.PluginManager, Registry]:
    blocked = [b.removeprefix("no:") for b in args.blocked]
    loaded: tuple[pluggy.PluginManager, Registry] = load_registry(
        load_entrypoints=False if args.no_plugins else None, blocked=blocked)
    return loaded


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "leaderboard":
        return _leaderboard(args)
    if args.command == "export":
        return _export(args)
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
    if args.command == "validate":
        return _validate(args, registry)
    shard = parse_shard(args.shard) if getattr(args, "shard", None) else None
    spec = load_benchmark(args.file, args.profile, registry, args.overrides)
    plan = make_plan(spec, registry, args.file.name, data=data_context(args))  # the data's fingerprint is in the keys
    if shard:
        plan = shard_plan(plan, *shard)
    if args.command == "worker":
        return _worker(args, spec, plan, pm, registry)
    return _run(args, spec, plan, pm, registry)


def _validate(args: argparse.Namespace, registry: Registry) -> int:
    """``bench validate FILE``: the base and every profile (or only ``--profile NAME``), each with its plan."""
    specs = ({args.profile: load_benchmark(args.file, args.profile, registry, args.overrides)} if args.profile
             else load_profiles(args.file, registry, args.overrides))
    for name, spec in specs.items():
        plan = make_plan(spec, registry, args.file.name)
        where = f"{args.file}: profiles.{name}" if name and not args.profile else str(args.file)
        print(f"{where}: ok ({counted(len(plan.pretrain_jobs), 'pretraining job')}, "
              f"{counted(len(plan.eval_jobs), 'evaluation job')})")
    return 0


def _export(args: argparse.Namespace) -> int:
    """``bench export ARTIFACT``: the encoder for other code; the plugins load once the artifact is checked."""
    from ssl_bench.harness.data import IMAGENET_MEAN, IMAGENET_STD
    from ssl_bench.harness.record.export import export_encoder

    def build(name: str, params: dict[str, Any]) -> torch.nn.Module:
        cls = _registry(args)[1].get("backbones", name)
        try:
            resolved = cls.Params.model_validate(params)
        except ValueError as exc:  # pydantic's ValidationError: the plugin changed since the job ran
            raise UsageError(f"{args.artifact}: its backbone params no longer fit '{name}' ({exc})") from None
        backbone: torch.nn.Module = cls(resolved)
        return backbone

    done = export_encoder(args.artifact, build, fmt=args.format, output=args.output, mean=IMAGENET_MEAN,
                          std=IMAGENET_STD)
    print(f"wrote {done.weights} ({done.tensors} tensors of {done.info['backbone']['name']}, "
          f"{done.info['feature_dim']}-d features) and {done.sidecar}")
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    """``bench leaderboard``: every path checked before anything is read or written."""
    for path in args.results:
        if not path.exists():
            raise UsageError(f"{path}: no such results folder or file")
    for flag, path in (("--output", args.output), ("--html", args.html)):
        if path is not None and path.is_dir():
            raise UsageError(f"{flag} {path}: is a folder; give the file to write")
    if args.figures is not None and args.figures.exists() and not args.figures.is_dir():
        raise UsageError(f"--figures {args.figures}: is a file; give the folder for the figures")
    if args.notes is not None:
        try:
            args.notes.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"--notes {args.notes}: not UTF-8 text; the notes file is TOML") from None
        except OSError:
            pass  # read_notes names the file and why it cannot be read
    print(publish(read_rows(args.results), title=args.title, output=args.output, html=args.html,
                  notes=args.notes, figures=args.figures, benchmarks=args.benchmark))
    return 0


def writable_folder(flag: str, folder: Path) -> None:
    """Refuse, before any compute, an output folder that cannot be created or written.

    Args:
        flag: the option that named it (``--out``), for the message.
        folder: created (with its parents) when missing; a file is written in it and removed.

    Raises:
        UsageError: ``folder`` is a file, or cannot be created or written (read-only, under /proc, ...).
        DiskFullError: no space left to write in it.
    """
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{flag} {folder}: is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".bench-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        full = DiskFullError.of(exc, folder)
        if full is not None:
            raise full from None
        raise UsageError(f"{flag} {folder}: cannot write there ({exc.strerror or exc})") from None


def _run(args: argparse.Namespace, spec: BenchmarkSpec, plan: Plan, pm: pluggy.PluginManager,
         registry: Registry) -> int:
    from ssl_bench.harness.pipeline.runner import execute, log, summary, write_leaderboard
    from ssl_bench.harness.pipeline.train import resolve_device
    from ssl_bench.harness.scale.launch import (
        check_nproc,
        join_process_group,
        launched_by_torchrun,
        leave_process_group,
        relaunch,
    )

    out = args.out or Path("runs") / spec.name
    if args.dry_run:  # trains nothing (but the preflight's probe): the device need not be here, the folder is only read
        device = resolve_device(args.device, check_available=False)
        if args.nproc is not None:
            check_nproc(args.nproc, None)
        _print_plan(plan, RunFolder(out))
        _preflight(args, _make_run(args, spec, plan, pm, registry, out, device), registry)
        return 0
    device = resolve_device(args.device)  # what cannot be honoured is refused before any job (and torchrun)
    if args.nproc is not None:
        check_nproc(args.nproc, device)
    writable_folder("--out", out)
    if args.sync_bn:
        os.environ["BENCH_SYNC_BN"] = "1"
    if args.nproc and args.nproc > 1:
        _preflight(args, _make_run(args, spec, plan, pm, registry, out, device), registry)  # once, before torchrun
        relaunch(args.argv, args.nproc)
    device = join_process_group(device)
    use_threads(args.threads, processes=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if not is_main():  # under torchrun: only rank 0 reports to plugins and shows progress
        pm, args.progress = make_plugin_manager(load_entrypoints=False, builtins=False), False
    run = _make_run(args, spec, plan, pm, registry, out, device)
    if not launched_by_torchrun():  # under torchrun the process that launched it checked
        _preflight(args, run, registry)
    t0 = time.perf_counter()
    failed = execute(run)
    if is_main():
        print(write_leaderboard(run))
        log(summary(run, time.perf_counter() - t0))
    leave_process_group()
    return 1 if failed else 0


def _preflight(args: argparse.Namespace, run: Run, registry: Registry) -> None:
    """Before the first job: every dataset the plan needs looked up, the cost estimated, asked or refused
    above ``--max-hours`` (see :mod:`ssl_bench.harness.pipeline.preflight`)."""
    from ssl_bench.harness.pipeline.preflight import preflight

    sys.stdout.flush()  # a dry run's plan before the line on stderr
    overrides = getattr(args, "overrides", [])
    preflight(run, max_hours=args.max_hours, assume_yes=args.yes, processes=args.nproc or 1, dry_run=args.dry_run,
              profiles=lambda: load_profiles(args.file, registry, overrides), profile=args.profile)


def _print_plan(plan: Plan, folder: RunFolder) -> None:
    """``--dry-run``: every job of the plan, ``[done]`` or ``[todo]`` in ``folder``; a todo says why
    (:mod:`~ssl_bench.harness.record.staleness`: not run yet, or what changed since it ran)."""
    from ssl_bench.harness.pipeline.plan import evaluator_titles
    from ssl_bench.harness.record.staleness import Staleness

    why = Staleness(folder)
    for job in (j for p in plan.pretrain_jobs for j in p.all_jobs()):
        done = folder.done_marker(job.key, select=job.kind == "select").exists()
        print(f"[done] {job.describe()}" if done else f"[todo] {job.describe()}  ({why.pretraining(job)})")
    titles = evaluator_titles(plan.eval_jobs)  # what tells two evaluations apart (finetune(label_fraction=0.01))
    for ejob in plan.eval_jobs:
        done, line = folder.has_result(ejob.key), ejob.describe(titles[ejob.key])
        print(f"[done] {line}" if done else f"[todo] {line}  ({why.evaluation(ejob)})")


def _make_run(args: argparse.Namespace, spec: BenchmarkSpec, plan: Plan, pm: pluggy.PluginManager,
              registry: Registry, out: Path, device: torch.device, **kw: Any) -> Run:
    from ssl_bench.harness.pipeline.runner import Run

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    return Run(spec, plan, registry, pm, out, device, data_context(args), progress=progress, **kw)


def data_context(args: argparse.Namespace) -> DataContext:
    """Where datasets are looked up (``--data-root``, ``$BENCH_DATA_ROOT``, ``./data``) and cached."""
    data_root = args.data_root or Path(os.environ.get("BENCH_DATA_ROOT", "data"))
    cache = Path(os.environ.get("BENCH_CACHE_DIR", Path.home() / ".cache" / "ssl-bench"))
    return DataContext(root=data_root, cache_dir=cache)


def _worker(args: argparse.Namespace, spec: BenchmarkSpec, plan: Plan, pm: pluggy.PluginManager,
            registry: Registry) -> int:
    from ssl_bench.harness.pipeline.train import resolve_device
    from ssl_bench.harness.pipeline.worker import serve
    from ssl_bench.harness.scale.launch import launched_by_torchrun
    from ssl_bench.harness.scale.storage import DEFAULT_JOURNAL, open_storage

    if launched_by_torchrun():
        raise UsageError("bench worker runs one process per worker; start several workers instead of torchrun")
    if not (math.isfinite(args.heartbeat) and math.isfinite(args.stale_after)
            and 0 < args.heartbeat < args.stale_after):
        raise UsageError(f"--heartbeat {args.heartbeat} --stale-after {args.stale_after}: "
                         "need 0 < heartbeat < stale-after")
    device = resolve_device(args.device)
    out = args.out or Path("runs") / spec.name
    writable_folder("--out", out)
    storage = open_storage(args.storage or str(out / DEFAULT_JOURNAL))
    use_threads(args.threads, processes=1 + other_workers_here())
    run = _make_run(args, spec, plan, pm, registry, out, device, storage=storage)
    failed = serve(run, storage, heartbeat_s=args.heartbeat, stale_after_s=args.stale_after)
    return 1 if failed else 0


def use_threads(requested: int | None, processes: int) -> None:
    """Set torch's thread count deliberately, and say once if the machine is already busy.

    A timing is recorded with the threads it ran with and the load of other processes meanwhile
    (``pretrain_contended`` in the result rows); this start-up check only warns early.
    """
    import torch

    from ssl_bench.harness.scale.machine import busy_now, choose_threads, cpu_count

    if requested is not None and requested < 1:
        raise UsageError(f"--threads {requested}: give 1 or more")
    torch.set_num_threads(choose_threads(requested, processes))
    if is_main():
        load = busy_now(0.3)
        if load.contended:
            print(f"warning: other processes keep {load.others:.1f} of {counted(cpu_count(), 'core')} busy; this run's "
                  "timings will be marked contended (--threads shares the machine deliberately)", file=sys.stderr,
                  flush=True)


def other_workers_here() -> int:
    """Other ``bench worker`` processes on this machine (Linux ``/proc``; 0 where it cannot tell)."""
    me, found = os.getpid(), 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if int(cmdline.parent.name) != me and b"worker" in words and any(
                w.endswith((b"bench", b"ssl_bench.harness")) for w in words):
            found += 1
    return found


def _schema(registry: Registry) -> dict[str, object]:
    schema: dict[str, object] = BenchmarkSpec.model_json_schema()
    schema["x-components"] = {
        kind: {name: registry.get(kind, name).Params.model_json_schema() for name in registry.names(kind)}
        for kind in COMPONENT_KINDS
    }
    return schema


if __name__ == "__main__":
    sys.exit(main())
