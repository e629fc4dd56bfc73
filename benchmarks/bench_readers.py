"""Reading speed of the MIMIC-CXR-JPG and NIH readers, beside CheXpert's and torchxrayvision's.

Writes synthetic data sets in the three layouts (``make_synthetic_chexpert``,
``make_synthetic_mimic``, ``make_synthetic_nih``), then times full passes of a shuffled
``DataLoader`` (batch 64, 128x128, no workers) over their frontal images:

- ``CheXpertDataset``, ``MIMICCXRDataset``, ``NIHChestXray14Dataset``, each lazy (decode on
  access) and cached (memory-mapped uint8 pixels);
- torchxrayvision's ``NIH_Dataset`` and ``MIMIC_Dataset`` on the same files and tables, with
  their documented ``XRayCenterCrop`` + ``XRayResizer(128)`` transforms.

Then it times ``load_image`` (decode and resize to 128) of one 1024x1024 radiograph stored as
an 8-bit PNG and as DICOM (12-bit uncompressed, RLE Lossless, JPEG 2000 Lossless).

Every case runs ``--repeats`` times round-robin after a warm-up; the tables give medians and
ratios to the peer measured in the same run. Run with
``OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 python benchmarks/bench_readers.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_data import pass_rate  # the same timing loop as the CheXpert data benchmark
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from chexviz.data.dataset import CheXpertDataset
from chexviz.data.dicom import write_dicom
from chexviz.data.images import load_image
from chexviz.data.mimic import MIMICCXRDataset
from chexviz.data.nih import NIHChestXray14Dataset
from chexviz.data.synthetic import make_synthetic_chexpert
from chexviz.data.synthetic_external import make_synthetic_mimic, make_synthetic_nih

logger = logging.getLogger("bench_readers")


def _xrv(kind: str, root: Path, size: int) -> Dataset[Any] | str:
    """torchxrayvision's reader of ``kind`` on ``root``, or why it cannot run."""
    try:
        import torchvision
        import torchxrayvision as xrv
    except ImportError as error:
        return f"torchxrayvision not installed ({error})"
    transform = torchvision.transforms.Compose(
        [xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(size)]
    )
    if kind == "nih":
        return xrv.datasets.NIH_Dataset(  # type: ignore[no-any-return]
            imgpath=str(root / "images"),
            csvpath=str(root / "Data_Entry_2017_v2020.csv"),
            bbox_list_path=str(root / "BBox_List_2017.csv"),
            views=["PA", "AP"],
            unique_patients=False,
            transform=transform,
        )
    return xrv.datasets.MIMIC_Dataset(  # type: ignore[no-any-return]
        imgpath=str(root / "files"),
        csvpath=str(root / "mimic-cxr-2.0.0-chexpert.csv.gz"),
        metacsvpath=str(root / "mimic-cxr-2.0.0-metadata.csv.gz"),
        views=["PA", "AP"],
        unique_patients=False,
        transform=transform,
    )


def _round_robin(cases: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    for run in cases.values():
        run()  # warm-up
    results: dict[str, list[float]] = {name: [] for name in cases}
    for repeat in range(repeats):
        for name, run in cases.items():
            results[name].append(run())
            logger.info("repeat %d %s: %.3g", repeat, name, results[name][-1])
    return results


def _readers(args: argparse.Namespace, work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    chexpert = make_synthetic_chexpert(
        work / "chexpert", n_patients=args.patients, valid_patients=0
    )
    mimic = make_synthetic_mimic(work / "mimic", patients=args.patients)
    nih = make_synthetic_nih(work / "nih", patients=args.patients, image_size=args.nih_size)
    size, cache = args.size, work / "cache"
    common = {"image_size": size, "progress": False}
    built: dict[str, float] = {}
    datasets: dict[str, Dataset[Any]] = {}
    for name, make in (
        ("CheXpert", lambda **kw: CheXpertDataset(chexpert, **kw)),
        ("MIMIC", lambda **kw: MIMICCXRDataset(mimic, **kw)),
        ("NIH", lambda **kw: NIHChestXray14Dataset(nih, **kw)),
    ):
        datasets[f"{name} lazy"] = make(**common)
        started = time.perf_counter()
        datasets[f"{name} cached"] = make(cache_dir=cache, **common)
        built[name] = time.perf_counter() - started
    skipped = {}
    for name, kind, root in (
        ("torchxrayvision NIH", "nih", nih),
        ("torchxrayvision MIMIC", "mimic", mimic),
    ):
        reader = _xrv(kind, root, size)
        if isinstance(reader, str):
            skipped[name] = reader
        else:
            datasets[name] = reader
    counts = {name: len(data) for name, data in datasets.items()}  # type: ignore[arg-type]
    logger.info("images per reader: %s", counts)
    loaders = {
        name: DataLoader(
            data, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
        )
        for name, data in datasets.items()
    }
    cases = {
        name: (lambda loader=loader: pass_rate(loader, args.min_seconds))
        for name, loader in loaders.items()
    }
    rates = _round_robin(cases, args.repeats)
    peers = {"MIMIC": "torchxrayvision MIMIC", "NIH": "torchxrayvision NIH", "CheXpert": None}
    rows = []
    for name, values in rates.items():
        median = statistics.median(values)
        family = name.split()[0] if not name.startswith("torchxrayvision") else name.split()[1]
        own = f"{family} lazy"
        lazy = statistics.median(rates[own]) if own in rates and name != peers.get(family) else None
        peer = peers.get(family)
        xrv_rate = statistics.median(rates[peer]) if peer in rates else None
        rows.append(
            {
                "reader": name,
                "images": counts[name],
                "median_images_per_s": round(median, 1),
                "runs": [round(v, 1) for v in values],
                "vs_chexpert_lazy": round(median / statistics.median(rates["CheXpert lazy"]), 2),
                "vs_torchxrayvision": round(median / xrv_rate, 2) if xrv_rate else None,
                "vs_own_lazy": round(median / lazy, 2) if lazy else None,
            }
        )
    return rows, {
        "cache_build_seconds": {k: round(v, 2) for k, v in built.items()},
        "skipped": skipped,
    }


def _decoders(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    side = 1024
    # A smooth picture with noise, like a radiograph: compressible, not constant.
    ramp = np.add.outer(np.linspace(0, 1, side), np.linspace(0, 1, side)) / 2
    twelve = np.clip(ramp * 3500 + rng.normal(0, 40, (side, side)), 0, 4095).astype(np.uint16)
    eight = (twelve >> 4).astype(np.uint8)
    files = {"PNG 8-bit": work / "x.png"}
    Image.fromarray(eight).save(files["PNG 8-bit"])
    for name, syntax in (
        ("DICOM 12-bit uncompressed", "1.2.840.10008.1.2.1"),
        ("DICOM 12-bit RLE Lossless", "1.2.840.10008.1.2.5"),
        ("DICOM 12-bit JPEG 2000 Lossless", "1.2.840.10008.1.2.4.90"),
    ):
        files[name] = write_dicom(
            work / f"{syntax}.dcm", twelve, bits_stored=12, transfer_syntax=syntax
        )

    def timer(path: Path) -> Callable[[], float]:
        def run() -> float:
            start = time.perf_counter()
            for _ in range(args.decode_loops):
                load_image(path, size=args.size)
            return (time.perf_counter() - start) / args.decode_loops * 1000

        return run

    times = _round_robin({name: timer(path) for name, path in files.items()}, args.repeats)
    png = statistics.median(times["PNG 8-bit"])
    return [
        {
            "file": name,
            "bytes": files[name].stat().st_size,
            "median_ms": round(statistics.median(values), 2),
            "runs": [round(v, 2) for v in values],
            "vs_png": round(statistics.median(values) / png, 2),
        }
        for name, values in times.items()
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--nih-size", type=int, default=1024, help="side of the NIH PNGs")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--decode-loops", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("openjpeg").setLevel(logging.WARNING)  # one line per encoded tile
    with tempfile.TemporaryDirectory(prefix="chexviz-bench-readers-") as folder:
        work = Path(folder)
        rows, extra = _readers(args, work)
        decoders = _decoders(args, work)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}",
        "image_size": args.size,
        "repeats": args.repeats,
        "readers": rows,
        "decoders": decoders,
        **extra,
    }
    print(_tables(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return result


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _tables(result: dict[str, Any]) -> str:
    lines = [
        "| reader | images | images/s (median) | runs | vs own lazy | vs CheXpert lazy "
        "| vs torchxrayvision |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for row in result["readers"]:
        runs = ", ".join(f"{v:.0f}" for v in row["runs"])
        lines.append(
            f"| {row['reader']} | {row['images']} | {row['median_images_per_s']:.0f} | {runs} | "
            f"{_ratio(row['vs_own_lazy'])} | {_ratio(row['vs_chexpert_lazy'])} | "
            f"{_ratio(row['vs_torchxrayvision'])} |"
        )
    lines += [
        "",
        "| file (1024x1024) | bytes | ms per load_image (median) | runs | vs PNG |",
        "|---|---:|---:|---|---:|",
    ]
    for row in result["decoders"]:
        runs = ", ".join(f"{v:.1f}" for v in row["runs"])
        lines.append(
            f"| {row['file']} | {row['bytes']} | {row['median_ms']:.1f} | {runs} "
            f"| {row['vs_png']:.2f}x |"
        )
    for name, reason in result.get("skipped", {}).items():
        lines.append(f"\nnot run: {name}: {reason}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
