"""The CheXlocalize protocol on a validation-sized set: scoring time, memory, tuning speed-up.

A stand-in for CheXlocalize's validation set is generated: 234 CXRs at the original sizes of
CheXpert's full-resolution images (2320x2828 and the like), 10 pathologies, each positive with
probability 0.275 (about the 643 annotations on 234 CXRs of the real set) and then drawn as
an ellipse at its anatomical place, written as ``gt_segmentations_val.json`` with
``write_chexlocalize``; CXRs without a finding are left out of the file, as in the real one.
Heatmaps are 10x10 (DenseNet-121's last feature map at 320 px) with a bump near the finding
plus noise, and each pair gets a model probability.

Measured, in one run:

1. **Scoring**: ``score_chexlocalize`` of all 234 CXRs from the JSON file (true-positive
   slice, Otsu, 1,000 bootstrap resamples), with and without the two baselines; and the peak
   resident memory of a fresh process that reads the file and scores (with baselines), beside
   that of a process that only imports chexviz.
2. **Tuning**: ``tune_chexlocalize`` (the reference's 7 thresholds and 9 probability cutoffs)
   against a straightforward loop that follows the reference scripts
   (``tune_heatmap_threshold.py``, ``tune_probability_threshold.py``): for every candidate,
   every CXR's heatmap is resized, normalised and segmented again and its ground truth
   decoded again. The loop uses chexviz's own ``segment_heatmap`` and reader, so the ratio is
   the algorithm's, not a library's. The loop takes about 40 minutes for 234 CXRs here, so both
   are timed on the first ``--subset`` CXRs, round-robin, ``--rounds`` times (medians), and
   ``tune_chexlocalize`` also on all 234.

Run with ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_chexlocalize.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from chexviz.data.chexlocalize import LOCALIZATION_LABELS, read_chexlocalize, write_chexlocalize
from chexviz.evaluate.chexlocalize import (
    DEFAULT_CUTOFFS,
    DEFAULT_THRESHOLDS,
    score_chexlocalize,
    segment_heatmap,
    tune_chexlocalize,
)

SIZES = [(2320, 2828), (2022, 2021), (2828, 2320), (2544, 3056), (2048, 2500), (3000, 2500)]
# Centre (x, y) and half axes (a, b) of each finding, as fractions of the width / height.
PLACES = {
    "Enlarged Cardiomediastinum": (0.50, 0.40, 0.10, 0.22),
    "Cardiomegaly": (0.55, 0.62, 0.20, 0.14),
    "Lung Opacity": (0.30, 0.50, 0.10, 0.12),
    "Lung Lesion": (0.68, 0.35, 0.03, 0.03),
    "Edema": (0.50, 0.50, 0.35, 0.20),
    "Consolidation": (0.70, 0.65, 0.10, 0.08),
    "Atelectasis": (0.30, 0.68, 0.12, 0.04),
    "Pneumothorax": (0.25, 0.20, 0.08, 0.12),
    "Pleural Effusion": (0.75, 0.78, 0.12, 0.06),
    "Support Devices": (0.48, 0.30, 0.02, 0.25),
}
POSITIVE_RATE = 0.275
GRID = 10


def make_findings(seed: int, cxrs: int) -> tuple[dict, dict, dict, dict[str, tuple[int, int]]]:
    """Findings (ellipses), heatmaps, probabilities and sizes of the stand-in set."""
    rng = np.random.default_rng(seed)
    findings: dict[str, dict[str, tuple[float, ...]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    heatmaps: dict[tuple[str, str], torch.Tensor] = {}
    probabilities: dict[tuple[str, str], float] = {}
    for index in range(cxrs):
        cxr = f"patient{64541 + index:05d}_study1_view1_frontal"
        sizes[cxr] = SIZES[int(rng.integers(len(SIZES)))]
        findings[cxr] = {}
        for label in LOCALIZATION_LABELS:
            x, y, a, b = PLACES[label]
            jitter = rng.normal(0, 0.03, 2)
            positive = rng.random() < POSITIVE_RATE
            if positive:
                findings[cxr][label] = (x + jitter[0], y + jitter[1], a, b)
            grid = np.mgrid[0:GRID, 0:GRID] / GRID + 0.5 / GRID
            bump = np.exp(-((grid[1] - x - jitter[0]) ** 2 + (grid[0] - y - jitter[1]) ** 2) / 0.02)
            noise = rng.random((GRID, GRID))
            heat = (bump * (1.5 if positive else 0.3) + noise).astype(np.float32)
            heatmaps[(cxr, label)] = torch.from_numpy(heat)
            probabilities[(cxr, label)] = float(
                np.clip(rng.normal(0.6 if positive else 0.3, 0.2), 0, 1)
            )
    return findings, heatmaps, probabilities, sizes


def write_truth(folder: Path, findings: dict, sizes: dict[str, tuple[int, int]]) -> Path:
    """The findings drawn at the original size and written as gt_segmentations_val.json."""

    def masks() -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        for cxr, drawn in findings.items():
            if not drawn:
                continue
            height, width = sizes[cxr]
            out = {}
            for label, (x, y, a, b) in drawn.items():
                mask = np.zeros((height, width), dtype=np.uint8)
                centre = (round(x * width), round(y * height))
                cv2.ellipse(mask, centre, (round(a * width), round(b * height)), 0, 0, 360, 1, -1)
                out[label] = mask
            yield cxr, out

    return write_chexlocalize(folder / "gt_segmentations_val.json", masks())


def loop_tuning(heatmaps: dict, ground_truth, probabilities: dict, cxrs: list[str]) -> None:
    """The reference scripts' algorithm: one pass over every image per candidate."""
    for label in LOCALIZATION_LABELS:
        for threshold in DEFAULT_THRESHOLDS:
            ious = []
            for cxr in cxrs:
                if cxr not in ground_truth:
                    continue
                truth = ground_truth[cxr][label]
                pred = segment_heatmap(heatmaps[(cxr, label)], truth.shape, threshold=threshold)
                if pred.any() and truth.any():
                    ious.append((pred & truth).sum() / (pred | truth).sum())
        for cutoff in DEFAULT_CUTOFFS:
            ious = []
            for cxr in cxrs:
                if cxr in ground_truth:
                    truth = ground_truth[cxr][label]
                else:
                    truth = np.zeros(SIZE_OF[cxr], dtype=bool)
                if probabilities[(cxr, label)] >= cutoff:
                    pred = segment_heatmap(heatmaps[(cxr, label)], truth.shape)
                else:
                    pred = np.zeros(truth.shape, dtype=bool)
                union = (pred | truth).sum()
                ious.append((pred & truth).sum() / union if union else math.nan)


SIZE_OF: dict[str, tuple[int, int]] = {}


def peak_memory(path: Path, seed: int, cxrs: int) -> tuple[float, float, float]:
    """Resident memory (MB) of a fresh process that reads the file and scores it.

    Returns the peak over the whole process (imports included: a CUDA build of torch maps
    hundreds of MB while importing), the resident size just before scoring, and the peak while
    reading and scoring (the kernel's high-water mark is reset first, Linux 4.0+).
    """
    code = f"""
import resource, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import bench_chexlocalize as b
from chexviz.data.chexlocalize import read_chexlocalize
from chexviz.evaluate.chexlocalize import score_chexlocalize
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
_, heatmaps, _, _ = b.make_findings({seed}, {cxrs})
whole = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS:")
score_chexlocalize(heatmaps, read_chexlocalize({str(path)!r}))
whole = max(whole, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(whole, before, status("VmHWM:"))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    whole, before, during = (float(v) for v in out.stdout.strip().splitlines()[-1].split())
    return whole, before, during


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cxrs", type=int, default=234)
    parser.add_argument("--subset", type=int, default=12, help="CXRs for the loop comparison")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-only", action="store_true", help="only the memory probe")
    args = parser.parse_args()
    if args.memory_only:
        with tempfile.TemporaryDirectory() as work:
            findings, _, _, sizes = make_findings(args.seed, args.cxrs)
            memory(write_truth(Path(work), findings, sizes), args)
        return
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, OpenCV {cv2.__version__}"
    )
    print(f"torch threads {torch.get_num_threads()}, {platform.machine()}")
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        findings, heatmaps, probabilities, sizes = make_findings(args.seed, args.cxrs)
        path = write_truth(Path(work), findings, sizes)
        SIZE_OF.update(sizes)
        ground_truth = read_chexlocalize(path)
        pairs = sum(
            not ground_truth.is_empty(cxr, label)
            for cxr in ground_truth
            for label in LOCALIZATION_LABELS
        )
        print(
            f"set: {args.cxrs} CXRs, {len(ground_truth)} with a finding, {pairs} positive pairs, "
            f"file {path.stat().st_size / 1e6:.1f} MB, "
            f"made in {time.perf_counter() - started:.0f} s"
        )

        for baselines in (False, True):
            started = time.perf_counter()
            scores = score_chexlocalize(heatmaps, read_chexlocalize(path), baselines=baselines)
            seconds = time.perf_counter() - started
            print(f"scoring {args.cxrs} CXRs, baselines={baselines}: {seconds:.1f} s")
        mean = scores.summary.loc["mean"]
        print(
            f"  mean mIoU {mean['miou']:.3f} (prior {mean['prior_miou']:.3f}, chance "
            f"{mean['chance_miou']:.3f}); hit rate {mean['hit_rate']:.3f}"
        )

        subset = sorted(sizes)[: args.subset]
        extra = {cxr: sizes[cxr] for cxr in sizes if cxr not in ground_truth}
        sub_heatmaps = {key: value for key, value in heatmaps.items() if key[0] in subset}
        # The subset's own file, so that it is read lazily like the whole set's.
        kept = {cxr: entry for cxr, entry in json.loads(path.read_text()).items() if cxr in subset}
        (Path(work) / "subset.json").write_text(json.dumps(kept))
        sub_truth = read_chexlocalize(Path(work) / "subset.json")
        sub_sizes = {cxr: sizes[cxr] for cxr in subset if cxr not in ground_truth}
        loop_times, ours_times = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            loop_tuning(heatmaps, ground_truth, probabilities, subset)
            loop_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            tune_chexlocalize(sub_heatmaps, sub_truth, probabilities=probabilities, sizes=sub_sizes)
            ours_times.append(time.perf_counter() - started)
        loop, ours = statistics.median(loop_times), statistics.median(ours_times)
        print(
            f"tuning {len(subset)} CXRs ({len(sub_truth)} with a finding), median of "
            f"{args.rounds}: per-candidate loop {loop:.1f} s, tune_chexlocalize {ours:.2f} s, "
            f"ratio {loop / ours:.1f}x"
        )
        started = time.perf_counter()
        tuning = tune_chexlocalize(heatmaps, ground_truth, probabilities=probabilities, sizes=extra)
        full = time.perf_counter() - started
        print(
            f"tune_chexlocalize, all {args.cxrs} CXRs: {full:.1f} s (the loop, extrapolated "
            f"from {len(subset)} CXRs: {loop * args.cxrs / len(subset) / 60:.0f} min)"
        )
        print(f"  thresholds {tuning.thresholds}")

        memory(path, args)


def memory(path: Path, args: argparse.Namespace) -> None:
    whole, before, during = peak_memory(path, args.seed, args.cxrs)
    print(
        f"memory of reading + scoring {args.cxrs} CXRs (baselines on): peak RSS of the process "
        f"{whole:.0f} MB; {before:.0f} MB before scoring, peak {during:.0f} MB while reading and "
        f"scoring (+{during - before:.0f} MB)"
    )


if __name__ == "__main__":
    main()
