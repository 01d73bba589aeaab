"""How many cores a run may use, and whether anything else used them while it was timed.

torch's CPU kernels run with one thread per core by default; when other processes hold some of those
cores, every step waits for the slowest thread and a job runs 10-150x slower than on a quiet machine.
So a timing is only worth recording together with the machine's state: the threads the job ran with
and how busy the other processes kept the cores meanwhile.

The load of *other* processes is measured, not the load average: from ``/proc/stat`` (all CPU time
spent on the machine, in clock ticks) minus this process's own CPU time (``os.times``, children
included) over the same interval, divided by the wall time. That is "cores kept busy by others"; a
timing is ``contended`` when others kept more than :data:`CONTENDED_CORES` cores busy. Where
``/proc/stat`` is missing (macOS, Windows), the 1-minute load average minus our own threads is the
fallback, and says so in ``source``.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

CONTENDED_CORES = 0.5
"""Others keeping more than half a core busy on average make a timing contended."""

PROC_STAT = Path("/proc/stat")


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def choose_threads(requested: int | None = None, processes: int = 1) -> int:
    """Torch threads for one process: ``requested``, else this machine's cores split over ``processes``.

    Args:
        requested: ``--threads`` (None or 0: decide here).
        processes: processes sharing the machine (``--nproc``, or workers on one host).
    """
    if requested:
        return requested
    return max(1, cpu_count() // max(1, processes))


def processor_model() -> str:
    """The CPU's model name and, on x86, its family and model numbers ("AMD EPYC (family 23, model 49)"):
    ``/proc/cpuinfo``'s first processor, else what :mod:`platform` says, else the architecture. A hypervisor
    may show only "AMD EPYC" for CPUs two generations apart (Zen 1 and Zen 2 differ 2x in fp32 speed); the
    family and model numbers tell them apart."""
    first: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip() and first:
                break  # the end of the first processor's block
            first.setdefault(key.strip(), " ".join(value.split()))
    except OSError:
        pass
    name = first.get("model name")
    if not name:
        return platform.processor() or platform.machine() or "cpu"
    family, model = first.get("cpu family"), first.get("model")
    return f"{name} (family {family}, model {model})" if family and model else name


def device_name(device: torch.device) -> str:
    """What a timing was measured on: the GPU's name, or the CPU's model, cores and widest vector unit
    ("AMD EPYC (family 23, model 49) x2 (AVX2)"): two machines of one host name and core count can differ 4x
    in speed."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{processor_model()} x{cpu_count()} ({torch.backends.cpu.get_cpu_capability()})"


def _machine_busy_ticks() -> int | None:
    """Clock ticks all CPUs spent busy since boot (user+nice+system+irq+softirq+steal), or None."""
    try:
        fields = PROC_STAT.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    guest = sum(ticks[8:10]) if len(ticks) > 9 else 0  # guest time is already counted in user
    return sum(ticks) - idle - guest


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass(frozen=True)
class MachineLoad:
    """The machine while a job ran.

    Attributes:
        threads: torch threads the job ran with.
        cores: cores this process may use.
        others: cores kept busy on average by other processes (>= 0).
        contended: ``others`` > :data:`CONTENDED_CORES`: the job's timing is not a quiet one.
        source: how ``others`` was measured ("proc-stat" or "loadavg").
    """

    threads: int
    cores: int
    others: float
    contended: bool
    source: str


class LoadMeter:
    """Measures other processes' CPU use between :meth:`start` and :meth:`stop` (cheap: two file reads)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._t0 = 0.0
        self._busy0: int | None = None
        self._own0 = 0.0

    def start(self) -> LoadMeter:
        self._t0, self._busy0, self._own0 = time.perf_counter(), _machine_busy_ticks(), _own_cpu_seconds()
        return self

    def stop(self) -> MachineLoad:
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        busy1, own1 = _machine_busy_ticks(), _own_cpu_seconds()
        if self._busy0 is not None and busy1 is not None:
            machine = (busy1 - self._busy0) / os.sysconf("SC_CLK_TCK")
            others, source = max(0.0, (machine - (own1 - self._own0)) / elapsed), "proc-stat"
        else:  # pragma: no cover - no /proc
            others, source = max(0.0, os.getloadavg()[0] - self.threads), "loadavg"
        return MachineLoad(self.threads, cpu_count(), round(others, 2), others > CONTENDED_CORES, source)


def busy_now(seconds: float = 0.5) -> MachineLoad:
    """Sample the machine for ``seconds`` while this process sleeps: what others use right now."""
    meter = LoadMeter(threads=0).start()
    time.sleep(seconds)
    return meter.stop()


def memory_check_on() -> bool:
    """Whether memory estimates may refuse work (``BENCH_MEMORY_CHECK=0`` turns them off)."""
    return os.environ.get("BENCH_MEMORY_CHECK", "1").strip().lower() not in ("0", "false", "no", "off")


def available_host_memory() -> int | None:
    """The host's available memory in bytes, or None where it cannot tell.

    psutil's ``available`` when installed, else ``MemAvailable`` of ``/proc/meminfo``, else
    ``SC_AVPHYS_PAGES`` x ``SC_PAGE_SIZE``; capped by a cgroup v2 memory limit.
    """
    found: int | None = None
    try:
        import psutil

        found = int(psutil.virtual_memory().available)
    except ImportError:
        found = _meminfo_available()
    if found is None:
        try:
            found = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    limit = _cgroup_room()
    return found if limit is None else min(found, limit)


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """A cgroup v2 memory limit minus what the group uses, or None where there is no limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()), 0)
    except (OSError, ValueError):
        return None
