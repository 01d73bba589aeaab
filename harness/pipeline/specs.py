"""Pydantic models of a benchmark file, and ``load_benchmark(path, profile)``.

The core validates the file's structure and each ``{name, params}`` pair's name; every component
then validates its own ``params`` with its ``Params`` model. Errors cite the file and dotted key::

    transfer.toml: methods[2].params.temperature: Input should be greater than 0 (got -1)
"""

from __future__ import annotations

import copy
import difflib
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ssl_bench.harness.errors import SpecError, UnknownComponentError
from ssl_bench.harness.pipeline.overrides import Override, apply_overrides, blame, parse_override

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    from ssl_bench.harness.plugins import Registry


SCORED_SPLIT = "test"
"""The split evaluations report (the runner scores it); no ``train_split`` may name it."""


class Spec(BaseModel):
    """Base of every benchmark-file table: unknown keys are errors, values immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ComponentRef(Spec):
    """A plugin by name with its parameters (validated by the plugin's own ``Params``)."""

    name: str
    """Registered name of the component."""
    params: dict[str, Any] = {}
    """Parameters of the component; see ``bench schema`` for each component's fields."""


class DatasetRef(ComponentRef):
    """A dataset plugin plus the subset of it a benchmark uses."""

    train_size: Annotated[int, Field(gt=0)] | None = None
    """Class-balanced subset of the training split (seeded, nested across sizes); None = all."""
    test_size: Annotated[int, Field(gt=0)] | None = None
    """Class-balanced subset of the test split; None = all."""
    train_split: str = "train"
    """The split that serves as training data (``"unlabeled"``: STL-10's 100k images for pretraining); never
    ``"test"``, the split every evaluation scores (see :func:`check_training_splits`)."""


class OptimizerSpec(Spec):
    """The pretraining optimizer (the transfer study: SGD momentum 0.9; SimCLR's paper: LARS)."""

    name: Literal["sgd", "adam", "adamw", "lars"] = "sgd"
    """Optimizer."""
    lr: Annotated[float, Field(gt=0)] = 0.1
    """Peak learning rate."""
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    """Momentum (SGD, LARS)."""
    nesterov: bool = False
    """Nesterov momentum (SGD)."""
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    """Weight decay (decoupled for AdamW)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    trust_coefficient: Annotated[float, Field(gt=0)] = 0.001
    """LARS trust coefficient (You et al. 2017, arXiv:1708.03888)."""


class ScheduleSpec(Spec):
    """Learning-rate schedule, stepped every optimizer step."""

    name: Literal["constant", "step", "cosine"] = "cosine"
    """constant; step (lr * gamma every step_epochs, the transfer study: x0.9 every 10 epochs); cosine."""
    warmup_epochs: Annotated[float, Field(ge=0)] = 0.0
    """Linear warm-up from 0, in epochs."""
    step_epochs: Annotated[float, Field(gt=0)] = 10.0
    """Epochs between decays of the step schedule."""
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.9
    """Decay factor of the step schedule."""
    final_lr_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Cosine floor as a fraction of the peak lr."""


class PretrainSpec(Spec):
    """How encoders are pretrained (shared by all methods unless a method overrides it)."""

    dataset: DatasetRef
    """Pretraining dataset."""
    backbone: ComponentRef
    """Encoder architecture."""
    epochs: Annotated[int, Field(ge=0)] = 10
    """Passes over the pretraining set."""
    batch_size: Annotated[int, Field(gt=0)] = 256
    """Images per optimizer step."""
    optimizer: OptimizerSpec = OptimizerSpec()
    """Optimizer."""
    schedule: ScheduleSpec = ScheduleSpec()
    """Learning-rate schedule."""
    augmentations: dict[str, ComponentRef] = {}
    """View name -> pipeline with params, e.g. ``simclr = { name = "simclr", params = { crop_scale_min = 0.25 } }``.
    A view a method names but this table does not is the registered pipeline of that name, with defaults."""
    sweep: dict[Literal["lr", "weight_decay", "momentum"], list[float]] = {}
    """Grid over the optimizer's hyper-parameters: every cell is pretrained, and the best by ``select``
    on a validation split of the pretraining dataset is the encoder that gets evaluated."""
    select: str = "knn.top1"
    """``<evaluator>.<metric>`` that picks the winner of a pretraining sweep (evaluator defaults)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """``bf16`` (mixed precision under autocast), ``fp32``, or ``auto``: bf16 where the device computes it
    natively (CUDA; a CPU with AVX512-BF16 or AMX), else fp32 (pipeline/precision.py)."""
    checkpoint_every_steps: Annotated[int, Field(gt=0)] = 50
    """Steps between resumable checkpoints (not part of the job key: it does not change results)."""
    axes: dict[Literal["batch_size", "epochs", "train_size"], list[Annotated[int, Field(gt=0)]]] = {}
    """Study axes: every method is pretrained at every combination of these values, each its own row
    (the SimCLR-vs-RotNet study: batch sizes; the pretext-tasks study: pretraining subset sizes
    ``train_size``, class-balanced and nested)."""
    snapshot_steps: list[Annotated[int, Field(gt=0)]] = []
    """Also evaluate each run's encoder as it was after these optimizer steps (the SimCLR-vs-RotNet
    study's accuracy vs steps from one run: the schedule is the full run's, not a shorter run's). Saved
    while the run trains; asked for after a run finished, a snapshot is made by replaying the run
    (deterministic) up to its step."""

    @model_validator(mode="after")
    def _snapshots_of_one_run(self) -> PretrainSpec:
        if self.snapshot_steps and self.sweep:
            raise ValueError("snapshot_steps cannot be combined with a pretraining sweep (snapshot the chosen run "
                             "in a file without the sweep)")
        return self


class MethodSpec(Spec):
    """One method of the benchmark."""

    name: str
    """Registered method name."""
    label: str | None = None
    """Row label in the leaderboard (e.g. "SimCLR v2.1"); default: the name."""
    params: dict[str, Any] = {}
    """Parameters of the method."""
    pretrain: dict[str, Any] = {}
    """Overrides of the [pretrain] table for this method (e.g. its own optimizer or epochs)."""


class EvaluationSpec(Spec):
    """One evaluation protocol applied to every pretrained encoder."""

    name: str
    """Registered evaluator name."""
    params: dict[str, Any] = {}
    """Parameters of the evaluator."""
    datasets: list[str | DatasetRef] = []
    """Target datasets; a bare name equal to the pretraining dataset's reuses its table. Default: it."""
    sweep: dict[str, list[float]] = {}
    """Grids replacing the evaluator's default search space, chosen on the validation split."""
    metric: str | None = None
    """Validation metric that picks the sweep's winner; default: the evaluator's (top1)."""


class BenchmarkSpec(Spec):
    """A benchmark file."""

    name: str
    """Benchmark name (results and leaderboard sections carry it)."""
    description: str = ""
    """What the benchmark reproduces."""
    seeds: list[int] = Field(default=[0], min_length=1)
    """Seeds; every method is pretrained and evaluated once per seed."""
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    """Fraction of each training split held out (stratified) to choose hyper-parameters."""
    pretrain: PretrainSpec
    """Shared pretraining settings."""
    methods: list[MethodSpec] = Field(min_length=1)
    """Methods to compare."""
    evaluations: list[EvaluationSpec] = Field(min_length=1)
    """Evaluation protocols."""
    profiles: dict[str, dict[str, Any]] = {}
    """Named overrides (deep-merged into the file by ``--profile NAME``)."""


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in; tables merge recursively, other values replace.

    A table naming a different component (another ``name``) replaces the base table whole: the
    base's ``params`` belong to the base's component (a profile that swaps ImageNet at 224 px for
    CIFAR-10 must not inherit ``image_size = 224``).
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not renames(out[key], value):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def renames(base: dict[str, Any], override: dict[str, Any]) -> bool:
    """True when ``override`` names a different component than ``base``."""
    return "name" in override and "name" in base and override["name"] != base["name"]


def format_loc(loc: tuple[str | int, ...]) -> str:
    """('methods', 2, 'params', 'temperature') -> 'methods[2].params.temperature'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def raise_validation(source: str, err: ValidationError, prefix: tuple[str | int, ...] = (),
                     model: type[BaseModel] | None = None) -> None:
    """Turn a pydantic error into a SpecError citing the file and the dotted key of each problem.

    Given the ``model`` that was validated, an unknown key also gets the closest field name and the list
    of valid fields (``did you mean 'temperature'? valid fields: proj_dim, temperature, views``).
    """
    lines = []
    for e in err.errors():
        loc = format_loc(prefix + tuple(p for p in e["loc"] if not (isinstance(p, str) and "[" in p)))
        got = (f" (got {e['input']!r})"
               if e["type"] not in ("missing", "extra_forbidden") and not isinstance(e["input"], dict) else "")
        hint = _field_hint(model, e["loc"]) if model is not None and e["type"] == "extra_forbidden" else ""
        lines.append(f"{loc}: {e['msg']}{got}{hint}")
    first, *rest = lines
    loc, _, msg = first.partition(": ")
    raise SpecError(source, loc, msg + "".join(f"\n  {source}: {line}" for line in rest)) from None


def _field_hint(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """'; did you mean 'x'? valid fields: ...' for the unknown key ``loc[-1]`` of ``model`` (or a model field of it)."""
    for part in loc[:-1]:
        info = model.model_fields.get(str(part))
        annotation = info.annotation if info is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    fields = sorted(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
    return (f"; did you mean '{close[0]}'?" if close else ";") + f" valid fields: {', '.join(fields) or '(none)'}"


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document at ``path``.

    Raises:
        SpecError: the file is missing, a folder, unreadable, not UTF-8 text or not valid TOML (one line naming it).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(str(path), "", "benchmark file not found") from None
    except IsADirectoryError:
        raise SpecError(str(path), "", "is a folder, not a benchmark file") from None
    except OSError as exc:
        raise SpecError(str(path), "", f"cannot read it: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise SpecError(str(path), f"line {line}", f"not UTF-8 text (byte 0x{data[exc.start]:02x}); a benchmark "
                        "file is TOML, saved as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), "", f"not valid TOML: {exc}") from None


def load_benchmark(path: str | Path, profile: str | None = None, registry: Registry | None = None,
                   overrides: Sequence[str | Override] = ()) -> BenchmarkSpec:
    """Read a benchmark file, apply a profile, then ``overrides`` (``--set KEY=VALUE``, see
    :mod:`~ssl_bench.harness.pipeline.overrides`), validate it (and, given a registry, every plugin's params).

    Raises:
        SpecError: the file or the profile is wrong; under a profile the key is cited as ``profiles.NAME: key``.
        UsageError: an override is malformed, names a missing list entry, or sets a value validation refuses
            (the message starts ``--set KEY=VALUE:``).
    """
    path = Path(path)
    raw = read_toml(path)
    if profile is None:
        return validate_benchmark(raw, path.name, registry, overrides)
    return validate_profile(raw, profile, path.name, registry, overrides)


def load_profiles(path: str | Path, registry: Registry | None = None,
                  overrides: Sequence[str | Override] = ()) -> dict[str | None, BenchmarkSpec]:
    """The file's base spec (key None) and every ``[profiles.NAME]`` applied to it, each validated.

    What ``bench validate FILE`` checks: a profile that only ``--profile NAME`` would have tripped over
    fails here, naming the profile (``methods_cifar10_cpu.toml: profiles.long: methods[0].name: ...``).

    Raises:
        SpecError: the first problem, in the base or in a profile (in file order).
    """
    path = Path(path)
    raw = read_toml(path)
    specs: dict[str | None, BenchmarkSpec] = {None: validate_benchmark(raw, path.name, registry, overrides)}
    for name in specs[None].profiles:
        specs[name] = validate_profile(raw, name, path.name, registry, overrides)
    return specs


def validate_benchmark(raw: dict[str, Any], source: str, registry: Registry | None = None,
                       overrides: Sequence[str | Override] = ()) -> BenchmarkSpec:
    """Validate a parsed benchmark file (and, given a registry, every component's name and params), with
    ``overrides`` applied first; an error on an override's key is reported as that override's."""
    sets = [parse_override(o) if isinstance(o, str) else o for o in overrides]
    try:
        try:
            spec = BenchmarkSpec.model_validate(apply_overrides(raw, sets) if sets else raw)
        except ValidationError as err:
            raise_validation(source, err)
        check_training_splits(spec, source)
        if registry is not None:
            validate_components(spec, registry, source)
    except SpecError as exc:
        raise blame(exc, sets) from None
    return spec


def check_training_splits(spec: BenchmarkSpec, source: str) -> None:
    """Refuse a ``train_split`` that names :data:`SCORED_SPLIT`: pretraining or fitting a probe on the split
    every evaluation reports would score data the encoder or the probe learnt from.

    Raises:
        SpecError: naming the first such key (``pretrain.dataset.train_split``, a method's
            ``pretrain.dataset.train_split`` override, or ``evaluations[j].datasets[k].train_split``).
    """
    found: list[tuple[str, Any]] = [("pretrain.dataset", spec.pretrain.dataset.train_split)]
    for i, method in enumerate(spec.methods):
        dataset = method.pretrain.get("dataset")
        if isinstance(dataset, dict):
            found.append((f"methods[{i}].pretrain.dataset", dataset.get("train_split")))
    for j, evaluation in enumerate(spec.evaluations):
        found += [(f"evaluations[{j}].datasets[{k}]", ds.train_split)
                  for k, ds in enumerate(evaluation.datasets) if isinstance(ds, DatasetRef)]
    for loc, split in found:
        if split == SCORED_SPLIT:
            raise SpecError(source, f"{loc}.train_split", f"'{SCORED_SPLIT}' is the split every evaluation scores; "
                            "train on another split (e.g. 'train')")


def validate_profile(raw: dict[str, Any], profile: str, source: str,
                     registry: Registry | None = None, overrides: Sequence[str | Override] = ()) -> BenchmarkSpec:
    """``raw`` with ``[profiles.<profile>]`` deep-merged in, validated; errors cite ``profiles.<profile>``."""
    profiles = raw.get("profiles", {})
    if not isinstance(profiles, dict):
        raise SpecError(source, "profiles", f"expected a table of [profiles.NAME] tables (got {profiles!r})")
    if profile not in profiles:
        raise SpecError(source, "profiles",
                        f"no profile '{profile}'; available: {', '.join(sorted(profiles)) or '(none)'}")
    where = f"profiles.{profile}"
    if not isinstance(profiles[profile], dict):
        raise SpecError(source, where, f"expected a table of overrides (got {profiles[profile]!r})")
    try:
        return validate_benchmark(deep_merge(raw, profiles[profile]), source, registry, overrides)
    except SpecError as exc:
        message = str(exc).removeprefix(f"{source}: ").replace(f"\n  {source}: ", f"\n  {source}: {where}: ")
        raise SpecError(source, where, message) from None


def axis_points(pre: PretrainSpec) -> list[PretrainSpec]:
    """``pre`` at every combination of its ``axes`` (itself when it has none), axes cleared."""
    names = list(pre.axes)
    points = []
    for values in itertools.product(*pre.axes.values()):
        point = dict(zip(names, values))
        update: dict[str, Any] = {k: v for k, v in point.items() if k != "train_size"} | {"axes": {}}
        if "train_size" in point:
            update["dataset"] = pre.dataset.model_copy(update={"train_size": point["train_size"]})
        points.append(pre.model_copy(update=update))
    return points


def method_pretrain(spec: BenchmarkSpec, index: int, source: str = "benchmark") -> PretrainSpec:
    """The [pretrain] table with method ``index``'s overrides merged in."""
    method = spec.methods[index]
    if not method.pretrain:
        return spec.pretrain
    merged = deep_merge(spec.pretrain.model_dump(), method.pretrain)
    try:
        return PretrainSpec.model_validate(merged)
    except ValidationError as err:
        raise_validation(source, err, ("methods", index, "pretrain"))
        raise  # unreachable


def resolve(registry: Registry, kind: str, ref: ComponentRef, source: str, loc: str) -> Any:
    """Look a component up and validate its params; returns its ``Params`` instance."""
    try:
        cls = registry.get(kind, ref.name)
    except UnknownComponentError as exc:
        raise SpecError(source, f"{loc}.name", str(exc)) from None
    try:
        return cls.Params.model_validate(ref.params)
    except ValidationError as err:
        prefix = tuple(int(p) if p.isdigit() else p
                       for p in loc.replace("[", ".").replace("]", "").split(".")) + ("params",)
        raise_validation(source, err, prefix, model=cls.Params)


def eval_datasets(spec: BenchmarkSpec, evaluation: EvaluationSpec) -> list[DatasetRef]:
    """Target datasets of an evaluation; bare names equal to the pretraining dataset reuse its table."""
    if not evaluation.datasets:
        return [spec.pretrain.dataset]
    out = []
    for ds in evaluation.datasets:
        if isinstance(ds, str):
            ds = spec.pretrain.dataset if ds == spec.pretrain.dataset.name else DatasetRef(name=ds)
        out.append(ds)
    return out


def validate_components(spec: BenchmarkSpec, registry: Registry, source: str) -> None:
    """Check every component name and params against the registry, and the views and sweeps."""
    for i, method in enumerate(spec.methods):
        pre = method_pretrain(spec, i, source)
        params = resolve(registry, "methods", ComponentRef(name=method.name, params=method.params), source,
                         f"methods[{i}]")
        where = f"methods[{i}].pretrain" if method.pretrain else "pretrain"
        for view in getattr(params, "views", ()):
            if view in pre.augmentations:
                resolve(registry, "augmentations", pre.augmentations[view], source, f"{where}.augmentations.{view}")
            elif view not in registry.names("augmentations"):
                raise SpecError(source, f"methods[{i}].params.views",
                                str(UnknownComponentError("augmentation", view, registry.names("augmentations"))))
        resolve(registry, "datasets", pre.dataset, source, f"{where}.dataset")
        if pre.sweep:
            evaluator, _, metric = pre.select.partition(".")
            if evaluator not in registry.names("evaluators") or not metric:
                raise SpecError(source, f"{where}.select",
                                f"expected '<evaluator>.<metric>' with a registered evaluator "
                                f"({', '.join(registry.names('evaluators'))}), got '{pre.select}'")
            if registry.get("evaluators", evaluator).online_probe:
                raise SpecError(source, f"{where}.select", f"'{evaluator}' scores a head trained beside "
                                "pretraining, on the very rows a sweep validates on; select by another evaluator")
        resolve(registry, "backbones", pre.backbone, source, f"{where}.backbone")
    for j, evaluation in enumerate(spec.evaluations):
        resolve(registry, "evaluators", ComponentRef(name=evaluation.name, params=evaluation.params), source,
                f"evaluations[{j}]")
        evaluator_cls = registry.get("evaluators", evaluation.name)
        if evaluator_cls.online_probe:
            check_online_evaluation(spec, registry, source, j)
        allowed = set(evaluator_cls.search_space) | set(evaluator_cls.sweepable)
        for key in evaluation.sweep:
            if key not in allowed:
                raise SpecError(source, f"evaluations[{j}].sweep.{key}",
                                f"'{evaluation.name}' cannot sweep '{key}'; "
                                f"it sweeps: {', '.join(sorted(allowed)) or '(nothing)'}")
        for k, ds in enumerate(eval_datasets(spec, evaluation)):
            resolve(registry, "datasets", ds, source, f"evaluations[{j}].datasets[{k}]")


def check_online_evaluation(spec: BenchmarkSpec, registry: Registry, source: str, j: int) -> None:
    """Refuse what an online-probe evaluation (``Evaluator.online_probe``, e.g. ``online_linear``) cannot do:
    sweep (its head is trained beside pretraining, with ``params.lr``), or score a dataset other than the one
    the methods pretrain on (the head's classes are the pretraining dataset's).

    Raises:
        SpecError: naming ``evaluations[j].sweep`` or the target dataset of ``evaluations[j]``.
    """
    evaluation = spec.evaluations[j]
    name = evaluation.name
    if evaluation.sweep:
        raise SpecError(source, f"evaluations[{j}].sweep", f"'{name}' scores the head trained beside pretraining "
                        "with its params.lr; it has nothing to sweep (remove the sweep table, set params.lr)")
    for k, ds in enumerate(eval_datasets(spec, evaluation)):
        loc = f"evaluations[{j}].datasets" + (f"[{k}]" if evaluation.datasets else "")
        target = resolve(registry, "datasets", ds, source, loc)
        for i, method in enumerate(spec.methods):
            if not registry.get("methods", method.name).trains:
                continue
            pre = method_pretrain(spec, i, source).dataset
            where = f"methods[{i}].pretrain.dataset" if method.pretrain.get("dataset") else "pretrain.dataset"
            if ds.name != pre.name or target != resolve(registry, "datasets", pre, source, where):
                raise SpecError(source, loc, f"'{name}' scores the online head, trained on the pretraining "
                                f"dataset's classes: its dataset must be {where} ('{pre.name}' with the same "
                                f"params), got '{ds.name}'")
