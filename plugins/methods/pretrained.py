"""`pretrained`: an encoder loaded from a checkpoint instead of trained (the pretrained inference study's use).

The pretrained inference study (benchmarks/pretrained_inference.toml) takes a SimCLR ResNet released by
its authors, trained on ImageNet, and evaluates it on other datasets without any training. This method
does the same for any backbone: the harness builds the benchmark's backbone, this method loads weights
into it, and every evaluator then sees it as if it had been pretrained here. It never trains
(``trains = False``).

Where the weights come from (exactly one of):
    ``path`` = a file: a state dict saved with ``torch.save`` (``.pt``, ``.pth``, ``.pth.tar``), also
        when nested in a checkpoint (``{"state_dict": ...}``, ``{"model": ...}``, this harness's
        ``last.pt`` with ``{"method": ...}``): the mapping with the most tensors is used.
    ``path`` = a folder: an artifact folder of this harness (holding ``encoder.pt``), or the output
        folder of another ``bench run`` (read through :class:`~ssl_bench.harness.RunFolder`), with
        ``label`` (and ``seed``) naming the row whose encoder to load, so one benchmark evaluates the
        encoders another one trained.
    ``torchvision`` = a weights name (``"ResNet50_Weights.IMAGENET1K_V2"``): torchvision's own
        release, read from torch's hub cache (``$TORCH_HOME/hub/checkpoints``); never downloaded here.

Key matching: public SSL releases prefix their keys (``module.``, ``encoder.``, ``backbone.``,
``encoder_q.``, ``online_network.``, ``model.``) and this harness's ResNets keep torchvision's keys
under ``net.``. Every key on both sides loses any run of these prefixes before the keys are matched,
and a match needs equal shapes; ``prefix`` instead keeps only the file's keys starting with it.
The load reports its missing keys (backbone keys the file did not fill; they keep their seeded
random values), its unexpected ones (file keys not used, e.g. projection heads or MoCo's key
encoder) and its coverage: the fraction of the backbone's parameter elements it filled (buffers
such as batch-norm statistics and ``num_batches_tracked`` do not count). It fails when nothing
matches, when the coverage is below ``min_coverage`` (default 0.9: a checkpoint of another width
matches only its shape-free scalars and would leave every real tensor random, yet be reported as
pretrained), and with ``strict = true`` on any missing key.

Safety: files are read with ``torch.load(weights_only=True)``, which unpickles tensors and plain
containers only and refuses anything that would run code; such a file is an error, never loaded.
``$VARS`` and ``~`` in ``path`` are expanded; a relative path is relative to the working directory.
The job's content key covers the resolved file's path, size and modification time, so replacing the
file (or pointing ``$BENCH_CHECKPOINT`` elsewhere) re-runs the evaluations.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field, model_validator
from torch import Tensor

from ssl_bench.harness import (
    Backbone,
    BenchError,
    DataError,
    Method,
    MethodParams,
    Register,
    RunFolder,
    file_fingerprint,
    hookimpl,
    read_rows,
)

KNOWN_PREFIXES = ("module.", "encoder.", "backbone.", "encoder_q.", "online_network.", "model.", "net.")
"""Prefixes stripped from both sides before matching keys (DDP, MoCo, BYOL, timm / harness wrappers)."""


class Pretrained(Method):
    """Loads the backbone's weights from a checkpoint; no training."""

    name = "pretrained"
    trains = False

    class Params(MethodParams):
        path: str | None = None
        """A checkpoint file, an artifact folder, or another run's output folder (with ``label``)."""
        label: str | None = None
        """With a run folder: the method label (the leaderboard's Method column) whose encoder to load."""
        seed: int | None = None
        """With a run folder: the seed of that encoder; None = the only one, or an error if several."""
        benchmark: str | None = None
        """With a run folder shared by several benchmark files: the ``name`` of the one whose run to load."""
        torchvision: str | None = None
        """A torchvision weights name, ``"ResNet18_Weights.IMAGENET1K_V1"``, read from the hub cache."""
        prefix: str | None = None
        """Keep only file keys starting with this and strip it, instead of the known prefixes."""
        strict: bool = False
        """Fail when any backbone key is missing from the file."""
        min_coverage: Annotated[float, Field(ge=0, le=1, exclude=True)] = 0.9
        """Fail unless the file fills at least this fraction of the backbone's parameter elements (buffers
        not counted); lower it to accept a partial load on purpose. A gate, not an input: not in job keys."""

        @model_validator(mode="after")
        def one_source(self) -> Pretrained.Params:
            if (self.path is None) == (self.torchvision is None):
                raise ValueError("set exactly one of `path` and `torchvision`")
            return self

    params: Params

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        source = torchvision_file(params.torchvision) if params.torchvision else resolve_path(params)
        weights = load_weights(source)
        self.report = load_into(backbone, weights, prefix=params.prefix, strict=params.strict, source=source,
                                min_coverage=params.min_coverage)
        print(f"pretrained: {source}: {self.report}", file=sys.stderr)


    @classmethod
    def fingerprint(cls, params: MethodParams) -> str:
        """The weights file's path, size and mtime, so a replaced file is a new job; '' while unresolvable."""
        assert isinstance(params, Pretrained.Params)
        try:
            source = torchvision_file(params.torchvision) if params.torchvision else resolve_path(params)
        except BenchError:
            return ""  # the job reports it when it runs
        return file_fingerprint([source])


class LoadReport:
    """What a load matched: counts, the missing and unexpected key names, and the coverage.

    Attributes:
        coverage: the fraction of the backbone's parameter elements the load filled, in [0, 1].
    """

    def __init__(self, loaded: list[str], missing: list[str], unexpected: list[str], coverage: float = 1.0) -> None:
        self.loaded, self.missing, self.unexpected, self.coverage = loaded, missing, unexpected, coverage

    def __str__(self) -> str:
        def names(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")

        text = f"loaded {len(self.loaded)} tensors ({self.coverage:.1%} of the backbone's parameter elements)"
        if self.missing:
            text += f"; missing (left at random init): {names(self.missing)}"
        if self.unexpected:
            text += f"; unexpected (ignored): {names(self.unexpected)}"
        return text


def strip_prefixes(key: str) -> str:
    """``key`` without any leading run of :data:`KNOWN_PREFIXES`.

    ``module.encoder_q.conv1.weight`` -> ``conv1.weight``.
    """
    stripped = True
    while stripped:
        stripped = False
        for prefix in KNOWN_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def coverage_of(backbone: Backbone, loaded: Sequence[str]) -> float:
    """The fraction of ``backbone``'s parameter elements whose state-dict key is in ``loaded`` (1.0 if none)."""
    params = dict(backbone.named_parameters())
    total = sum(p.numel() for p in params.values())
    return sum(params[k].numel() for k in set(loaded) if k in params) / total if total else 1.0


def load_into(backbone: Backbone, weights: Mapping[str, Tensor], *, prefix: str | None, strict: bool,
              source: Path | str, min_coverage: float = 0.0) -> LoadReport:
    """Copy matching tensors of ``weights`` into ``backbone``; returns what matched.

    Raises:
        BenchError: nothing matches, or ``strict`` and a backbone key is missing.
        DataError: the matched tensors fill less than ``min_coverage`` of the backbone's parameter
            elements (the message names the file); nothing is loaded then.
    """
    if prefix is not None:
        weights = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    target = backbone.state_dict()
    by_short = {strip_prefixes(k) if prefix is None else k: k for k in target}
    matched: dict[str, Tensor] = {}
    unexpected = []
    for key, value in weights.items():
        name = by_short.get(strip_prefixes(key) if prefix is None else key)
        if name is not None and tuple(target[name].shape) == tuple(value.shape):
            matched[name] = value
        else:
            unexpected.append(key)
    missing = [k for k in target if k not in matched]
    if not matched:
        sample = ", ".join(list(weights)[:5]) or "(no tensors)"
        raise BenchError(f"pretrained: {source}: no tensor matches backbone '{backbone.name}' "
                         f"(file keys like {sample}; backbone keys like {', '.join(list(target)[:3])}); "
                         "set `prefix` or check the backbone")
    if strict and missing:
        raise BenchError(f"pretrained: {source}: strict load, {len(missing)} backbone key(s) missing: "
                         f"{', '.join(missing[:5])}")
    coverage = coverage_of(backbone, list(matched))
    if coverage < min_coverage:
        shown = ", ".join(sorted(matched)[:3]) + (", ..." if len(matched) > 3 else "")
        raise DataError(f"pretrained: {source}: the file fills only {coverage:.1%} of the parameter elements of "
                        f"backbone '{backbone.name}' ({len(matched)} tensors matched: {shown}), below min_coverage = "
                        f"{min_coverage:g}; the rest would stay random. A checkpoint of another width or "
                        "architecture? Match the backbone's params, or lower min_coverage to accept a partial load")
    backbone.load_state_dict({**target, **matched})
    return LoadReport(sorted(matched), missing, unexpected, coverage)


def load_weights(path: Path) -> dict[str, Tensor]:
    """The largest str -> Tensor mapping in the file (the file itself or one level of nesting)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BenchError(f"pretrained: {path}: no such file") from None
    except pickle.UnpicklingError as exc:
        raise BenchError(f"pretrained: {path}: refused, the file holds objects other than tensors and plain "
                         f"containers, and loading it could run code ({str(exc).splitlines()[0]}); "
                         "re-save its state dict alone") from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise BenchError(f"pretrained: {path}: not a readable torch checkpoint ({exc})") from None
    candidates = [obj] + (list(obj.values()) if isinstance(obj, dict) else [])
    tensors = [{k: v for k, v in c.items() if isinstance(k, str) and isinstance(v, Tensor)}
               for c in candidates if isinstance(c, dict)]
    best = max(tensors, key=len, default={})
    if not best:
        raise BenchError(f"pretrained: {path}: no tensors found (expected a state dict)")
    return best


def resolve_path(params: Pretrained.Params) -> Path:
    """The weights file that ``params.path`` (file, artifact folder or run folder) names."""
    assert params.path is not None
    path = Path(os.path.expandvars(os.path.expanduser(params.path)))
    if path.is_file():
        return path
    if not path.is_dir():
        raise BenchError(f"pretrained: path {path}: no such file or folder")
    artifact = path / RunFolder.ENCODER  # an artifact folder itself
    if artifact.is_file():
        return artifact
    if params.label is None:
        raise BenchError(f"pretrained: {path} is a folder without {RunFolder.ENCODER}; give `label` to pick a "
                         "method of the run stored there")
    run = RunFolder(path)
    rows = [r for r in read_rows([run.results_dir]) if r.get("label") == params.label
            and (params.seed is None or r.get("seed") == params.seed)
            and (params.benchmark is None or r.get("benchmark") == params.benchmark)]
    runs = {(r["seed"], r["pretrain_key"]): r for r in rows}
    keys = sorted(runs)
    if not keys:
        labels = sorted({str(r.get("label")) for r in read_rows([run.results_dir])})
        raise BenchError(f"pretrained: {path}: no results for label '{params.label}'"
                         f"{'' if params.seed is None else f' seed {params.seed}'}"
                         f"{'' if params.benchmark is None else f' of benchmark {params.benchmark}'}; labels there: "
                         f"{', '.join(labels) or '(none: run that benchmark first)'}")
    if len({seed for seed, _ in keys}) > 1:
        raise BenchError(f"pretrained: {path}: label '{params.label}' has seeds "
                         f"{', '.join(str(s) for s, _ in keys)}; set `seed`")
    if len(keys) > 1:
        found = "; ".join(sorted({f"benchmark {r['benchmark']}: {r['pretrain_dataset']}, "
                                  f"batch {r['pretrain_batch_size']}, {r['pretrain_steps']} steps"
                                  for r in runs.values()}))
        raise BenchError(f"pretrained: {path}: label '{params.label}' names {len(keys)} pretrainings ({found}); "
                         "set `benchmark` to the file whose run to load")
    file = run.encoder(keys[0][1])
    if not file.is_file():
        raise BenchError(f"pretrained: {file}: missing (the run's artifacts were removed?)")
    return file


def torchvision_file(name: str) -> Path:
    """The hub-cache file of torchvision weights ``name``; an error saying where to put it if absent."""
    from torchvision.models import get_weight

    try:
        weights: Any = get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise BenchError(f"pretrained: unknown torchvision weights '{name}' "
                         "(expected a name like 'ResNet18_Weights.IMAGENET1K_V1')") from None
    file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not file.is_file():
        raise BenchError(f"pretrained: torchvision weights {name} are not on disk: expected {file} "
                         f"(download {weights.url} where there is a network and copy it there)")
    return file


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(Pretrained)
