"""Pretraining speed of every registered method: images/s of the real step, FLOPs per image, FLOP/s.

Each method (default params, its own view pipelines) is trained for ``--steps`` optimizer steps by the
harness's own loop (:func:`ssl_bench.harness.pipeline.train.pretrain`: augmentation on the device,
loss, backward, optimizer step, ``on_step_end``), on one backbone and batch size for all. FLOPs are
counted by ``torch.utils.flop_counter.FlopCounterMode`` over one forward (the method's loss) and
backward of a batch: matrix products and convolutions, not the augmentation's element-wise work.
The step runs in ``--precision`` (as ``[pretrain] precision``; ``auto`` by default).
Achieved FLOP/s is FLOPs per image times images per second. A method below 2/3 of SimCLR's FLOP/s is
flagged: its step does more than its arithmetic says (a bug to find with torch.profiler, or a reason
to state).

    python benchmarks/perf/methods.py --data-root ../shared/data --steps 20
    python benchmarks/perf/methods.py --methods simclr,rotnet --backbone resnet18_cifar --steps 5

Time it on a quiet machine: torch with more threads than free cores slows 10-150x. Prints one table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate
from torch.utils.flop_counter import FlopCounterMode

from ssl_bench.harness.components import Batch, DataContext, instantiate_method
from ssl_bench.harness.data import ImageSet, balanced_subset, normalize, to_float
from ssl_bench.harness.errors import BenchError
from ssl_bench.harness.pipeline.specs import ComponentRef, DatasetRef, PretrainSpec
from ssl_bench.harness.pipeline.train import pretrain
from ssl_bench.harness.plugins import Registry, load_registry

SLOW_FRACTION = 2 / 3
VIT = "vit_tiny_cifar"
"""The backbone of the methods that need a vision transformer (their FLOP/s is not comparable with SimCLR's)."""


def load_images(registry: Registry, data_root: Path, n: int) -> ImageSet:
    """``n`` class-balanced CIFAR-10 training images when they are under the data root, else shapes."""
    ctx = DataContext(root=data_root, cache_dir=Path.home() / ".cache" / "ssl-bench")
    try:
        cls = registry.get("datasets", "cifar10")
        full = cls(cls.Params()).load("train", ctx)
    except Exception:
        cls = registry.get("datasets", "shapes")
        full = cls(cls.Params(n_train=max(n, 256))).load("train", ctx)
    idx = balanced_subset(full.labels, min(n, len(full)), seed=0)
    return ImageSet(full.images[idx], full.labels[idx], full.classes, f"perf:{full.key}:{n}")


def build(registry: Registry, name: str, backbone: str, data: ImageSet) -> tuple[Any, dict[str, Any]]:
    """The method with default params on a fresh backbone, and its view pipelines (default params)."""
    torch.manual_seed(0)
    cls = registry.get("methods", name)
    bb_cls = registry.get("backbones", backbone)
    method = instantiate_method(cls, cls.Params(), bb_cls(bb_cls.Params()), num_classes=data.num_classes,
                                num_samples=len(data))
    pipelines = {}
    for view in method.views:
        aug = registry.get("augmentations", view)
        pipelines[view] = aug(aug.Params())
    return method, pipelines


def flops_per_image(method: Any, pipelines: dict[str, Any], data: ImageSet, batch_size: int,
                    device: torch.device) -> float:
    """Forward + backward FLOPs of one batch of the method's loss, per image."""
    method.to(device).train()
    idx = torch.arange(batch_size)
    x = to_float(data.images[idx].to(device))
    g = torch.Generator(device=device).manual_seed(0)
    views = [normalize(pipelines[v](x, generator=g)) for v in method.views]
    batch = Batch(views=views, labels=data.labels[idx].to(device), indices=idx.to(device))
    with FlopCounterMode(display=False) as counter:
        method.loss(batch).backward()
    method.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch_size


def backbone_for(registry: Registry, name: str, backbone: str, data: ImageSet) -> str:
    """``backbone``, or :data:`VIT` for a method that needs a vision transformer (MAE, SimMIM)."""
    try:
        build(registry, name, backbone, data)
    except BenchError:
        return VIT
    return backbone


def measure(registry: Registry, name: str, args: argparse.Namespace, data: ImageSet,
            device: torch.device) -> dict[str, Any]:
    backbone = backbone_for(registry, name, args.backbone, data)
    method, pipelines = build(registry, name, backbone, data)
    flops = flops_per_image(method, pipelines, data, args.batch_size, device)
    method, pipelines = build(registry, name, backbone, data)  # untouched weights for the timed run
    spec = PretrainSpec(dataset=DatasetRef(name="perf"), backbone=ComponentRef(name=backbone), epochs=1,
                        batch_size=args.batch_size, checkpoint_every_steps=10**9, precision=args.precision)
    with tempfile.TemporaryDirectory() as workdir:
        t0 = time.perf_counter()
        stats = pretrain(method, pipelines, data, spec, seed=0, device=device, workdir=Path(workdir),
                         progress=False)
        wall = time.perf_counter() - t0
    return {"method": name, "backbone": backbone, "precision": stats.precision, "images/s": stats.images_per_s,
            "GFLOP/img": flops / 1e9,
            "GFLOP/s": flops * stats.images_per_s / 1e9, "steps": stats.steps, "wall s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path("data"))
    ap.add_argument("--backbone", default="convnet_small")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="as [pretrain] precision (default auto: bf16 where the device computes it natively)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per method (one epoch of them)")
    ap.add_argument("--methods", default="", help="comma-separated names (default: every method that trains)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    _, registry = load_registry()
    names = [n for n in args.methods.split(",") if n] or [
        n for n in sorted(registry.names("methods")) if registry.get("methods", n).trains]
    data = load_images(registry, args.data_root, args.batch_size * args.steps)
    device = torch.device(args.device)
    rows = [measure(registry, name, args, data, device) for name in names]
    reference = next((r["GFLOP/s"] for r in rows if r["method"] == "simclr"), None)
    for r in rows:
        r["vs SimCLR FLOP/s"] = r["GFLOP/s"] / reference if reference else float("nan")
        r["note"] = "below 2/3 of SimCLR's FLOP/s" if reference and r["vs SimCLR FLOP/s"] < SLOW_FRACTION else ""
    print(f"{args.backbone}, batch {args.batch_size}, {args.steps} steps, {device}, "
          f"{torch.get_num_threads()} threads, {len(data)} images ({data.key.split(':')[1]})")
    print(tabulate(rows, headers="keys", floatfmt=".3g", tablefmt="github"))


if __name__ == "__main__":
    main()
