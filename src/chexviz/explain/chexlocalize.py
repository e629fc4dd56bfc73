"""The CheXlocalize evaluation protocol: heatmaps against radiologists' segmentations.

This module runs the protocol of CheXlocalize (Saporta et al., Nature Machine Intelligence
2022) on any heatmaps, such as chexviz's Grad-CAM maps, against the ground truth read by
[`read_chexlocalize`][chexviz.data.chexlocalize.read_chexlocalize]:

1. A heatmap (at any resolution) is resized bilinearly (``align_corners=False``) to its
   X-ray's original size and min-max normalised
   ([`segment_heatmap`][chexviz.explain.chexlocalize.segment_heatmap]).
2. It is binarised at a per-pathology threshold, or by default with **Otsu's method** on the
   8-bit map followed by filling the outer contours, exactly as the reference
   ``heatmap_to_segmentation.py`` does (OpenCV's Otsu threshold and contours; a contour of a
   single pixel is dropped). An optional per-pathology probability cutoff empties the mask
   when the model's probability is below it.
3. **IoU** per (CXR, pathology), on the true-positive slice (both masks non-empty) by default
   or on the full set (undefined only when both masks are empty); **hit**: whether the
   single maximum of the resized map lies inside the ground-truth mask (defined where the
   mask is non-empty).
4. Per pathology, the mean and a 95% bootstrap interval over 1,000 resamples of CXRs, drawn
   as the reference ``eval.py`` draws them (``np.random.seed(seed)``, ``np.random.choice``)
   and over the same rows: IoU's over every scored CXR (on the full set, those without a
   ground-truth entry too), hit rate's over the ground-truth file's CXRs only. So a seed
   gives the reference's intervals.

[`score_chexlocalize`][chexviz.explain.chexlocalize.score_chexlocalize] does all of it, one
CXR at a time (the masks of a whole validation set would not fit in memory), and scores two
baselines on the same CXRs: **chance** (a uniformly random point, and a mask covering the
whole image: both score the fraction of the image inside the ground truth) and an
**anatomical prior** (per pathology and view, the mean ground-truth mask of the *other*
patients, put through the same pipeline as a heatmap).
[`tune_chexlocalize`][chexviz.explain.chexlocalize.tune_chexlocalize] finds the thresholds and
probability cutoffs that maximise mIoU in a single pass over the images.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from chexviz._internal.cases import (
    DEFAULT_MIN_POSITIVES,
    TOO_FEW,
    check_minimum,
    complete_replicates,
    enough_cases,
)
from chexviz.data.chexlocalize import (
    LOCALIZATION_LABELS,
    CheXlocalizeGroundTruth,
    chexlocalize_name,
    chexpert_name,
    cxr_id,
    write_chexlocalize,
)
from chexviz.data.images import read_image_size

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from chexviz.data.dataset import CheXpertDataset
    from chexviz.explain.gradcam import GradCAM

__all__ = [
    "DEFAULT_CUTOFFS",
    "DEFAULT_THRESHOLDS",
    "CheXlocalizeScores",
    "CheXlocalizeTuning",
    "GroundTruth",
    "HeatmapLike",
    "ground_truth_overlay",
    "plot_chexlocalize",
    "read_tuning_csv",
    "run_chexlocalize",
    "score_chexlocalize",
    "segment_heatmap",
    "tune_chexlocalize",
]

logger = logging.getLogger(__name__)

HeatmapLike = torch.Tensor | np.ndarray
"""A heatmap ``[h, w]`` at any resolution (leading dimensions of size 1 are dropped)."""

GroundTruth = Mapping[str, Mapping[str, npt.NDArray[np.bool_]]]
"""CXR id -> label -> mask ``[H, W]``, as
[`read_chexlocalize`][chexviz.data.chexlocalize.read_chexlocalize] returns; any mapping of that
shape works (a plain ``dict`` of arrays, too)."""

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
"""Threshold candidates of the reference ``tune_heatmap_threshold.py``: its
``np.arange(0.2, .8, .1)`` yields these seven (0.8 comes in through floating-point error)."""

DEFAULT_CUTOFFS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
"""Probability-cutoff candidates of the reference ``tune_probability_threshold.py``."""

_CONFIDENCE = 0.05
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

Mask = npt.NDArray[np.bool_]


# ----------------------------------------------------------------------------------------------
# One heatmap


def _as_map(heatmap: object, where: str) -> torch.Tensor:
    """A heatmap as a 2-D float CPU tensor (float64 kept, anything else float32), checked."""
    if isinstance(heatmap, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(heatmap))
    elif isinstance(heatmap, torch.Tensor):
        tensor = heatmap.detach().cpu()
    else:
        raise TypeError(f"{where} must be a torch.Tensor or numpy.ndarray, got {type(heatmap)}")
    while tensor.ndim > 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 2 or tensor.numel() == 0:
        raise ValueError(f"{where} must be a non-empty 2-D map [h, w], got {list(heatmap.shape)}")
    if tensor.dtype != torch.float64:
        tensor = tensor.to(torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{where} contains NaN or infinite values")
    return tensor


def _check_size(size: object) -> tuple[int, int]:
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(n, int | np.integer) and not isinstance(n, bool) for n in size)
        or not all(n > 0 for n in size)
    ):
        raise ValueError(f"size must be (height, width), two positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def _check_threshold(threshold: float, where: str) -> np.float32:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.floating):
        raise TypeError(f"{where} must be a number, got {threshold!r}")
    if not math.isfinite(threshold):
        raise ValueError(f"{where} must be finite, got {threshold}")
    # The reference compares its float32 map with the threshold in float32 (NumPy 1.x's
    # value-based casting); comparing in float64 would move pixels lying on a candidate.
    level: np.float32 = np.float32(float(threshold))
    return level


def _resize(heatmap: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The map resized bilinearly to ``size`` as the reference does it (a new tensor)."""
    return F.interpolate(heatmap[None, None], size=size, mode="bilinear", align_corners=False)[
        0, 0
    ].contiguous()


def _normalise_(
    resized: torch.Tensor, extremes: tuple[torch.Tensor, torch.Tensor] | None = None
) -> np.ndarray | None:
    """Min-max normalises in place, bit for bit as the reference; None if the map is constant.

    The reference divides ``map - min`` by its maximum, which is ``fl(max - min)``: rounding is
    monotonic, so the largest difference is the difference of the largest value. That lets a
    caller pass the ``torch.aminmax`` it already has.
    """
    low, high = torch.aminmax(resized) if extremes is None else extremes
    top = high - low
    if float(top) == 0.0:
        return None
    resized.sub_(low).div_(top)
    return resized.cpu().numpy()


def _otsu_fill(normalised: np.ndarray) -> Mask:
    """Otsu on the 8-bit map, then the outer contours filled (as heatmap_to_segmentation.py).

    The reference draws every contour of ``RETR_TREE`` with PIL (outline and fill); filling
    the outer contours with OpenCV covers the same pixels (tests compare the two), because an
    inner contour lies inside its outer one. Contours of a single point are dropped there too.
    """
    grey = (normalised * 255).astype(np.uint8)
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros(grey.shape, dtype=np.uint8)
    cv2.drawContours(filled, [c for c in contours if len(c) > 1], -1, 1, thickness=cv2.FILLED)
    return filled.view(np.bool_)


def _binarise(normalised: np.ndarray | None, size: tuple[int, int], threshold: object) -> Mask:
    if normalised is None:  # a constant map highlights nothing
        return np.zeros(size, dtype=np.bool_)
    if threshold is None:
        return _otsu_fill(normalised)
    return np.asarray(normalised > threshold, dtype=np.bool_)


def segment_heatmap(
    heatmap: HeatmapLike, size: tuple[int, int], *, threshold: float | None = None
) -> Mask:
    """Binarises a heatmap at an X-ray's original size, as the CheXlocalize protocol does.

    The map is resized bilinearly (``align_corners=False``) to ``size`` and min-max
    normalised; then ``threshold=None`` applies Otsu's method to the map scaled to 8 bits
    (``uint8(255 * map)``) and fills the outer contours of the result, like the reference
    ``heatmap_to_segmentation.py``; a number keeps the pixels whose normalised value is above
    it. A constant map (all zero, typically) gives an empty mask.

    Args:
        heatmap: The map ``[h, w]`` at any resolution (a Grad-CAM map at the target layer's
            resolution, or upsampled); float64 maps stay float64, others become float32.
        size: ``(H, W)`` of the original X-ray.
        threshold: ``None`` for Otsu, or the level in ``[0, 1]`` of the normalised map.

    Returns:
        Boolean mask ``[H, W]``.

    Raises:
        TypeError: ``heatmap`` is neither a tensor nor an array.
        ValueError: ``heatmap`` is not a finite 2-D map, ``size`` is not two positive
            integers, or ``threshold`` is not finite.
    """
    shape = _check_size(size)
    level = None if threshold is None else _check_threshold(threshold, "threshold")
    normalised = _normalise_(_resize(_as_map(heatmap, "heatmap"), shape))
    return _binarise(normalised, shape, level)


def _hit(resized: torch.Tensor, truth: Mask, extremes: tuple[torch.Tensor, torch.Tensor]) -> float:
    """1.0 when the map's first maximum lies in the mask; a constant map never hits."""
    low, high = extremes
    if bool(low == high):
        return 0.0
    return float(truth.flat[int(np.argmax(resized.cpu().numpy()))])


def _iou(predicted: Mask, truth: Mask | None, true_positive_only: bool) -> tuple[float, int]:
    """IoU as the reference ``calculate_iou`` (NaN where undefined) and the predicted size."""
    pred_pixels = int(np.count_nonzero(predicted))
    truth_pixels = 0 if truth is None else int(np.count_nonzero(truth))
    if true_positive_only and (pred_pixels == 0 or truth_pixels == 0):
        return math.nan, pred_pixels
    if truth is None or truth_pixels == 0:
        return (0.0 if pred_pixels else math.nan), pred_pixels
    inter = int(np.count_nonzero(predicted & truth))
    union = pred_pixels + truth_pixels - inter
    return (inter / union if union else math.nan), pred_pixels


# ----------------------------------------------------------------------------------------------
# Inputs of a whole set


@dataclass(frozen=True)
class _Pair:
    cxr: str
    label: str
    size: tuple[int, int]
    empty: bool  # the ground-truth mask is empty (or the CXR has no ground truth)


class _Inputs:
    """The ground truth, heatmaps and sizes of one scoring or tuning run, checked up front."""

    def __init__(
        self,
        heatmaps: Mapping[tuple[str, str], HeatmapLike],
        ground_truth: GroundTruth,
        sizes: Mapping[str, tuple[int, int]] | None,
        full_set: bool,
    ) -> None:
        self.ground_truth = ground_truth
        self.keys: dict[tuple[str, str], tuple[str, str]] = {}
        for key in heatmaps:
            if not (
                isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)
            ):
                raise TypeError(f"heatmaps must be keyed by (cxr_id, label), got key {key!r}")
            try:
                normal = (key[0], chexpert_name(key[1]))
            except ValueError as error:
                raise ValueError(f"heatmaps[{key!r}]: {error}") from None
            if normal in self.keys:
                raise ValueError(f"heatmaps has {key!r} and {self.keys[normal]!r}: the same map")
            self.keys[normal] = key
        self.heatmaps = heatmaps
        self.labels = tuple(
            label for label in LOCALIZATION_LABELS if any(k[1] == label for k in self.keys)
        )
        if not self.labels:
            raise ValueError("heatmaps is empty: nothing to score")
        known = sorted(ground_truth)
        extra = sorted({cxr for cxr, _ in self.keys} - set(ground_truth))
        self.sizes: dict[str, tuple[int, int]] = {}
        for cxr in known:
            self.sizes[cxr] = _size_of(ground_truth, cxr)
        if full_set and extra:
            missing = [cxr for cxr in extra if sizes is None or cxr not in sizes]
            if missing:
                raise ValueError(
                    f"{len(missing)} CXRs have heatmaps but no ground truth and no size, first "
                    f"{missing[0]!r}: the full set counts them as CXRs without findings, which "
                    "needs their original (H, W) in sizes="
                )
            for cxr in extra:
                self.sizes[cxr] = _check_size(sizes[cxr])  # type: ignore[index]
        elif extra:
            logger.info(
                "%d CXRs have heatmaps but no ground truth; the true-positive slice cannot "
                "count them (their ground truth is empty)",
                len(extra),
            )
        self.cxrs = sorted(self.sizes)
        self.known = set(known)

    def pairs(self, cxr: str) -> Iterator[_Pair]:
        """One pair per scored pathology of a CXR."""
        known = cxr in self.known
        for label in self.labels:
            empty = not known or _is_empty(self.ground_truth, cxr, label)
            yield _Pair(cxr, label, self.sizes[cxr], empty)

    def heatmap(self, pair: _Pair) -> torch.Tensor:
        key = self.keys.get((pair.cxr, pair.label))
        if key is None:
            raise ValueError(
                f"no heatmap for CXR {pair.cxr!r}, {pair.label!r} (its ground truth is "
                f"{'empty' if pair.empty else 'not empty'}); give one for every scored pair"
            )
        return _as_map(self.heatmaps[key], f"heatmaps[{key!r}]")

    def truth(self, pair: _Pair) -> Mask | None:
        if pair.empty:
            return None
        mask = np.asarray(_mask_of(self.ground_truth[pair.cxr], pair.label), dtype=np.bool_)
        if mask.shape != pair.size:
            raise ValueError(
                f"ground truth of CXR {pair.cxr!r}, {pair.label!r} has shape {mask.shape}, "
                f"expected {pair.size}"
            )
        return mask


def _size_of(ground_truth: GroundTruth, cxr: str) -> tuple[int, int]:
    size = getattr(ground_truth, "size", None)
    if callable(size):
        return _check_size(size(cxr))
    masks = ground_truth[cxr]
    shapes = {np.shape(masks[label]) for label in masks}
    if len(shapes) != 1:
        raise ValueError(f"ground truth of CXR {cxr!r}: masks of different shapes {shapes}")
    return _check_size(next(iter(shapes)))


def _is_empty(ground_truth: GroundTruth, cxr: str, label: str) -> bool:
    is_empty = getattr(ground_truth, "is_empty", None)
    if callable(is_empty):
        return bool(is_empty(cxr, label))
    mask = _mask_of(ground_truth[cxr], label)
    return mask is None or not bool(np.any(mask))


def _mask_of(masks: Mapping[str, npt.ArrayLike], label: str) -> npt.ArrayLike | None:
    """A CXR's mask of ``label`` under either spelling ("Lung Opacity" is "Airspace Opacity")."""
    listed = set(masks)  # the keys given, not every spelling a mapping resolves
    names = [name for name in dict.fromkeys((label, chexlocalize_name(label))) if name in listed]
    if len(names) > 1:
        raise ValueError(f"ground truth has {names[0]!r} and {names[1]!r}: the same pathology")
    return masks[names[0]] if names else None


def _per_label(values: Mapping[str, float] | None, what: str) -> dict[str, np.float32]:
    out: dict[str, np.float32] = {}
    for label, value in (values or {}).items():
        name = chexpert_name(label)
        out[name] = _check_threshold(value, f"{what}[{label!r}]")
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

    def __init__(self, inputs: _Inputs, progress: bool) -> None:
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

    def heatmap(self, pair: _Pair) -> torch.Tensor:
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
    """The result of [`score_chexlocalize`][chexviz.explain.chexlocalize.score_chexlocalize].

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
                lower, upper = _interval(values)
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


def _interval(replicates: np.ndarray) -> tuple[float, float]:
    """The reference's percentile interval: the sorted replicates at fixed ranks.

    Replicates in which the metric is undefined (no defined value was drawn) are left out;
    the reference sorts them last, which can make its upper bound NaN.
    """
    ordered = np.sort(replicates[~np.isnan(replicates)])
    count = len(ordered)
    if count == 0:
        return math.nan, math.nan
    lower = max(int(_CONFIDENCE / 2 * count) - 1, 0)
    upper = max(int((1 - _CONFIDENCE / 2) * count) - 1, 0)
    return float(ordered[lower]), float(ordered[upper])


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
            lower, upper = _interval(boot[:, column]) if ok else (math.nan, math.nan)
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
        lower, upper = _interval(mean_replicates[name])
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
    inputs = _Inputs(heatmaps, ground_truth, sizes, full_set)
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


def _probability(probabilities: Mapping[tuple[str, str], float] | None, pair: _Pair) -> float:
    if probabilities is None:
        return math.nan
    for key in ((pair.cxr, pair.label), (pair.cxr, chexlocalize_name(pair.label))):
        if key in probabilities:
            value = float(probabilities[key])
            if not math.isfinite(value):
                raise ValueError(f"probabilities[{key!r}] is {value}")
            return value
    raise ValueError(f"no probability for CXR {pair.cxr!r}, {pair.label!r}")


def _score_pair(
    pair: _Pair,
    inputs: _Inputs,
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
        row["probability"] = _probability(probabilities, pair)
    level = levels.get(pair.label)
    resized = _resize(inputs.heatmap(pair), pair.size)
    extremes = torch.aminmax(resized)
    if truth is not None:
        row["hit"] = _hit(resized, truth, extremes)
    limit = limits.get(pair.label)
    if limit is not None and row["probability"] < limit:
        predicted = np.zeros(pair.size, dtype=np.bool_)
    else:
        predicted = _binarise(_normalise_(resized, extremes), pair.size, level)
    del resized
    row["iou"], row["pred_pixels"] = _iou(predicted, truth, true_positive_only)
    del predicted
    if prior is not None:
        row["chance_hit"] = area if truth is not None else math.nan
        row["chance_iou"] = area if truth is not None else 0.0
        resized = _resize(prior.heatmap(pair), pair.size)
        extremes = torch.aminmax(resized)
        if truth is not None:
            row["prior_hit"] = _hit(resized, truth, extremes)
        predicted = _binarise(_normalise_(resized, extremes), pair.size, level)
        row["prior_iou"], _ = _iou(predicted, truth, true_positive_only)
    return row


# ----------------------------------------------------------------------------------------------
# Tuning


@dataclass(frozen=True, eq=False)
class CheXlocalizeTuning:
    """The result of [`tune_chexlocalize`][chexviz.explain.chexlocalize.tune_chexlocalize].

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
    array = np.array([_check_threshold(v, what) for v in values], dtype=np.float32)
    if array.size == 0:
        raise ValueError(f"{what} is empty")
    return array


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
    once, since a cutoff only decides whether it is kept.

    Departures: the reference's cutoff script keeps a segmentation when the probability is
    strictly above the cutoff, while its segmentation script (which applies the cutoffs)
    keeps it when the probability is not below it; here the latter rule serves both. It also
    skips the cutoff 0 for Lung Lesion (one segmentation in its validation set); here every
    pathology gets the same candidates.

    Args:
        heatmaps: As for [`score_chexlocalize`][chexviz.explain.chexlocalize.score_chexlocalize].
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
    inputs = _Inputs(heatmaps, ground_truth, sizes, full_set)
    labels = inputs.labels
    # Per label: the sum and count of defined IoUs at each threshold; per cutoff likewise.
    threshold_sum = {label: np.zeros(len(levels)) for label in labels}
    threshold_n = {label: np.zeros(len(levels), dtype=np.int64) for label in labels}
    n_cutoffs = 0 if limits is None else len(limits)
    cutoff_sum = {label: np.zeros(n_cutoffs) for label in labels}
    cutoff_n = {label: np.zeros(n_cutoffs, dtype=np.int64) for label in labels}
    for cxr in tqdm(inputs.cxrs, desc="tuning", unit="CXR", disable=None if progress else True):
        for pair in inputs.pairs(cxr):
            if pair.empty and not full_set:
                continue
            truth = inputs.truth(pair)
            normalised = _normalise_(_resize(inputs.heatmap(pair), pair.size))
            if truth is not None:
                truth_pixels = int(np.count_nonzero(truth))
                inside = normalised[truth] if normalised is not None else None
                for k, level in enumerate(levels):
                    if normalised is None:
                        continue  # empty segmentation: IoU undefined on the slice
                    predicted = int(np.count_nonzero(normalised > level))
                    if predicted == 0:
                        continue
                    inter = int(np.count_nonzero(inside > level))
                    threshold_sum[pair.label][k] += inter / (predicted + truth_pixels - inter)
                    threshold_n[pair.label][k] += 1
            if limits is not None:
                probability = _probability(probabilities, pair)
                otsu, _ = _iou(_binarise(normalised, pair.size, None), truth, False)
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


def read_tuning_csv(path: str | os.PathLike[str]) -> dict[str, float]:
    """Reads tuned values from the reference scripts' CSV files (or chexviz's copies).

    ``tuning_results.csv`` (columns ``threshold, task``) gives each task's threshold;
    ``probability_tuning_results.csv`` (``prob_threshold, mIoU, task``, every candidate)
    gives each task's cutoff with the highest mIoU (the first on ties, as the reference).

    Args:
        path: The CSV file.

    Returns:
        CheXpert label name -> value.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file has neither set of columns, an unknown task, a task twice (in
            a threshold file) or a value that is not a finite number; the message names the
            file, line and column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "tuning CSV not found", str(path))
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable CSV file ({error})") from None
    if {"threshold", "task"} <= set(frame.columns):
        column = "threshold"
    elif {"prob_threshold", "mIoU", "task"} <= set(frame.columns):
        column = "prob_threshold"
    else:
        raise ValueError(
            f"{path}: expected columns 'threshold, task' (tuning_results.csv) or "
            f"'prob_threshold, mIoU, task' (probability_tuning_results.csv), got "
            f"{list(frame.columns)}"
        )
    numbers: dict[str, list[float]] = {}
    for line, cells in enumerate(frame.to_dict("records"), start=2):
        try:
            label = chexpert_name(cells["task"].strip())
        except ValueError as error:
            raise ValueError(f"{path} line {line}, column 'task': {error}") from None
        for name in (column, "mIoU") if column == "prob_threshold" else (column,):
            try:
                value = float(cells[name])
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise ValueError(
                    f"{path} line {line}, column {name!r}: {cells[name]!r} is not a finite number"
                )
        numbers.setdefault(label, []).append(float(cells[column]))
        if column == "prob_threshold":
            numbers[label].append(float(cells["mIoU"]))
    out: dict[str, float] = {}
    for label, values in numbers.items():
        if column == "threshold":
            if len(values) > 1:
                raise ValueError(
                    f"{path}: task {chexlocalize_name(label)!r} appears {len(values)} times"
                )
            out[label] = values[0]
        else:
            pairs = list(zip(values[0::2], values[1::2], strict=True))
            out[label] = max(pairs, key=lambda pair: pair[1])[0]
    if not out:
        raise ValueError(f"{path}: no rows")
    return out


# ----------------------------------------------------------------------------------------------
# Figures


def plot_chexlocalize(
    scores: CheXlocalizeScores, path: str | os.PathLike[str] | None = None
) -> Figure:
    """Plots mIoU and hit rate per pathology with their intervals beside the baselines.

    Args:
        scores: The result of ``score_chexlocalize`` (with ``baselines=True`` the chance and
            anatomical-prior figures are drawn beside the model's).
        path: Where to save the figure (PNG, 150 dpi); None only returns it.

    Returns:
        The matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    summary = scores.summary
    labels = list(summary.index)
    figure, axes = plt.subplots(1, 2, figsize=(11, 0.42 * len(labels) + 1.6), sharey=True)
    positions = np.arange(len(labels))[::-1]
    series = [
        ("", "model", "C0", "o", 0.18),
        ("prior_", "anatomical prior", "C2", "s", 0.0),
        ("chance_", "chance", "0.5", "|", -0.18),
    ]
    for axis, metric, title in ((axes[0], "miou", "mIoU"), (axes[1], "hit_rate", "hit rate")):
        for prefix, name, colour, marker, offset in series:
            column = f"{prefix}{metric}"
            if column not in summary.columns:
                continue
            values = summary[column].to_numpy(dtype=float)
            errors = np.abs(
                np.vstack(
                    [
                        values - summary[f"{column}_lower"].to_numpy(dtype=float),
                        summary[f"{column}_upper"].to_numpy(dtype=float) - values,
                    ]
                )
            )
            axis.errorbar(
                values,
                positions + offset,
                xerr=errors,
                fmt=marker,
                color=colour,
                label=name,
                capsize=2,
                markersize=5,
            )
        axis.set_title(f"{title} (95% bootstrap interval)")
        axis.set_xlim(0, 1)
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, labels)
    handles, names = axes[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="lower center", ncol=3, frameon=False)
    slice_name = "true-positive slice" if scores.true_positive_only else "full set"
    figure.suptitle(f"CheXlocalize protocol, IoU on the {slice_name}")
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    if path is not None:
        figure.savefig(path, dpi=150)
    return figure


def ground_truth_overlay(
    image: Image.Image | np.ndarray,
    heatmap: HeatmapLike,
    truth: npt.ArrayLike,
    *,
    size: int = 512,
    alpha: float = 0.5,
) -> Image.Image:
    """The heatmap over the X-ray with the radiologists' contour drawn on top.

    Args:
        image: The X-ray at its original size (PIL image or array ``[H, W]``, uint8 grey).
        heatmap: Its heatmap at any resolution (resized bilinearly and min-max normalised).
        truth: The ground-truth mask ``[H, W]`` at the original size.
        size: Longest side of the returned image, in pixels.
        alpha: Weight of the heatmap colour.

    Returns:
        An RGB image with the contour in cyan.

    Raises:
        ValueError: ``truth`` does not have the image's size.
    """
    from chexviz.explain.overlay import overlay_heatmap

    grey = (
        image.convert("L")
        if isinstance(image, Image.Image)
        else Image.fromarray(np.asarray(image, dtype=np.uint8))
    )
    mask = np.asarray(truth) != 0
    if mask.shape != (grey.height, grey.width):
        raise ValueError(f"truth has shape {mask.shape}, the image is {(grey.height, grey.width)}")
    scale = size / max(grey.width, grey.height)
    width, height = max(1, round(grey.width * scale)), max(1, round(grey.height * scale))
    small = np.asarray(grey.resize((width, height), Image.Resampling.BILINEAR))
    resized = _resize(_as_map(heatmap, "heatmap"), (height, width))
    normalised = _normalise_(resized)
    heat = np.zeros((height, width)) if normalised is None else normalised
    picture = overlay_heatmap(small, heat, alpha=alpha)
    outline = cv2.resize(mask.view(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(outline, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    draw = ImageDraw.Draw(picture)
    for contour in contours:
        points = [(int(x), int(y)) for x, y in contour[:, 0, :]]
        if len(points) > 1:
            draw.line([*points, points[0]], fill=(0, 255, 255), width=2)
        else:
            draw.point(points, fill=(0, 255, 255))
    return picture


# ----------------------------------------------------------------------------------------------
# The whole pipeline on a data set (``chexviz localize`` and the demo)


@dataclass(frozen=True, eq=False)
class _Explained:
    heatmaps: dict[tuple[str, str], torch.Tensor]
    probabilities: dict[tuple[str, str], float]
    paths: dict[str, Path]


def _explain_set(
    cam: GradCAM,
    dataset: CheXpertDataset,
    labels: Sequence[str],
    cxrs: Sequence[str],
    batch_size: int,
    progress: bool,
) -> _Explained:
    """Raw Grad-CAM maps (target-layer resolution) and probabilities of the given CXRs."""
    position = {cxr_id(path): index for index, path in enumerate(dataset.paths)}
    heatmaps: dict[tuple[str, str], torch.Tensor] = {}
    probabilities: dict[tuple[str, str], float] = {}
    with tqdm(
        total=len(cxrs), desc="Grad-CAM", unit="CXR", disable=None if progress else True
    ) as bar:
        for start in range(0, len(cxrs), batch_size):
            chunk = cxrs[start : start + batch_size]
            images = torch.stack([dataset[position[cxr]][0] for cxr in chunk])
            explanation = cam.explain(images, [list(labels)] * len(chunk))
            for offset, cxr in enumerate(chunk):
                for label in labels:
                    heatmaps[(cxr, label)] = explanation.raw_maps[offset][label]
                    column = explanation.labels.index(label)
                    probabilities[(cxr, label)] = float(explanation.probabilities[offset, column])
            bar.update(len(chunk))
    paths = {cxr: dataset.paths[position[cxr]] for cxr in cxrs}
    return _Explained(heatmaps, probabilities, paths)


def run_chexlocalize(
    cam: GradCAM,
    dataset: CheXpertDataset,
    ground_truth: CheXlocalizeGroundTruth,
    out_dir: str | os.PathLike[str],
    *,
    thresholds: Mapping[str, float] | None = None,
    cutoffs: Mapping[str, float] | None = None,
    true_positive_only: bool = True,
    overlays: int = 20,
    tune: bool = False,
    export: bool = False,
    batch_size: int = 16,
    n_bootstrap: int = 1000,
    seed: int = 0,
    progress: bool = True,
    min_cases: int = DEFAULT_MIN_POSITIVES,
) -> CheXlocalizeScores:
    """Explains a data set's X-rays, scores them with the CheXlocalize protocol, writes it all.

    Every ground-truth CXR must be an image of ``dataset`` (read with ``frontal_only=False``:
    CheXlocalize includes lateral views) at the size the ground truth gives; the images
    without an entry are CXRs without findings. The model's raw Grad-CAM maps (at the target
    layer's resolution) of the 10 pathologies, or of those the model outputs, are scored as
    [`score_chexlocalize`][chexviz.explain.chexlocalize.score_chexlocalize] does.

    Writes into ``out_dir``: the tables of
    [`CheXlocalizeScores.to_csv`][chexviz.explain.chexlocalize.CheXlocalizeScores.to_csv];
    ``localization.png`` (mIoU and hit rate per pathology beside chance and the anatomical
    prior); ``overlays/<cxr>_<label>.png`` for the first ``overlays`` pairs with a finding
    (the heatmap over the X-ray with the radiologists' contour); with ``tune``, the tuned
    thresholds and cutoffs of this set (``tuning_results.csv``,
    ``probability_tuning_results.csv``: tune on the validation set, score the test set with
    them); with ``export``, ``saliency_segmentations.json``, the segmentations of every CXR in
    the form the reference ``eval.py`` reads.

    Args:
        cam: Grad-CAM of a model with ``labels`` (a chexviz classifier).
        dataset: The X-rays (``CheXpertDataset(..., frontal_only=False, transform=None)``).
        ground_truth: As [`read_chexlocalize`][chexviz.data.chexlocalize.read_chexlocalize]
            returns.
        out_dir: Output folder (created if missing).
        thresholds: Per-label binarisation thresholds (others: Otsu).
        cutoffs: Per-label probability cutoffs.
        true_positive_only: IoU on the true-positive slice (True) or the full set.
        overlays: How many overlay figures to write.
        tune: Also tune thresholds and cutoffs on this set.
        export: Also write the segmentations of every CXR.
        batch_size: Images per Grad-CAM pass.
        n_bootstrap: Bootstrap resamples.
        seed: Bootstrap seed.
        progress: Show progress bars (only on a terminal).
        min_cases: Fewest CXRs with a finding a pathology needs to be reported (see
            [`score_chexlocalize`][chexviz.explain.chexlocalize.score_chexlocalize]).

    Returns:
        The scores.

    Raises:
        ValueError: A ground-truth CXR has no image in ``dataset`` or a size other than its
            image's (the message names the file, the CXR id and the field), the model has none
            of the 10 pathologies or no ``labels``, ``dataset`` has a transform, or an
            argument is out of range.
    """
    if overlays < 0 or batch_size < 1:
        raise ValueError(f"overlays must be >= 0 and batch_size >= 1, got {overlays}, {batch_size}")
    if getattr(dataset, "transform", None) is not None:
        raise ValueError("dataset has a transform: its images may no longer match the masks")
    model_labels = getattr(cam.model, "labels", None)
    if not model_labels:
        raise ValueError("the model has no labels; localisation needs a chexviz classifier")
    labels = [label for label in LOCALIZATION_LABELS if label in model_labels]
    if not labels:
        raise ValueError(
            f"the model outputs none of the localised pathologies {list(LOCALIZATION_LABELS)}"
        )
    left_out = [label for label in LOCALIZATION_LABELS if label not in labels]
    if left_out:
        logger.warning("the model does not output %s: they are not scored", left_out)
    images: dict[str, Path] = {}
    for path in dataset.paths:
        name = cxr_id(path)
        if name in images:
            raise ValueError(
                f"{dataset.csv_path}: two images have the CXR id {name!r}: {images[name]}, {path}"
            )
        images[name] = path
    sizes: dict[str, tuple[int, int]] = {}
    for cxr in ground_truth:
        if cxr not in images:
            raise ValueError(
                f"{ground_truth.path}: CXR {cxr!r} has no image in {dataset.csv_path} "
                "(is the ground truth of another split?)"
            )
    for cxr, path in images.items():
        width, height = read_image_size(path)
        sizes[cxr] = (height, width)
        if cxr in ground_truth and ground_truth.size(cxr) != (height, width):
            raise ValueError(
                f"{ground_truth.path}: CXR {cxr!r}, field 'size': {list(ground_truth.size(cxr))} "
                f"but its image {path} is {height}x{width} (height x width); masks are at the "
                "original size (the full-resolution release, not CheXpert-v1.0-small)"
            )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = sorted(images) if (tune or export or not true_positive_only) else sorted(ground_truth)
    explained = _explain_set(cam, dataset, labels, wanted, batch_size, progress)
    extra = {cxr: sizes[cxr] for cxr in wanted if cxr not in ground_truth}
    scores = score_chexlocalize(
        explained.heatmaps,
        ground_truth,
        thresholds=thresholds,
        probabilities=explained.probabilities,
        cutoffs=cutoffs,
        true_positive_only=true_positive_only,
        sizes=extra,
        n_bootstrap=n_bootstrap,
        min_cases=min_cases,
        seed=seed,
        progress=progress,
    )
    scores.to_csv(out)
    figure = plot_chexlocalize(scores, out / "localization.png")
    from matplotlib import pyplot as plt

    plt.close(figure)
    if overlays:
        _write_overlays(explained, ground_truth, out / "overlays", overlays)
    if tune:
        tune_chexlocalize(
            explained.heatmaps,
            ground_truth,
            probabilities=explained.probabilities,
            sizes=extra,
            progress=progress,
        ).to_csv(out)
    if export:
        levels = {chexpert_name(k): v for k, v in (thresholds or {}).items()}
        limits = {chexpert_name(k): v for k, v in (cutoffs or {}).items()}

        def segmentations() -> Iterator[tuple[str, dict[str, Mask]]]:
            for cxr in wanted:
                masks = {}
                for label in labels:
                    if explained.probabilities[(cxr, label)] < limits.get(label, -math.inf):
                        masks[label] = np.zeros(sizes[cxr], dtype=np.bool_)
                    else:
                        masks[label] = segment_heatmap(
                            explained.heatmaps[(cxr, label)],
                            sizes[cxr],
                            threshold=levels.get(label),
                        )
                yield cxr, masks

        write_chexlocalize(out / "saliency_segmentations.json", segmentations())
    return scores


def _write_overlays(
    explained: _Explained, ground_truth: CheXlocalizeGroundTruth, folder: Path, limit: int
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for cxr in sorted(ground_truth):
        for label in LOCALIZATION_LABELS:
            if written == limit:
                return
            if (cxr, label) not in explained.heatmaps or ground_truth.is_empty(cxr, label):
                continue
            with Image.open(explained.paths[cxr]) as image:
                picture = ground_truth_overlay(
                    image, explained.heatmaps[(cxr, label)], ground_truth.mask(cxr, label)
                )
            picture.save(folder / f"{cxr}_{label.replace(' ', '_')}.png")
            written += 1
