"""Tuning: per-pathology thresholds and probability cutoffs that maximise mIoU, in one pass."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from chexviz.data.chexlocalize import chexlocalize_name
from chexviz.evaluate.chexlocalize._inputs import Inputs, probability_of
from chexviz.evaluate.chexlocalize._pixels import (
    Canvas,
    Mask,
    check_threshold,
    mask_iou,
    normalise_,
)

if TYPE_CHECKING:
    from chexviz.evaluate.chexlocalize.scoring import GroundTruth
    from chexviz.evaluate.chexlocalize.segmentation import HeatmapLike

__all__ = ["DEFAULT_CUTOFFS", "DEFAULT_THRESHOLDS", "CheXlocalizeTuning", "tune_chexlocalize"]

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
"""Threshold candidates of the reference ``tune_heatmap_threshold.py``: its
``np.arange(0.2, .8, .1)`` yields these seven (0.8 comes in through floating-point error)."""

DEFAULT_CUTOFFS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
"""Probability-cutoff candidates of the reference ``tune_probability_threshold.py``."""


@dataclass(frozen=True, eq=False)
class CheXlocalizeTuning:
    """The result of [`tune_chexlocalize`][chexviz.evaluate.chexlocalize.tuning.tune_chexlocalize].

    Attributes:
        thresholds: Label -> the binarisation threshold with the highest mIoU on the
            true-positive slice (labels without a scored pair are left out: they keep Otsu).
        cutoffs: Label -> the probability cutoff with the highest mIoU on the full set with
            Otsu segmentation (empty without probabilities).
        curves: Every candidate's mIoU: columns ``label``, ``parameter`` (``"threshold"`` or
            ``"cutoff"``), ``value``, ``miou`` and ``n`` (pairs with a defined IoU).
    """

    thresholds: dict[str, float]
    cutoffs: dict[str, float]
    curves: pd.DataFrame = field(repr=False)

    def to_csv(self, folder: str | os.PathLike[str]) -> list[Path]:
        """Writes the reference scripts' files, which ``read_tuning_csv`` (and they) read.

        ``tuning_results.csv`` (``threshold, task``) and, with cutoffs,
        ``probability_tuning_results.csv`` (``prob_threshold, mIoU, task``, every candidate);
        tasks carry CheXlocalize names.

        Args:
            folder: Output folder (created if missing).

        Returns:
            The files written.
        """
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "tuning_results.csv"
        pd.DataFrame(
            [
                {"threshold": value, "task": chexlocalize_name(label)}
                for label, value in sorted(
                    self.thresholds.items(), key=lambda item: chexlocalize_name(item[0])
                )
            ],
            columns=["threshold", "task"],
        ).to_csv(path, index=False)
        written = [path]
        cutoffs = self.curves[self.curves["parameter"] == "cutoff"]
        if not cutoffs.empty:
            path = out / "probability_tuning_results.csv"
            pd.DataFrame(
                {
                    "prob_threshold": cutoffs["value"].to_numpy(),
                    "mIoU": cutoffs["miou"].to_numpy(),
                    "task": [chexlocalize_name(label) for label in cutoffs["label"]],
                }
            ).to_csv(path, index=False)
            written.append(path)
        return written


def _candidates(values: Iterable[float], what: str) -> np.ndarray:
    array = np.array([check_threshold(v, what) for v in values], dtype=np.float32)
    if array.size == 0:
        raise ValueError(f"{what} is empty")
    return array


def _counts_above(
    normalised: np.ndarray, truth: Mask, levels: np.ndarray, canvas: Canvas
) -> tuple[np.ndarray, np.ndarray]:
    """Per level: the pixels above it, and those of them inside ``truth`` (int64 each).

    The comparisons are made in the map's dtype against float32 levels, as the reference's
    ``map > threshold``; the boolean image goes into the canvas instead of a new array.
    """
    above = canvas.array("above", truth.shape, np.bool_)
    inside = normalised[truth]
    predicted = np.empty(len(levels), dtype=np.int64)
    inter = np.empty(len(levels), dtype=np.int64)
    for k, level in enumerate(levels):
        np.greater(normalised, level, out=above)
        predicted[k] = np.count_nonzero(above)
        inter[k] = np.count_nonzero(inside > level)
    return predicted, inter


def tune_chexlocalize(
    heatmaps: Mapping[tuple[str, str], HeatmapLike],
    ground_truth: GroundTruth,
    *,
    probabilities: Mapping[tuple[str, str], float] | None = None,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    cutoffs: Iterable[float] = DEFAULT_CUTOFFS,
    sizes: Mapping[str, tuple[int, int]] | None = None,
    progress: bool = False,
) -> CheXlocalizeTuning:
    """Finds per-pathology thresholds and probability cutoffs maximising mIoU, in one pass.

    As the reference scripts: the threshold of each pathology maximises the mIoU on the
    true-positive slice of its normalised maps, over ``thresholds``; the probability cutoff
    maximises the mIoU on the full set of the Otsu segmentations, emptied where the
    probability is below the cutoff, over ``cutoffs``. Ties go to the smaller candidate.

    The reference re-reads, resizes and segments every image once per candidate. Here each
    heatmap is resized and normalised once: the pixels above every threshold, inside and
    outside the ground truth, are counted on that one map, and the Otsu segmentation is made
    once, since a cutoff only decides whether it is kept. The full-resolution arrays are
    reused from one map to the next rather than allocated for each; the numbers are those of
    the per-candidate loop, bit for bit.

    Departures: the reference's cutoff script keeps a segmentation when the probability is
    strictly above the cutoff, while its segmentation script (which applies the cutoffs)
    keeps it when the probability is not below it; here the latter rule serves both. It also
    skips the cutoff 0 for Lung Lesion (one segmentation in its validation set); here every
    pathology gets the same candidates.

    Args:
        heatmaps: As for
            [`score_chexlocalize`][chexviz.evaluate.chexlocalize.scoring.score_chexlocalize].
        ground_truth: As for ``score_chexlocalize``.
        probabilities: ``(cxr_id, label) -> probability``; without them no cutoff is tuned.
        thresholds: Threshold candidates (default: the reference's seven).
        cutoffs: Probability-cutoff candidates (default: the reference's nine).
        sizes: Original ``(H, W)`` of CXRs with heatmaps but no ground truth (they count as
            CXRs without findings in the cutoff's full set).
        progress: Show a progress bar (only on a terminal).

    Returns:
        The tuned values and every candidate's mIoU.

    Raises:
        ValueError: As for ``score_chexlocalize``; or an empty or non-finite candidate list.
    """
    levels = _candidates(thresholds, "thresholds")
    limits = _candidates(cutoffs, "cutoffs") if probabilities is not None else None
    full_set = probabilities is not None
    inputs = Inputs(heatmaps, ground_truth, sizes, full_set)
    labels = inputs.labels
    # Per label: the sum and count of defined IoUs at each threshold; per cutoff likewise.
    threshold_sum = {label: np.zeros(len(levels)) for label in labels}
    threshold_n = {label: np.zeros(len(levels), dtype=np.int64) for label in labels}
    n_cutoffs = 0 if limits is None else len(limits)
    cutoff_sum = {label: np.zeros(n_cutoffs) for label in labels}
    cutoff_n = {label: np.zeros(n_cutoffs, dtype=np.int64) for label in labels}
    canvas = Canvas()
    for cxr in tqdm(inputs.cxrs, desc="tuning", unit="CXR", disable=None if progress else True):
        for pair in inputs.pairs(cxr):
            if pair.empty and not full_set:
                continue
            truth = inputs.truth(pair)
            normalised = normalise_(canvas.resize(inputs.heatmap(pair), pair.size))
            if truth is not None and normalised is not None:
                # A constant map segments nothing: its IoU is undefined on the slice.
                predicted, inter = _counts_above(normalised, truth, levels, canvas)
                truth_pixels = int(np.count_nonzero(truth))
                scored = predicted > 0
                threshold_sum[pair.label][scored] += inter[scored] / (
                    predicted[scored] + truth_pixels - inter[scored]
                )
                threshold_n[pair.label][scored] += 1
            if limits is not None:
                probability = probability_of(probabilities, pair)
                otsu, _ = mask_iou(
                    np.zeros(pair.size, dtype=np.bool_)
                    if normalised is None
                    else canvas.otsu_fill(normalised),
                    truth,
                    False,
                )
                empty = 0.0 if truth is not None else math.nan
                for k, limit in enumerate(limits):
                    value = otsu if probability >= limit else empty
                    if not math.isnan(value):
                        cutoff_sum[pair.label][k] += value
                        cutoff_n[pair.label][k] += 1
    records: list[dict[str, Any]] = []
    best_thresholds: dict[str, float] = {}
    best_cutoffs: dict[str, float] = {}
    for label in labels:
        for parameter, candidates, sums, counts, best in (
            ("threshold", levels, threshold_sum[label], threshold_n[label], best_thresholds),
            ("cutoff", limits, cutoff_sum[label], cutoff_n[label], best_cutoffs),
        ):
            if candidates is None:
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                mious = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
            for value, miou, n in zip(candidates, mious, counts, strict=True):
                records.append(
                    {
                        "label": label,
                        "parameter": parameter,
                        "value": round(float(value), 6),
                        "miou": float(miou),
                        "n": int(n),
                    }
                )
            if np.isnan(mious).all():
                logger.warning("%s: no pair with a defined IoU; no %s tuned", label, parameter)
                continue
            best[label] = round(float(candidates[int(np.nanargmax(mious))]), 6)
    curves = pd.DataFrame.from_records(
        records, columns=["label", "parameter", "value", "miou", "n"]
    )
    return CheXlocalizeTuning(best_thresholds, best_cutoffs, curves)
