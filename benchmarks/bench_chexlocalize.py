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
   the algorithm's, not a library's. The loop takes tens of minutes for 234 CXRs here, so both
   are timed on the first ``--subset`` CXRs, round-robin, ``--rounds`` times (medians), and
   ``tune_chexlocalize`` also on all 234. The same rounds time the floor of any one-pass tuner
   that keeps the reference's bits: each map resized and normalised once, nothing else; the
   loop's time over that floor bounds the ratio. ``--profile`` adds a cProfile summary of one
   ``tune_chexlocalize`` run on the subset.
3. **Comparing methods**: ``--methods`` (default 4) "methods", the same findings with more or
   less noise in the maps, each tuned on the first half of the CXRs (``tune_chexlocalize``,
   thresholds) and scored on the second (``score_chexlocalize`` with the tuned thresholds,
   both baselines, 1,000 resamples): the calls ``compare_methods`` makes per method once the
   maps exist. Making the maps is the model's cost and is not timed.

Run with ``OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_chexlocalize.py``
(the ratio depends on the thread count: torch spreads the resize, most of the loop's work,
over every thread, while the one-pass tuner's NumPy work runs on one).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import platform
import pstats
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

from chexviz.data.chexlocalize import (
    LOCALIZATION_LABELS,
    CheXlocalizeGroundTruth,
    read_chexlocalize,
    write_chexlocalize,
)
from chexviz.evaluate.chexlocalize import (
    DEFAULT_CUTOFFS,
    DEFAULT_THRESHOLDS,
    score_chexlocalize,
    segment_heatmap,
    tune_chexlocalize,
)
from chexviz.evaluate.chexlocalize._pixels import Canvas, normalise_

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


def make_findings(
    seed: int, cxrs: int, noise: float = 1.0
) -> tuple[dict, dict, dict, dict[str, tuple[int, int]]]:
    """Findings (ellipses), heatmaps, probabilities and sizes of the stand-in set.

    ``noise`` scales the maps' noise only: the random draws are the same, so every ``noise``
    gives the same findings, sizes and probabilities (one "method" per noise level).
    """
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
            heat = (bump * (1.5 if positive else 0.3) + noise * rng.random((GRID, GRID))).astype(
                np.float32
            )
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


def resize_only(heatmaps: dict, sizes: dict[str, tuple[int, int]]) -> None:
    """The floor of one-pass tuning: every map resized and normalised once, into a canvas."""
    canvas = Canvas()
    for (cxr, _), heatmap in heatmaps.items():
        normalise_(canvas.resize(heatmap, sizes[cxr]))


def fmt(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


def subset_truth(path: Path, cxrs: list[str], out: Path) -> CheXlocalizeGroundTruth:
    """The file's entries of ``cxrs`` in a file of their own, read lazily like the whole."""
    kept = {cxr: entry for cxr, entry in json.loads(path.read_text()).items() if cxr in cxrs}
    out.write_text(json.dumps(kept))
    return read_chexlocalize(out)


def profile(heatmaps: dict, ground_truth, probabilities: dict, sizes: dict) -> None:
    """cProfile of one tune_chexlocalize call: the functions taking the most time."""
    profiler = cProfile.Profile()
    profiler.enable()
    tune_chexlocalize(heatmaps, ground_truth, probabilities=probabilities, sizes=sizes)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(12)
    print("  profile of tune_chexlocalize (cProfile, by own time):")
    for line in out.getvalue().splitlines():
        if line.strip() and not line.startswith(("   Ordered", "   List reduced")):
            print("   ", line.rstrip())


def compare(
    path: Path,
    probabilities: dict,
    sizes: dict[str, tuple[int, int]],
    work: Path,
    args: argparse.Namespace,
) -> None:
    """Several methods on the same CXRs: each tuned on a validation half, scored on the rest.

    A method is a noise level of the synthetic maps (the same findings, differently blurred
    evidence). Per method, the calls ``compare_methods`` makes once its maps exist:
    ``tune_chexlocalize`` on the validation CXRs (thresholds, true-positive slice) and
    ``score_chexlocalize`` on the test CXRs with the tuned thresholds, both baselines and
    1,000 bootstrap resamples. Making the maps (the model's forward and backward passes) is
    not timed: it is the method's own cost, not the protocol's.
    """
    cxrs = sorted(sizes)
    half = len(cxrs) // 2
    validation = subset_truth(path, cxrs[:half], work / "validation.json")
    test = subset_truth(path, cxrs[half:], work / "test.json")
    noises = [0.5 * (k + 1) for k in range(args.methods)]
    seconds: dict[float, float] = {}
    summary: dict[float, float] = {}
    started = time.perf_counter()
    for noise in noises:
        _, heatmaps, _, _ = make_findings(args.seed, args.cxrs, noise=noise)
        begun = time.perf_counter()
        tuning = tune_chexlocalize(
            {key: value for key, value in heatmaps.items() if key[0] in validation}, validation
        )
        scores = score_chexlocalize(
            {key: value for key, value in heatmaps.items() if key[0] in cxrs[half:]},
            test,
            thresholds=tuning.thresholds,
            probabilities=probabilities,
        )
        seconds[noise] = time.perf_counter() - begun
        summary[noise] = float(scores.summary.loc["mean", "miou"])
    total = time.perf_counter() - started
    print(
        f"comparing {len(noises)} methods, {len(cxrs)} CXRs (tuned on {half}, scored on "
        f"{len(cxrs) - half}, 1,000 resamples, both baselines): {total:.1f} s in all "
        f"({total / 60:.1f} min)"
    )
    for noise in noises:
        print(f"  noise {noise}: {seconds[noise]:.1f} s, test mIoU {summary[noise]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cxrs", type=int, default=234)
    parser.add_argument("--subset", type=int, default=12, help="CXRs for the loop comparison")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", type=int, default=4, help="methods to compare (0: skip)")
    parser.add_argument("--profile", action="store_true", help="cProfile one tuning run")
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
        sub_truth = subset_truth(path, subset, Path(work) / "subset.json")
        sub_sizes = {cxr: sizes[cxr] for cxr in subset if cxr not in ground_truth}
        loop_times, ours_times, floor_times = [], [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            loop_tuning(heatmaps, ground_truth, probabilities, subset)
            loop_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            tune_chexlocalize(sub_heatmaps, sub_truth, probabilities=probabilities, sizes=sub_sizes)
            ours_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            resize_only(sub_heatmaps, sizes)
            floor_times.append(time.perf_counter() - started)
        loop, ours = statistics.median(loop_times), statistics.median(ours_times)
        floor = statistics.median(floor_times)
        print(
            f"tuning {len(subset)} CXRs ({len(sub_truth)} with a finding), median of "
            f"{args.rounds}: per-candidate loop {loop:.1f} s, tune_chexlocalize {ours:.2f} s, "
            f"ratio {loop / ours:.1f}x"
        )
        print(f"  rounds: loop {fmt(loop_times)} s, tune_chexlocalize {fmt(ours_times)} s")
        print(
            f"  resizing and normalising each map once, nothing else: {floor:.2f} s "
            f"(rounds {fmt(floor_times)}); loop / that = {loop / floor:.1f}x, the most any "
            "one-pass tuner that resizes at full resolution can reach"
        )
        if args.profile:
            profile(sub_heatmaps, sub_truth, probabilities, sub_sizes)
        started = time.perf_counter()
        tuning = tune_chexlocalize(heatmaps, ground_truth, probabilities=probabilities, sizes=extra)
        full = time.perf_counter() - started
        print(
            f"tune_chexlocalize, all {args.cxrs} CXRs: {full:.1f} s (the loop, extrapolated "
            f"from {len(subset)} CXRs: {loop * args.cxrs / len(subset) / 60:.0f} min)"
        )
        print(f"  thresholds {tuning.thresholds}")

        if args.methods:
            compare(path, probabilities, sizes, Path(work), args)

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
