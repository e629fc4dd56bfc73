"""Scoring with the CheXlocalize protocol: per-pair IoU and hit, baselines, bootstrap intervals.

[`score_chexlocalize`][chexviz.evaluate.chexlocalize.scoring.score_chexlocalize] scores every
(CXR, pathology) pair one CXR at a time, beside two baselines (chance and a leave-one-patient-out
anatomical prior), and summarises each pathology with the reference ``eval.py``'s bootstrap and
chexviz's rule for too few cases.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from tqdm.auto import tqdm

from chexviz._internal.cases import (
    DEFAULT_MIN_POSITIVES,
    TOO_FEW,
    check_minimum,
    complete_replicates,
    enough_cases,
)
from chexviz.data.chexlocalize import chexlocalize_name, chexpert_name
from chexviz.evaluate._bootstrap import percentile_interval
from chexviz.evaluate.chexlocalize._inputs import Inputs, Pair, probability_of
from chexviz.evaluate.chexlocalize._pixels import (
    binarise,
    check_threshold,
    mask_iou,
    normalise_,
    peak_hit,
    resize_map,
)
from chexviz.evaluate.chexlocalize.segmentation import HeatmapLike

__all__ = ["CheXlocalizeScores", "GroundTruth", "score_chexlocalize"]

logger = logging.getLogger(__name__)


GroundTruth = Mapping[str, Mapping[str, npt.NDArray[np.bool_]]]
"""CXR id -> label -> mask ``[H, W]``, as
[`read_chexlocalize`][chexviz.data.chexlocalize.read_chexlocalize] returns; any mapping of that
shape works (a plain ``dict`` of arrays, too)."""

_PRIOR_GRID = 64
_METRICS = ("iou", "hit")
_BASELINES = ("chance_iou", "chance_hit", "prior_iou", "prior_hit")
_SUMMARY_NAMES = {
    "iou": "miou",
    "hit": "hit_rate",
    "chance_iou": "chance_miou",
    "chance_hit": "chance_hit_rate",
    "prior_iou": "prior_miou",
    "prior_hit": "prior_hit_rate",
}
_REFERENCE_FILES = {"iou": "iou", "hit": "hitmiss"}


def _per_label(values: Mapping[str, float] | None, what: str) -> dict[str, np.float32]:
    out: dict[str, np.float32] = {}
    for label, value in (values or {}).items():
        name = chexpert_name(label)
        out[name] = check_threshold(value, f"{what}[{label!r}]")
    return out


def _patient(cxr: str) -> str:
    return cxr.split("_", 1)[0] if cxr.startswith("patient") else cxr


def _view(cxr: str) -> str:
    return "lateral" if cxr.endswith("lateral") else "frontal"


class _Prior:
    """Leave-one-patient-out mean ground-truth masks per pathology and view, on a grid.

    Every non-empty mask is averaged down to ``_PRIOR_GRID`` squares (the image resized whole,
    as the models see it). The prior of a CXR is the mean over the *other* patients' masks of
    its pathology and view, so no CXR is scored against a map built from its own answer.
    """

    def __init__(self, inputs: Inputs, progress: bool) -> None:
        self._sums: dict[tuple[str, str], np.ndarray] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._own: dict[tuple[str, str, str], np.ndarray] = {}
        self._own_counts: dict[tuple[str, str, str], int] = {}
        known = [cxr for cxr in inputs.cxrs if cxr in inputs.known]
        for cxr in tqdm(
            known, desc="anatomical prior", unit="CXR", disable=None if progress else True
        ):
            for pair in inputs.pairs(cxr):
                if pair.empty:
                    continue
                truth = inputs.truth(pair)
                assert truth is not None
                small = cv2.resize(
                    truth.view(np.uint8), (_PRIOR_GRID, _PRIOR_GRID), interpolation=cv2.INTER_AREA
                ).astype(np.float32)
                group = (pair.label, _view(cxr))
                own = (*group, _patient(cxr))
                self._sums[group] = self._sums.get(group, 0.0) + small
                self._counts[group] = self._counts.get(group, 0) + 1
                self._own[own] = self._own.get(own, 0.0) + small
                self._own_counts[own] = self._own_counts.get(own, 0) + 1

    def heatmap(self, pair: Pair) -> torch.Tensor:
        """The prior of a CXR (all zero when no other patient has that finding)."""
        group = (pair.label, _view(pair.cxr))
        own = (*group, _patient(pair.cxr))
        total = self._sums.get(group)
        if total is None:
            return torch.zeros(_PRIOR_GRID, _PRIOR_GRID)
        others = self._counts[group] - self._own_counts.get(own, 0)
        if others == 0:
            return torch.zeros(_PRIOR_GRID, _PRIOR_GRID)
        return torch.from_numpy((total - self._own.get(own, 0.0)) / others)


# ----------------------------------------------------------------------------------------------
# Scoring


@dataclass(frozen=True, eq=False)
class CheXlocalizeScores:
    """The result of `score_chexlocalize`: per-image and summary tables, bootstrap replicates.

    Attributes:
        per_image: One row per scored (CXR, pathology): ``cxr_id``, ``label`` (CheXpert
            name), ``gt_pixels`` and ``pred_pixels`` (mask sizes; ``pred_pixels`` is missing
            where nothing was segmented), ``probability`` (when given), ``iou`` and ``hit``
            (NaN where undefined), and with baselines ``chance_iou``, ``chance_hit``,
            ``prior_iou``, ``prior_hit``.
        summary: One row per pathology and a last row ``"mean"`` (the mean over the
            pathologies reported): ``status`` (``"scored"``, or ``"too few cases"`` for a
            pathology with fewer than ``min_cases`` CXRs with a finding or defined values of
            mIoU or hit rate), ``positives`` (CXRs with a finding) and ``patients`` (theirs),
            then for each metric (``miou``, ``hit_rate``, then ``chance_miou``,
            ``chance_hit_rate``, ``prior_miou``, ``prior_hit_rate``) the point estimate (mean
            of the defined per-image values; NaN for too few cases), ``_lower`` and
            ``_upper`` (95% bootstrap interval) and ``_n`` (defined values).
        bootstrap: Per metric (the keys of ``summary``'s metrics), the bootstrap replicates
            ``[n_bootstrap, pathologies]``.
        true_positive_only: Whether IoU was computed on the true-positive slice.
        seed: The bootstrap seed.
        mean_bootstrap: Per metric, the ``n_bootstrap`` replicates of the mean over the
            pathologies it reports (the same pathologies in every replicate).
    """

    per_image: pd.DataFrame
    summary: pd.DataFrame
    bootstrap: dict[str, pd.DataFrame]
    true_positive_only: bool
    seed: int
    mean_bootstrap: dict[str, np.ndarray] = field(default_factory=dict)

    def to_csv(self, folder: str | os.PathLike[str]) -> list[Path]:
        """Writes the tables, chexviz's and the reference ``eval.py``'s.

        ``per_image.csv`` and ``summary.csv`` are the two frames. The reference's files are
        ``iou_results_per_cxr.csv`` / ``hitmiss_results_per_cxr.csv`` (one column per
        pathology, CheXlocalize names, and ``img_id``), ``*_bootstrap_results_per_cxr.csv``
        (the replicates) and ``*_summary_results.csv`` (``name, lower, mean, upper`` rounded
        to 3 decimals, where ``mean`` is, as in ``eval.py``, the mean of the replicates).

        Args:
            folder: Output folder (created if missing).

        Returns:
            The files written.
        """
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "per_image.csv", out / "summary.csv"]
        self.per_image.to_csv(written[0], index=False)
        self.summary.to_csv(written[1])
        for metric, stem in _REFERENCE_FILES.items():
            wide = self.per_image.pivot(index="cxr_id", columns="label", values=metric)
            wide = wide.rename(columns=chexlocalize_name)
            wide = wide[sorted(wide.columns)]
            wide["img_id"] = wide.index
            path = out / f"{stem}_results_per_cxr.csv"
            wide.to_csv(path, index=False)
            replicates = self.bootstrap[_SUMMARY_NAMES[metric]].rename(columns=chexlocalize_name)
            boot_path = out / f"{stem}_bootstrap_results_per_cxr.csv"
            replicates.to_csv(boot_path, index=False)
            records = []
            for name in sorted(replicates.columns):
                values = replicates[name].to_numpy()
                lower, upper = percentile_interval(values)
                defined = values[~np.isnan(values)]
                mean = float(defined.mean()) if defined.size else math.nan
                records.append(
                    {
                        "name": name,
                        "lower": round(lower, 3),
                        "mean": round(mean, 3),
                        "upper": round(upper, 3),
                    }
                )
            summary_path = out / f"{stem}_summary_results.csv"
            pd.DataFrame.from_records(records).to_csv(summary_path, index=False)
            written += [path, boot_path, summary_path]
        return written


def _bootstrap_weights(n_rows: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """How often each row is drawn in each replicate ``[B, n]``, drawn like ``eval.py``."""
    state = np.random.RandomState(seed)
    weights = np.empty((n_bootstrap, n_rows), dtype=np.float64)
    for replicate in range(n_bootstrap):
        drawn = state.choice(n_rows, size=n_rows, replace=True)
        weights[replicate] = np.bincount(drawn, minlength=n_rows)
    return weights


def _summarise(
    per_image: pd.DataFrame,
    metrics: Sequence[str],
    labels: Sequence[str],
    n_bootstrap: int,
    seed: int,
    known: Iterable[str],
    min_cases: int = DEFAULT_MIN_POSITIVES,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict[str, np.ndarray]]:
    """Per pathology and over pathologies: point estimates, intervals and counts.

    Per pathology the replicates are drawn as ``eval.py`` draws them: it resamples the rows
    of each metric's own table. Its IoU table holds every scored CXR (on the full set, those
    without ground truth too), its hit table only the CXRs of the ground-truth file; each is
    a separate run seeded alike, so both draw from the same seed over their own rows. The
    rule for too few cases (``chexviz._internal.cases``): a pathology is reported for a
    metric only with at least ``min_cases`` CXRs with a finding and ``min_cases`` defined
    values; the mean is over the pathologies reported for that metric, the same set in every
    replicate: a replicate in which one of them drew no defined value is replaced, for the
    mean only, by a fresh draw. Returns the summary, the per-pathology replicates and the
    mean's.
    """
    everyone = sorted(per_image["cxr_id"].unique())
    in_truth = set(known)
    rows_of = {
        "iou": everyone,
        "hit": [cxr for cxr in everyone if cxr in in_truth],
    }
    weights_of = {
        kind: _bootstrap_weights(len(cxrs), n_bootstrap, seed) for kind, cxrs in rows_of.items()
    }
    rows: dict[str, dict[str, object]] = {label: {} for label in (*labels, "mean")}
    with_finding = per_image[per_image["gt_pixels"] > 0]
    positives = []
    for label in labels:
        found = with_finding.loc[with_finding["label"] == label, "cxr_id"]
        positives.append(len(found))
        rows[label] |= {"positives": len(found), "patients": len(set(map(_patient, found)))}
    rows["mean"] |= {
        "positives": len(with_finding),
        "patients": len(set(map(_patient, with_finding["cxr_id"]))),
    }
    reported = np.ones(len(labels), dtype=bool)
    replicates: dict[str, pd.DataFrame] = {}
    mean_replicates: dict[str, np.ndarray] = {}
    redraw = np.random.default_rng([seed, len(everyone)])
    for metric in metrics:
        name = _SUMMARY_NAMES[metric]
        kind = "hit" if metric.endswith("hit") else "iou"
        cxrs, weights = rows_of[kind], weights_of[kind]
        wide = per_image.pivot(index="cxr_id", columns="label", values=metric)
        values = wide.reindex(index=cxrs, columns=list(labels)).to_numpy(dtype=np.float64)
        defined = ~np.isnan(values)
        filled = np.where(defined, values, 0.0)
        enough = enough_cases(positives, defined.sum(0), min_cases, min_cases)
        if metric in _METRICS:
            reported &= enough
        kept = np.flatnonzero(enough)

        def means(
            w: np.ndarray, filled: np.ndarray = filled, defined: np.ndarray = defined
        ) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                result: np.ndarray = (w @ filled) / (w @ defined)
            return result

        boot = means(weights)
        point = means(np.ones((1, len(cxrs))))[0]
        replicates[name] = pd.DataFrame(boot, columns=list(labels))
        for column, label in enumerate(labels):
            ok = bool(enough[column])
            lower, upper = percentile_interval(boot[:, column]) if ok else (math.nan, math.nan)
            rows[label] |= {
                name: float(point[column]) if ok else math.nan,
                f"{name}_lower": lower,
                f"{name}_upper": upper,
                f"{name}_n": int(defined[:, column].sum()),
            }
        complete = ~np.isnan(boot[:, kept]).any(axis=1)
        missing = int((~complete).sum()) if len(kept) else 0

        def draw(
            means: Callable[[np.ndarray], np.ndarray] = means, n: int = len(cxrs)
        ) -> np.ndarray:
            drawn = redraw.integers(0, n, size=n)
            counts = np.bincount(drawn, minlength=n).astype(np.float64)
            row: np.ndarray = means(counts[None, :])[0]
            return row

        def has_all(row: np.ndarray, kept: np.ndarray = kept) -> bool:
            return not np.isnan(row[kept]).any()

        fresh, redrawn = complete_replicates(draw, has_all, missing)
        if missing:
            logger.info(
                "%s: %d replicates missed a pathology of the mean and were drawn again (%d draws)",
                name,
                missing,
                missing + redrawn,
            )
        if len(kept):
            stacked = np.concatenate([boot[complete], np.asarray(fresh).reshape(-1, len(labels))])
            mean_replicates[name] = stacked[:, kept].mean(axis=1)
        else:
            mean_replicates[name] = np.full(n_bootstrap, np.nan)
        lower, upper = percentile_interval(mean_replicates[name])
        rows["mean"] |= {
            name: float(point[kept].mean()) if len(kept) else math.nan,
            f"{name}_lower": lower,
            f"{name}_upper": upper,
            f"{name}_n": int(defined[:, kept].sum()),
        }
    for column, label in enumerate(labels):
        rows[label]["status"] = "scored" if reported[column] else TOO_FEW
    rows["mean"]["status"] = f"mean of {int(reported.sum())}"
    summary = pd.DataFrame.from_dict(rows, orient="index")
    summary.index.name = "label"
    order = ["status", "positives", "patients"]
    summary = summary[order + [c for c in summary.columns if c not in order]]
    counts = [column for column in summary.columns if column.endswith("_n")]
    typed: pd.DataFrame = summary.astype(dict.fromkeys([*counts, "positives", "patients"], "int64"))
    return typed, replicates, mean_replicates


def score_chexlocalize(
    heatmaps: Mapping[tuple[str, str], HeatmapLike],
    ground_truth: GroundTruth,
    *,
    thresholds: Mapping[str, float] | None = None,
    probabilities: Mapping[tuple[str, str], float] | None = None,
    cutoffs: Mapping[str, float] | None = None,
    true_positive_only: bool = True,
    baselines: bool = True,
    sizes: Mapping[str, tuple[int, int]] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    progress: bool = False,
    min_cases: int = DEFAULT_MIN_POSITIVES,
) -> CheXlocalizeScores:
    """Scores heatmaps against CheXlocalize ground truth: IoU, hit rate, bootstrap intervals.

    Every CXR of ``ground_truth`` is scored for every pathology that ``heatmaps`` covers. On
    the true-positive slice (the default, as the reference ``eval.py``) IoU is defined where
    both the segmentation and the ground truth are non-empty, so only CXRs with a finding need
    heatmaps; on the full set (``true_positive_only=False``) every pair counts (IoU is 0 for
    a segmentation where the ground truth is empty, undefined when both are empty) and CXRs
    that have heatmaps but no ground-truth entry (the CheXlocalize files list only CXRs with
    a finding) are scored as CXRs without findings, given their ``sizes``. Hit rate is always
    over the CXRs whose ground truth is non-empty, and its bootstrap resamples only the
    ground-truth CXRs, as ``eval.py``'s does. A plain-dict ground truth may name Lung Opacity
    in either spelling. Work is done one CXR at a time: memory
    holds one original-size mask of each kind at once, whatever the number of CXRs.

    Baselines, on the same CXRs: ``chance_hit`` is the fraction of the image inside the
    ground truth (the hit rate of a uniformly random point) and ``chance_iou`` the IoU of a
    mask covering the whole image (the same fraction; 0 where the ground truth is empty);
    ``prior_*`` score the anatomical prior (the mean ground-truth mask of the same pathology
    and view over the *other* patients, on a 64x64 grid) as if it were a heatmap, with the
    same thresholds and no probability cutoff.

    Args:
        heatmaps: ``(cxr_id, label) -> map [h, w]`` at any resolution; labels in CheXpert or
            CheXlocalize spelling. A lazy mapping (maps made when asked for) keeps memory low.
        ground_truth: As [`read_chexlocalize`][chexviz.data.chexlocalize.read_chexlocalize]
            returns, or any ``{cxr_id: {label: mask}}`` mapping.
        thresholds: Label -> binarisation threshold of the normalised map; labels not listed
            (or ``None``) use Otsu's method.
        probabilities: ``(cxr_id, label) -> model probability``, needed with ``cutoffs``.
        cutoffs: Label -> probability cutoff: the segmentation is empty when the probability
            is below it (hit is unaffected, as in the reference).
        true_positive_only: IoU on the true-positive slice (True) or the full set.
        baselines: Also score chance and the anatomical prior (about doubles the time).
        sizes: Original ``(H, W)`` of CXRs that have heatmaps but no ground truth (full set
            only).
        n_bootstrap: Bootstrap resamples of the CXRs (at least 1).
        seed: Seed of the resamples (the reference's ``--seed``).
        progress: Show a progress bar (only on a terminal).
        min_cases: Fewest CXRs with a finding, and defined values, a pathology needs to be
            reported for a metric; below it it is "too few cases" and out of the mean.

    Returns:
        The per-image and summary tables and the bootstrap replicates.

    Raises:
        TypeError: A heatmap is not a tensor or array, or a key is not ``(cxr_id, label)``.
        ValueError: A heatmap is missing for a scored pair or is not a finite 2-D map, a label
            is unknown, a threshold or cutoff is not finite, a probability is missing for a
            pathology with a cutoff, a size is missing (full set), or ``n_bootstrap`` is
            below 1.
    """
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}")
    check_minimum(min_cases)
    levels = _per_label(thresholds, "thresholds")
    limits = _per_label(cutoffs, "cutoffs")
    if limits and probabilities is None:
        raise ValueError("cutoffs need the model's probabilities (probabilities=)")
    full_set = not true_positive_only
    inputs = Inputs(heatmaps, ground_truth, sizes, full_set)
    prior = _Prior(inputs, progress) if baselines else None
    rows: list[dict[str, Any]] = []
    for cxr in tqdm(
        inputs.cxrs, desc="CheXlocalize", unit="CXR", disable=None if progress else True
    ):
        for pair in inputs.pairs(cxr):
            rows.append(
                _score_pair(pair, inputs, levels, limits, probabilities, true_positive_only, prior)
            )
    columns = ["cxr_id", "label", "gt_pixels", "pred_pixels", "probability", "iou", "hit"]
    if baselines:
        columns += list(_BASELINES)
    per_image = pd.DataFrame(rows, columns=columns).astype(
        {"gt_pixels": "int64", "pred_pixels": "Int64"}
    )
    if probabilities is None:
        per_image = per_image.drop(columns="probability")
    metrics = [*_METRICS, *(_BASELINES if baselines else ())]
    summary, replicates, means = _summarise(
        per_image, metrics, inputs.labels, n_bootstrap, seed, inputs.known, min_cases
    )
    return CheXlocalizeScores(per_image, summary, replicates, true_positive_only, seed, means)


def _score_pair(
    pair: Pair,
    inputs: Inputs,
    levels: Mapping[str, np.float32],
    limits: Mapping[str, np.float32],
    probabilities: Mapping[tuple[str, str], float] | None,
    true_positive_only: bool,
    prior: _Prior | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "cxr_id": pair.cxr,
        "label": pair.label,
        "gt_pixels": 0,
        "pred_pixels": pd.NA,
        "probability": math.nan,
        "iou": math.nan,
        "hit": math.nan,
    }
    if prior is not None:
        row.update(dict.fromkeys(_BASELINES, math.nan))
    if pair.empty and true_positive_only:
        return row  # nothing in this pair can be defined
    truth = inputs.truth(pair)
    area = 0.0
    if truth is not None:
        row["gt_pixels"] = int(np.count_nonzero(truth))
        area = row["gt_pixels"] / truth.size
    if probabilities is not None:
        row["probability"] = probability_of(probabilities, pair)
    level = levels.get(pair.label)
    resized = resize_map(inputs.heatmap(pair), pair.size)
    extremes = torch.aminmax(resized)
    if truth is not None:
        row["hit"] = peak_hit(resized, truth, extremes)
    limit = limits.get(pair.label)
    if limit is not None and row["probability"] < limit:
        predicted = np.zeros(pair.size, dtype=np.bool_)
    else:
        predicted = binarise(normalise_(resized, extremes), pair.size, level)
    del resized
    row["iou"], row["pred_pixels"] = mask_iou(predicted, truth, true_positive_only)
    del predicted
    if prior is not None:
        row["chance_hit"] = area if truth is not None else math.nan
        row["chance_iou"] = area if truth is not None else 0.0
        resized = resize_map(prior.heatmap(pair), pair.size)
        extremes = torch.aminmax(resized)
        if truth is not None:
            row["prior_hit"] = peak_hit(resized, truth, extremes)
        predicted = binarise(normalise_(resized, extremes), pair.size, level)
        row["prior_iou"], _ = mask_iou(predicted, truth, true_positive_only)
    return row
