"""The linear probe on cached features vs the same probe trained through the frozen network.

Path A is the harness: features of the encoder are extracted once, the ``linear`` evaluator's whole
lr x weight-decay grid is swept on a validation split carved from the training split, and the
chosen cell is refit on the training split and scored on the test split.

Path B trains the same probe, with the chosen cell, the way a probe is often trained in a training
loop: every step runs the frozen encoder (eval mode, no augmentation) on the batch's images, then a
``torch.optim.SGD`` step (momentum 0.9, weight decay on the weights only) on ``nn.Linear`` through
autograd, with the same cosine schedule, batch size, epochs, shuffling and feature standardisation
(statistics from one pass over the training images). The two differ only in where the features
come from, so their test accuracies should agree; B's time is per grid cell, A's covers the grid.

    python benchmarks/perf/linear_probe.py --data-root ../shared/data \\
        --encoder runs/methods_cifar10_cpu/artifacts/<key>/encoder.pt

Without ``--encoder`` the convnet_small is randomly initialised (seed 0).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness.components import DataContext, EvalTask
from ssl_bench.harness.data import ImageSet, balanced_subset, normalize, to_float
from ssl_bench.harness.pipeline.features import FeatureCache
from ssl_bench.harness.pipeline.specs import BenchmarkSpec
from ssl_bench.harness.pipeline.sweep import sweep_and_test
from ssl_bench.harness.plugins import load_registry


def cifar10(registry: object, root: Path, split: str, n: int) -> ImageSet:
    cls = registry.get("datasets", "cifar10")  # type: ignore[attr-defined]
    full = cls(cls.Params()).load(split, DataContext(root=root, cache_dir=Path.home() / ".cache" / "ssl-bench"))
    return full.subset(balanced_subset(full.labels, n, seed=0), key=f"{split}{n}")


@torch.no_grad()
def frozen_features(encoder: nn.Module, images: Tensor) -> Tensor:
    """The frozen encoder on uint8 images (B, C, H, W) -> (B, D), as the harness extracts them."""
    return encoder(normalize(to_float(images)))


def probe_through_network(encoder: nn.Module, train: ImageSet, test: ImageSet, *, lr: float, weight_decay: float,
                          epochs: int, batch_size: int, seed: int) -> float:
    """Train ``nn.Linear`` on features the frozen encoder computes every step; test top-1 (%)."""
    feats = torch.cat([frozen_features(encoder, chunk) for chunk in train.images.split(batch_size)])
    mean, std = feats.mean(dim=0), feats.std(dim=0, correction=0).clamp_min(1e-6)  # one pass, then discarded
    del feats
    probe = nn.Linear(mean.numel(), train.num_classes)
    nn.init.zeros_(probe.weight), nn.init.zeros_(probe.bias)
    optimizer = torch.optim.SGD([{"params": [probe.weight], "weight_decay": weight_decay},
                                 {"params": [probe.bias], "weight_decay": 0.0}], lr=lr, momentum=0.9)
    total = epochs * math.ceil(len(train) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(train), generator=generator).split(batch_size):
            x = (frozen_features(encoder, train.images[idx]) - mean) / std
            loss = F.cross_entropy(probe(x), train.labels[idx].long())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        logits = torch.cat([probe((frozen_features(encoder, c) - mean) / std) for c in test.images.split(batch_size)])
    return float((logits.argmax(dim=1) == test.labels).float().mean() * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--encoder", type=Path, help="a convnet_small encoder.pt (default: random init, seed 0)")
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--test-size", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    _, registry = load_registry(load_entrypoints=False)
    backbone_cls = registry.get("backbones", "convnet_small")
    encoder = backbone_cls(backbone_cls.Params())
    if args.encoder:
        encoder.load_state_dict(torch.load(args.encoder, map_location="cpu", weights_only=True))
    encoder.eval().requires_grad_(False)
    train = cifar10(registry, args.data_root, "train", args.train_size)
    test = cifar10(registry, args.data_root, "test", args.test_size)
    linear_cls = registry.get("evaluators", "linear")
    linear = linear_cls(linear_cls.Params())
    device = torch.device("cpu")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        features = FeatureCache(encoder, device, Path(tmp))
        features.register_source(train)
        features.register_source(test)
        outcome = sweep_and_test(
            linear, lambda fit, target: EvalTask(encoder=encoder, fit=fit, target=target,
                                                 num_classes=train.num_classes, features=features, device=device,
                                                 seed=args.seed),
            train, test, linear_cls.search_space, metric="top1",
            val_fraction=BenchmarkSpec.model_fields["val_fraction"].default, seed=args.seed)
        cached_s = time.perf_counter() - t0
    cells = math.prod(len(v) for v in linear_cls.search_space.values())
    print(f"A  cached features, {cells}-cell sweep + refit: test top-1 {outcome.metrics['top1']:.2f} "
          f"(chosen {outcome.hparams}), {cached_s:.1f} s")

    t0 = time.perf_counter()
    top1 = probe_through_network(encoder, train, test, lr=outcome.hparams["lr"],
                                 weight_decay=outcome.hparams["weight_decay"], epochs=linear.params.epochs,
                                 batch_size=linear.params.batch_size, seed=args.seed)
    through_s = time.perf_counter() - t0
    print(f"B  through the frozen network, the chosen cell only: test top-1 {top1:.2f}, {through_s:.1f} s "
          f"(a {cells}-cell sweep + refit this way: ~{through_s * (cells + 1):.0f} s)")
    print(f"gap A - B: {outcome.metrics['top1'] - top1:+.2f} points; speed-up of the sweep: "
          f"{through_s * (cells + 1) / cached_s:.0f}x")


if __name__ == "__main__":
    main()
