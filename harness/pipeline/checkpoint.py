"""Reading back a resumable pretraining checkpoint (``last.pt``) without trusting it.

A run folder can be shared (a cluster's group-writable output folder), so a ``last.pt`` found there is
input, not our own memory: it is read with ``torch.load(weights_only=True)``, which unpickles tensors,
numbers, strings and containers only and refuses any other object instead of running its code. A file
that is refused, truncated, or does not fit the method (other keys or shapes) is set aside as
``last.pt.discarded`` with a one-line warning and the run starts again from step 0: it is never loaded
half-way and never fails every rerun until a person deletes it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from ssl_bench.harness.pipeline.online_probe import OnlineProbe

REQUIRED_KEYS = ("method", "optimizer", "schedule", "stats", "step_losses")
PROBE_KEY = "online_probe"
"""The entry of a run that trains an online linear probe: its head and optimizer (there, and only there)."""


def read_resumable(path: Path, method: nn.Module, device: torch.device,
                   probe: OnlineProbe | None = None) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it is a well-formed resumable state of ``method``; else None.

    Args:
        path: the ``last.pt`` of a pretraining job (absent: None, silently).
        method: the freshly built method the state must fit (same state-dict keys and shapes).
        device: where the tensors are mapped.
        probe: the run's online probe, whose state the checkpoint must then hold (and otherwise not).
    """
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        problem = _mismatch(state, method, probe)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is discarded the same way
        problem = f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
    if problem is None:
        return state  # type: ignore[no-any-return]
    discarded = path.with_name(path.name + ".discarded")
    os.replace(path, discarded)
    print(f"warning: {path}: {problem}; set aside as {discarded.name}, pretraining starts again from step 0",
          file=sys.stderr, flush=True)
    return None


def _mismatch(state: Any, method: nn.Module, probe: OnlineProbe | None = None) -> str | None:
    """Why ``state`` is not a resumable state of ``method``, or None when it is."""
    if not isinstance(state, dict):
        return f"not a checkpoint (a {type(state).__name__}, not a dict)"
    required = REQUIRED_KEYS + ((PROBE_KEY,) if probe is not None else ())
    missing = [k for k in required if k not in state]
    if missing:
        return f"not a checkpoint of this harness (missing {', '.join(missing)})"
    extra = sorted(set(state) - set(required))
    if extra:
        return f"unexpected entries {', '.join(map(str, extra))}"
    expected = method.state_dict()
    saved = state["method"]
    if not isinstance(saved, dict) or set(saved) != set(expected):
        return "its method state has other parameters than this method"
    for name, tensor in expected.items():
        if not isinstance(saved[name], torch.Tensor) or saved[name].shape != tensor.shape:
            return f"its method state has another shape for {name}"
    return probe.mismatch(state[PROBE_KEY]) if probe is not None else None
