"""Images per second into a training loop: chexviz's cache, lazy decoding, torchxrayvision.

Writes a synthetic CheXpert-format data set (frontal JPEGs of about 390x320, as in the small
release), then times full passes of a shuffled ``DataLoader`` (batch 64, 128x128 images) over
its frontal images for three readers:

- ``chexviz cache``: ``CheXpertDataset(..., cache_dir=...)``, memory-mapped uint8 pixels;
- ``chexviz lazy``: ``CheXpertDataset(...)``, each JPEG decoded and resized on access;
- ``torchxrayvision``: ``xrv.datasets.CheX_Dataset`` on the same files and CSV, with its own
  ``XRayCenterCrop`` + ``XRayResizer(128)`` transforms (its documented preprocessing).

Every configuration is timed ``--repeats`` times, round-robin, after one warm-up pass; the table
reports medians and ratios to torchxrayvision at the same ``num_workers``.

Run with ``OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 python benchmarks/bench_data.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from chexviz.data.dataset import CheXpertDataset
from chexviz.data.synthetic import make_synthetic_chexpert

logger = logging.getLogger("bench_data")


def _xrv_dataset(release: Path, size: int) -> Dataset[Any]:
    import torchvision
    import torchxrayvision as xrv

    transform = torchvision.transforms.Compose(
        [xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(size)]
    )
    return xrv.datasets.CheX_Dataset(
        imgpath=str(release),
        csvpath=str(release / "train.csv"),
        views=["PA", "AP"],
        unique_patients=False,
        transform=transform,
    )


def batch_images(batch: Any) -> torch.Tensor:
    images = batch["img"] if isinstance(batch, dict) else batch[0]
    assert isinstance(images, torch.Tensor)
    return images


def pass_rate(loader: Iterable[Any], min_seconds: float) -> float:
    """Runs whole passes until ``min_seconds`` have elapsed; returns images per second."""
    count = 0
    start = time.perf_counter()
    while True:
        for batch in loader:
            count += batch_images(batch).shape[0]
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return count / elapsed


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "chexviz-bench")
    parser.add_argument("--patients", type=int, default=720)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    release = make_synthetic_chexpert(args.data, n_patients=args.patients, valid_patients=0)
    cache_dir = tempfile.TemporaryDirectory(prefix="chexviz-bench-cache-")
    started = time.perf_counter()
    cached = CheXpertDataset(release, image_size=args.size, cache_dir=cache_dir.name)
    cache_seconds = time.perf_counter() - started
    lazy = CheXpertDataset(release, image_size=args.size, progress=False)
    xrv = _xrv_dataset(release, args.size)
    assert len(xrv) == len(lazy) == len(cached), (len(xrv), len(lazy))  # type: ignore[arg-type]
    readers: dict[str, Dataset[Any]] = {
        "chexviz cache": cached,
        "chexviz lazy": lazy,
        "torchxrayvision": xrv,
    }
    logger.info("%d frontal images; cache built in %.1f s", len(lazy), cache_seconds)

    loaders: dict[tuple[str, int], DataLoader[Any]] = {}
    for workers in args.workers:
        for name, dataset in readers.items():
            loader = DataLoader(
                dataset,
                batch_size=args.batch_size,
                shuffle=True,
                num_workers=workers,
                persistent_workers=workers > 0,
                generator=torch.Generator().manual_seed(0),
            )
            pass_rate(loader, 0.0)  # warm-up: starts workers, fills the page cache
            loaders[(name, workers)] = loader

    rates: dict[tuple[str, int], list[float]] = {key: [] for key in loaders}
    for repeat in range(args.repeats):
        for key, loader in loaders.items():
            rates[key].append(pass_rate(loader, args.min_seconds))
            logger.info("repeat %d %s workers=%d: %.0f img/s", repeat, *key, rates[key][-1])

    medians = {key: statistics.median(values) for key, values in rates.items()}
    rows = []
    for name, workers in loaders:
        baseline = medians[("torchxrayvision", workers)]
        rows.append(
            {
                "reader": name,
                "num_workers": workers,
                "median_images_per_s": round(medians[(name, workers)], 1),
                "runs": [round(value, 1) for value in rates[(name, workers)]],
                "vs_torchxrayvision": round(medians[(name, workers)] / baseline, 2),
            }
        )
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{_cpus()} CPUs, Python {platform.python_version()}, torch {torch.__version__}",
        "images": len(lazy),
        "image_size": args.size,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "cache_build_seconds": round(cache_seconds, 2),
        "rows": rows,
    }
    print(_table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    cache_dir.cleanup()
    return result


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| reader | num_workers | images/s (median) | runs | vs torchxrayvision |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        runs = ", ".join(f"{value:.0f}" for value in row["runs"])
        lines.append(
            f"| {row['reader']} | {row['num_workers']} | {row['median_images_per_s']:.0f} | "
            f"{runs} | {row['vs_torchxrayvision']:.2f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
