"""kNN top-1 of every stage of the encoders a run saved: where in the network the classes can be read.

The kNN evaluator probes an encoder's output only. A method whose last layers learn to reconstruct
pixels (masked image modelling with a shallow head: He et al. 2022, arXiv:2111.06377, Table 1a, linear
probing of MAE drops from 73.5 to 65.5 as its decoder goes from 8 blocks to 1; SimMIM's head is one
linear layer) can hold more class information in a middle stage than at its output. This script reads
the finished encoders of a run folder (``artifacts/<key>/job.json`` for the backbone, ``encoder.pt`` as a
state dict, loaded with ``weights_only``), optionally those of the random-init baseline drawn as the
harness draws them (``torch.manual_seed(seed)`` then the backbone), and prints one row per encoder: the
kNN top-1 (the kNN evaluator's defaults: k = 20, T = 0.07, cosine) of each stage's output, pooled to
one vector per image, and of the backbone's own feature.

Stages are the backbone's ``stage_modules()`` (a ViT: the embedding, then one per block, the last with
the final norm); a stage's output is pooled by the mean over its spatial positions (B, C, h, w) or its
tokens (B, L, D). The data are the encoders' own dataset (name and params from ``job.json``): its train split
fits the neighbours and its test split is scored, each cut to the job's ``train_size`` and ``test_size``
as the harness cuts them (``balanced_subset`` with seed 0) unless ``--train-size`` / ``--test-size`` say.

    python benchmarks/analysis/stage_knn.py runs/methods_cifar10_cpu --label "SimMIM (ViT)" --epochs 12 \\
        --random-init --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from statistics import mean
from typing import Any

import torch
from tabulate import tabulate
from torch import Tensor, nn

from ssl_bench.harness import Backbone, BenchError
from ssl_bench.harness.components import DataContext
from ssl_bench.harness.data import ImageSet, balanced_subset, normalize, to_float
from ssl_bench.harness.plugins import Registry, load_registry
from ssl_bench.harness.record.layout import RunFolder
from ssl_bench.plugins.evaluators.detection_model import stage_ends
from ssl_bench.plugins.evaluators.knn import KNN, knn_scores


def pooled(y: Tensor) -> Tensor:
    """One vector per image: (B, C, h, w) -> mean over h, w; (B, L, D) -> mean over L; (B, D) as it is."""
    if y.dim() == 4:
        return y.mean(dim=(2, 3))
    if y.dim() == 3:
        return y.mean(dim=1)
    return y.flatten(1)


@torch.no_grad()
def stage_features(backbone: Backbone, images: Tensor, batch_size: int = 500) -> list[Tensor]:
    """Pooled features of every stage, then the backbone's own feature, of uint8 images (N, 3, H, W).

    Returns:
        S + 1 tensors: one per stage of the S stages, then the output; each (N, D_s), float32.
    """
    caught: dict[int, Tensor] = {}

    def catch(i: int) -> Callable[[nn.Module, Any, Any], None]:
        def keep(_module: nn.Module, _inputs: Any, y: Any) -> None:
            caught[i] = pooled(y).float()
        return keep

    ends = stage_ends(backbone)
    handles = [end.register_forward_hook(catch(i)) for i, end in enumerate(ends)]
    chunks: list[list[Tensor]] = []
    try:
        for x in images.split(batch_size):
            out = backbone(normalize(to_float(x)))
            chunks.append([caught[i] for i in range(len(ends))] + [out.float()])
    finally:
        for h in handles:
            h.remove()
    return [torch.cat(parts) for parts in zip(*chunks)]


def knn_top1(fit: Tensor, fit_labels: Tensor, target: Tensor, target_labels: Tensor, num_classes: int) -> float:
    """Top-1 accuracy (%) of the kNN evaluator's default vote (k = 20, T = 0.07, cosine)."""
    p = KNN.Params()
    votes = knn_scores(fit, fit_labels, target, num_classes=num_classes, k=p.k, temperature=p.temperature)
    return 100.0 * (votes.argmax(dim=1) == target_labels).float().mean().item()


def saved_encoders(folder: RunFolder, label: str | None, epochs: int | None) -> Iterator[dict[str, Any]]:
    """The job specs (``job.json``) of the finished pretraining runs in ``folder``, by label and epochs."""
    for spec_path in sorted(folder.artifacts_dir.glob(f"*/{RunFolder.JOB}")):
        key = spec_path.parent.name
        if not folder.done(key).is_file():
            continue
        try:
            job = json.loads(spec_path.read_text())
            job_epochs, job_label = job["budget"]["epochs"], job["label"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise BenchError(f"{spec_path}: not a job spec the harness wrote ({type(e).__name__}: {e})") from None
        if job.get("kind") == "run" and label in (None, job_label) and epochs in (None, job_epochs):
            yield job | {"_key": key}


def build_backbone(registry: Registry, spec: dict[str, Any]) -> Backbone:
    """A fresh backbone of a job spec's ``backbone`` entry (name and params, validated by its Params)."""
    cls = registry.get("backbones", spec["name"])
    backbone: Backbone = cls(cls.Params.model_validate(spec.get("params", {})))
    return backbone


def load_split(registry: Registry, spec: dict[str, Any], split: str, size: int | None, data_root: Path) -> ImageSet:
    """A split of a job spec's ``dataset``, cut to ``size`` rows as the harness cuts ``train_size`` (None: whole)."""
    cls = registry.get("datasets", spec["name"])
    dataset = cls(cls.Params.model_validate(spec.get("params", {})))
    full = dataset.load(split, DataContext(root=data_root, cache_dir=Path.home() / ".cache" / "ssl-bench"))
    if size is None or size >= len(full):
        return full
    return full.subset(balanced_subset(full.labels, size, seed=0), key=f"{full.key}|balanced{size}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run's output folder (holds artifacts/)")
    ap.add_argument("--label", help="only encoders of this method label (as in the results)")
    ap.add_argument("--epochs", type=int, help="only encoders pretrained for this many epochs")
    ap.add_argument("--random-init", action="store_true",
                    help="also the random-init encoders of the same backbone and seeds, drawn as the harness does")
    ap.add_argument("--train-size", type=int, help="fit rows (default: the job's train_size)")
    ap.add_argument("--test-size", type=int, help="test rows (default: the job's test_size)")
    ap.add_argument("--data-root", type=Path, default=Path(os.environ.get("BENCH_DATA_ROOT", "data")),
                    help="dataset root (default: $BENCH_DATA_ROOT or ./data)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    _, registry = load_registry()
    jobs = list(saved_encoders(RunFolder(args.run), args.label, args.epochs))
    if not jobs:
        raise BenchError(f"{args.run}: no finished encoder"
                         + (f" labelled '{args.label}'" if args.label else "")
                         + (f" of {args.epochs} epochs" if args.epochs is not None else ""))
    datasets = {json.dumps(job["dataset"], sort_keys=True) for job in jobs}
    if len(datasets) > 1:
        raise BenchError(f"{args.run}: the encoders picked were trained on {len(datasets)} different datasets; "
                         "pick one group with --label / --epochs")
    data = jobs[0]["dataset"]
    fit = load_split(registry, data, "train", args.train_size or data.get("train_size"), args.data_root)
    test = load_split(registry, data, "test", args.test_size or data.get("test_size"), args.data_root)

    def trained(job: dict[str, Any]) -> Callable[[], Backbone]:
        def make() -> Backbone:
            backbone = build_backbone(registry, job["backbone"])
            path = RunFolder(args.run).encoder(job["_key"])
            backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return backbone
        return make

    def random(job: dict[str, Any]) -> Callable[[], Backbone]:
        def make() -> Backbone:
            torch.manual_seed(job["seed"])
            return build_backbone(registry, job["backbone"])
        return make

    encoders = [(job["label"], job["budget"]["epochs"], job["seed"], trained(job)) for job in jobs]
    if args.random_init:
        seen = {(json.dumps(j["backbone"], sort_keys=True), j["seed"]): j for j in jobs}
        encoders += [("Random init", 0, j["seed"], random(j)) for j in seen.values()]
    rows: list[list[Any]] = []
    header: list[str] = []
    for label, epochs, seed, make in encoders:
        backbone = make().eval()
        f_fit, f_test = stage_features(backbone, fit.images), stage_features(backbone, test.images)
        scores = [knn_top1(a, fit.labels, b, test.labels, fit.num_classes) for a, b in zip(f_fit, f_test)]
        header = header or [f"stage {i}" for i in range(len(scores) - 1)] + ["output"]
        rows.append([label, epochs, seed, *scores])
        print(f"{label} seed {seed}: " + " ".join(f"{s:.2f}" for s in scores), file=sys.stderr, flush=True)
    groups: dict[tuple[str, int], list[list[Any]]] = {}
    for row in rows:
        groups.setdefault((row[0], row[1]), []).append(row)
    means = [[label, epochs, f"mean of {len(g)}", *(mean(r[3 + i] for r in g) for i in range(len(header)))]
             for (label, epochs), g in groups.items()]
    print(f"kNN top-1 (%) of each stage's pooled output, {data['name']}: {len(fit)} fit / {len(test)} test rows")
    print(tabulate(rows + means, headers=["encoder", "epochs", "seed", *header], tablefmt="github", floatfmt=".2f"))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
