"""``bench export``: a finished pretraining's encoder as a weights file other code loads, and a JSON sidecar.

A finished job's ``encoder.pt`` is the harness backbone's state dict. The harness's wrapper backbones
hold the library model they wrap as their only child (``net``: the torchvision ResNets, every ``timm:``
model), so their keys carry its name as a prefix (``net.layer1.0.conv1.weight``). An export holds that
child's own state dict (``layer1.0.conv1.weight``), which the library's model of the same architecture
loads as it is; a backbone with several children (``convnet_small``, ``alexnet_bn``) keeps its keys.

Formats:
    ``safetensors`` (default): the tensors in a ``.safetensors`` file (``safetensors.torch.load_file``);
        nothing in it can run code when read.
    ``torchvision``: a ``.pth`` state dict of the torchvision model the backbone is (the ImageNet-stem
        ``resnet18``/``resnet50``): ``torchvision.models.resnet18().load_state_dict(sd, strict=False)``
        misses the classifier (``fc.weight``, ``fc.bias``) and nothing else. Checked against a freshly
        built torchvision model before writing; a backbone without a counterpart is refused.
    ``timm``: a ``.pth`` state dict that ``timm.create_model(name, num_classes=0, **model_kwargs)`` loads
        strictly (``timm:<name>`` backbones, and backbones whose weights are a timm model's, such as the
        ResNets), checked the same way.

The sidecar ``FILE.json`` says what the weights are: the backbone's name and params, the feature
dimension, the input size and normalisation the encoder was trained with (RGB in [0, 1], then
``(x - mean) / std``, images (B, 3, S, S)), the method, the job key and the versions and commit behind it.

Reading a run folder runs no code: ``job.json`` and ``done.json`` are JSON, ``encoder.pt`` is read with
``torch.load(weights_only=True)`` and must be a flat state dict of tensors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
from torch import Tensor, nn

from ssl_bench.harness.errors import UsageError
from ssl_bench.harness.record.atomic import atomic_torch_save, atomic_write, atomic_write_text
from ssl_bench.harness.record.layout import RunFolder
from ssl_bench.harness.record.results import parquet_files

FORMATS = ("safetensors", "torchvision", "timm")
"""The values of ``bench export --format``; the first is the default."""

SUFFIXES = {"safetensors": ".safetensors", "torchvision": ".pth", "timm": ".pth"}
"""The file suffix of each format (the default output is ``encoder-<key><suffix>``)."""

BuildBackbone = Callable[[str, dict[str, Any]], nn.Module]
"""Builds a fresh backbone from its registered name and params (``job.json``'s ``backbone``)."""


@dataclass(frozen=True)
class FinishedJob:
    """The artifact folder of a finished pretraining job and its ``job.json``."""

    folder: RunFolder
    """The run folder the job is in."""
    key: str
    """The job's content key (its artifact folder's name)."""
    record: dict[str, Any]
    """Its ``job.json``: the fully resolved spec (method, backbone, dataset, views, budget, seed, ...)."""
    chosen_by: str | None = None
    """The key of the sweep that chose this job, when the export was asked of the sweep's folder."""

    @property
    def encoder(self) -> Path:
        """The job's ``encoder.pt``."""
        return self.folder.encoder(self.key)


@dataclass(frozen=True)
class Exported:
    """What :func:`export_encoder` wrote."""

    weights: Path
    """The weights file."""
    sidecar: Path
    """The JSON beside it (``<weights>.json``)."""
    tensors: int
    """How many tensors the weights file holds."""
    info: dict[str, Any]
    """The sidecar's content."""


def finished_job(artifact: Path) -> FinishedJob:
    """The finished pretraining at ``artifact``: an artifact folder ``<out>/artifacts/<key>`` or its ``encoder.pt``.

    The folder of a pretraining sweep (``selection.json``) stands for the winner it recorded.

    Raises:
        UsageError: no such folder, a file other than ``encoder.pt``, a job that is not finished (no
            ``done.json``), or a ``job.json`` that cannot be read; one line naming the path.
    """
    path = artifact
    if path.is_file():
        if path.name != RunFolder.ENCODER:
            raise UsageError(f"{artifact}: not an artifact folder or its {RunFolder.ENCODER}; give "
                             "<out>/artifacts/<key> of a finished pretraining")
        path = path.parent
    if not path.is_dir():
        raise UsageError(f"{artifact}: no such artifact folder; give <out>/artifacts/<key> of a finished pretraining")
    folder, key = RunFolder(path.parent.parent), path.name
    chosen_by = None
    if folder.selection(key).is_file():
        chosen_by, key = key, str(_read_json(folder.selection(key)).get("winner", ""))
        if not key or not folder.artifacts(key).is_dir():
            raise UsageError(f"{folder.selection(chosen_by)}: its winner '{key}' has no artifact folder beside it")
    if not folder.done(key).is_file():
        why = ("it stopped part-way (a checkpoint, no done marker); rerun its benchmark to finish it"
               if folder.checkpoint(key).exists() else f"no {RunFolder.DONE}")
        raise UsageError(f"{folder.artifacts(key)}: not a finished pretraining job ({why})")
    for part in (folder.job_spec(key), folder.encoder(key)):
        if not part.is_file():
            raise UsageError(f"{part}: missing from a finished job's folder; rerun its benchmark to redo the job")
    record = _read_json(folder.job_spec(key))
    if not isinstance(record.get("backbone"), dict) or "name" not in record["backbone"]:
        raise UsageError(f"{folder.job_spec(key)}: names no backbone; not a pretraining job's record")
    return FinishedJob(folder, key, record, chosen_by)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return value


def read_weights(path: Path) -> dict[str, Tensor]:
    """The state dict in ``path``, read with ``weights_only=True`` (unpickles tensors and plain data, no code).

    Raises:
        UsageError: the file is not a torch file, holds objects ``weights_only`` refuses, or is not a flat
            mapping of names to tensors.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or EOFError for a bad file
        first = next(iter(str(exc).strip().splitlines()), type(exc).__name__)
        raise UsageError(f"{path}: not a readable state dict ({first})") from None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, Tensor)
                                                 for k, v in state.items()):
        raise UsageError(f"{path}: not a state dict (a mapping of names to tensors)")
    return dict(state)


def library_module(backbone: nn.Module) -> tuple[nn.Module, str]:
    """The module whose keys an export holds, and the prefix removed: a wrapper's only child, or itself."""
    children = list(backbone.named_children())
    if len(children) == 1:
        name, child = children[0]
        return child, f"{name}."
    return backbone, ""


def check_library(fmt: str, name: str, params: Mapping[str, Any], state: Mapping[str, Tensor]
                  ) -> dict[str, Any]:
    """Check that ``state`` loads into the ``fmt`` library's model of backbone ``name``; how to build that model.

    The model is built (random weights, nothing downloaded) and compared key by key and shape by shape:
    torchvision's may lack nothing but its classifier (its last child module); timm's, built with
    ``num_classes=0``, must match exactly.

    Returns:
        ``{"name": library, "model": model name, "kwargs": create_model keywords, "missing_keys": [...]}``.

    Raises:
        UsageError: the library is not installed, has no model of that name, or its model's keys differ.
    """
    model = name.rsplit(":", 1)[-1]  # a family member ("timm:resnet10t") is its library's model
    kwargs: dict[str, Any] = {}
    if fmt == "torchvision":
        from torchvision import models

        if model not in models.list_models(module=models):
            raise UsageError(f"--format torchvision: backbone '{name}' has no torchvision counterpart (torchvision "
                             "has no classification model of that name); use --format safetensors")
        reference: nn.Module = models.get_model(model, weights=None)
        optional = f"{list(reference.named_children())[-1][0]}."
    else:
        try:
            import timm
        except ImportError:
            raise UsageError("--format timm needs the timm package: pip install timm") from None
        if not timm.is_model(model):
            raise UsageError(f"--format timm: backbone '{name}' has no timm counterpart (timm has no model "
                             f"'{model}'); use --format safetensors")
        raw_kwargs = params.get("model_kwargs", {}) if name.startswith("timm:") else {}
        kwargs = dict(raw_kwargs) if isinstance(raw_kwargs, Mapping) else {}
        reference = timm.create_model(model, pretrained=False, num_classes=0, **kwargs)
        optional = ""
    theirs = reference.state_dict()
    problems = [f"{k} is {tuple(v.shape)} here, {tuple(theirs[k].shape)} there"
                for k, v in state.items() if k in theirs and v.shape != theirs[k].shape]
    problems += [f"{k} is not in it" for k in state if k not in theirs]
    missing = sorted(k for k in theirs if k not in state)
    problems += [f"it has {k}, the encoder does not" for k in missing if not (optional and k.startswith(optional))]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(f"--format {fmt}: backbone '{name}' does not match {fmt}'s {model}: {problems[0]}{more}; "
                         "use --format safetensors")
    return {"name": fmt, "model": model, "kwargs": kwargs, "missing_keys": missing}


def input_size(record: Mapping[str, Any]) -> list[int] | None:
    """``[3, S, S]``: the largest view size the job's augmentations set, else its dataset's ``image_size``."""
    views = record.get("views", {})
    sizes = [v.get("params", {}).get("size") for v in views.values() if isinstance(v, dict)] \
        if isinstance(views, dict) else []
    side = max((s for s in sizes if isinstance(s, int)), default=None)
    if side is None:
        side = record.get("dataset", {}).get("params", {}).get("image_size")
    return [3, side, side] if isinstance(side, int) else None


def recorded_commit(job: FinishedJob) -> str | None:
    """The git commit in the run folder's result rows of this encoder (the earliest row's), or None."""
    keys = {job.key} | ({job.chosen_by} if job.chosen_by else set())
    found: list[tuple[str, str]] = []
    if not job.folder.results_dir.is_dir():
        return None
    for path in parquet_files([job.folder.results_dir]):
        try:
            rows = pq.read_table(path, columns=["pretrain_key", "git_sha", "timestamp"]).to_pylist()
        except Exception:  # a stray or older file: the commit is optional provenance
            continue
        found += [(str(r["timestamp"] or ""), str(r["git_sha"])) for r in rows
                  if r["pretrain_key"] in keys and r["git_sha"]]
    return min(found)[1] if found else None


def sidecar(job: FinishedJob, backbone: nn.Module, fmt: str, prefix: str, library: dict[str, Any] | None, *,
            mean: Sequence[float], std: Sequence[float]) -> dict[str, Any]:
    """The JSON that goes beside the weights (see the module docstring)."""
    record = job.record
    stats_path = job.folder.stats(job.key)
    stats = _read_json(stats_path) if stats_path.is_file() else {}
    return {
        "format": fmt,
        "backbone": record["backbone"],
        "feature_dim": int(getattr(backbone, "feature_dim", 0)) or None,
        "input_size": input_size(record),
        "normalization": {"mean": list(mean), "std": list(std), "input": "RGB in [0, 1], then (x - mean) / std"},
        "removed_prefix": prefix,
        "library": library,
        "method": record.get("method"),
        "label": record.get("label"),
        "seed": record.get("seed"),
        "dataset": record.get("dataset"),
        "steps": stats.get("steps"),
        "job_key": job.key,
        "chosen_by": job.chosen_by,
        "harness_version": record.get("harness"),
        "git_commit": recorded_commit(job),
    }


def export_encoder(artifact: Path, build: BuildBackbone, *, fmt: str = FORMATS[0], output: Path | None = None,
                   mean: Sequence[float], std: Sequence[float]) -> Exported:
    """Export the encoder of the finished pretraining at ``artifact`` (see the module docstring).

    Args:
        artifact: ``<out>/artifacts/<key>`` or its ``encoder.pt``.
        build: makes a fresh backbone from ``job.json``'s name and params; the weights are loaded into
            it strictly, so a file that is not that backbone's is refused.
        fmt: one of :data:`FORMATS`.
        output: the weights file; default ``encoder-<key><suffix>`` in the current folder. The sidecar is
            ``<output>.json``.
        mean, std: the per-channel normalisation the harness applies to images in [0, 1] (recorded).

    Raises:
        UsageError: an unknown format, a bad artifact, weights that do not fit the backbone, a format the
            backbone has no counterpart in, or an output that is a folder or the encoder itself.
    """
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: unknown format; choose one of {', '.join(FORMATS)}")
    job = finished_job(artifact)
    out = output if output is not None else Path(f"encoder-{job.key}{SUFFIXES[fmt]}")
    if out.is_dir():
        raise UsageError(f"-o {out}: is a folder; give the file to write")
    if out.resolve() == job.encoder.resolve():
        raise UsageError(f"-o {out}: is the job's own encoder; write the export elsewhere")
    state = read_weights(job.encoder)
    backbone = build(str(job.record["backbone"]["name"]), dict(job.record["backbone"].get("params") or {}))
    try:
        backbone.load_state_dict(state)
    except RuntimeError as exc:
        first = next(iter(str(exc).strip().splitlines()), "")
        raise UsageError(f"{job.encoder}: does not fit backbone '{job.record['backbone']['name']}' ({first})") from None
    module, prefix = library_module(backbone)
    weights = {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}
    library = (check_library(fmt, job.record["backbone"]["name"], job.record["backbone"].get("params") or {}, weights)
               if fmt != "safetensors" else None)
    info = sidecar(job, backbone, fmt, prefix, library, mean=mean, std=std)
    if fmt == "safetensors":
        _save_safetensors(weights, out, {"format": "pt", "job_key": job.key, "backbone": info["backbone"]["name"]})
    else:
        atomic_torch_save(weights, out)
    side = out.with_name(out.name + ".json")
    atomic_write_text(side, json.dumps(info, indent=2) + "\n")
    return Exported(out, side, len(weights), info)


def _save_safetensors(weights: dict[str, Tensor], out: Path, metadata: dict[str, str]) -> None:
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise UsageError("--format safetensors needs the safetensors package: pip install safetensors "
                         "(or --format torchvision / timm for a .pth state dict)") from None
    atomic_write(out, lambda tmp: save_file(weights, str(tmp), metadata=metadata))
