"""Memory of a folder dataset held in memory vs streamed from its memory-mapped decode cache.

Writes ``--images`` CIFAR-10 training images as PNG files in class folders (an ``imagefolder``),
then, in a fresh process per mode, loads the train split at ``--image-size`` (decoding it into the
cache the first time), takes the class-balanced half the way ``train_size`` does, extracts
convnet_small features of it chunk by chunk, and prints the process's anonymous resident memory
(RssAnon: memory the process owns, what a larger-than-RAM dataset would exhaust) and file-backed
resident memory (RssFile: page cache the kernel may drop) and the seconds taken.

    python benchmarks/perf/streaming_memory.py --data-root ../shared/data --images 20000 --image-size 64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from ssl_bench.harness.components import DataContext
from ssl_bench.harness.data import balanced_subset
from ssl_bench.harness.plugins import load_registry


def write_folder(data_root: Path, folder: Path, n: int) -> None:
    """``n`` CIFAR-10 training images as ``folder/<class>/<i>.png``."""
    _, registry = load_registry(load_entrypoints=False)
    cls = registry.get("datasets", "cifar10")
    full = cls(cls.Params()).load("train", DataContext(root=data_root, cache_dir=folder / "cache"))
    for i in range(n):
        out = folder / "images" / full.classes[int(full.labels[i])] / f"{i}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(full.images[i].permute(1, 2, 0).numpy()).save(out)


def measure(folder: Path, image_size: int, stream: bool) -> dict[str, float]:
    """Load, subset and encode the folder in this process; memory figures from /proc/self/status."""
    _, registry = load_registry(load_entrypoints=False)
    cls = registry.get("datasets", "imagefolder")
    dataset = cls(cls.Params(path=str(folder / "images"), image_size=image_size, stream=stream, test_fraction=0.1))
    t0 = time.perf_counter()
    train = dataset.load("train", DataContext(root=folder, cache_dir=folder / "cache"))
    half = train.subset(balanced_subset(train.labels, len(train) // 2, seed=0), key="half")
    backbone_cls = registry.get("backbones", "convnet_small")
    encoder = backbone_cls(backbone_cls.Params()).eval()
    from ssl_bench.harness.pipeline.features import extract

    features = extract(encoder, half, torch.device("cpu"))
    seconds = time.perf_counter() - t0
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    mib = {k: int(status[k].split()[0]) / 1024 for k in ("RssAnon", "RssFile", "VmHWM")}
    return {"images": len(train), "encoded": int(features.shape[0]), "decoded_mib": train.images.numel() / 2**20,
            "seconds": seconds, **mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--measure", choices=["memory", "stream"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.folder, args.image_size, args.measure == "stream")))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_folder(args.data_root, folder, args.images)
        for mode in ("memory", "stream", "memory", "stream"):  # the first of each decodes, the second reads the cache
            out = subprocess.run([sys.executable, __file__, "--measure", mode, "--folder", str(folder),
                                  "--image-size", str(args.image_size)], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{mode:6s}: {r['images']} images ({r['decoded_mib']:.0f} MiB decoded), {r['encoded']} encoded in "
                  f"{r['seconds']:.1f} s; RssAnon {r['RssAnon']:.0f} MiB, RssFile {r['RssFile']:.0f} MiB, "
                  f"peak RSS {r['VmHWM']:.0f} MiB")


if __name__ == "__main__":
    main()
