"""The human benchmark of CheXlocalize, and pixel precision, sensitivity and specificity.

CheXlocalize's test set was annotated twice: the ground truth by two radiologists, and a
*human benchmark* by a separate group of three, who drew segmentations
(``hb_segmentations_test.json``, the ground truth's format) and marked each finding's most
representative point (``hb_salient_pt_test.json``, read by
[`read_salient_points`][chexviz.data.chexlocalize.read_salient_points]). Scoring the benchmark
against the ground truth tells how far a saliency method is from a radiologist.

* [`score_human_benchmark`][chexviz.evaluate.chexlocalize.human.score_human_benchmark]: IoU
  and hit per (CXR, pathology), in the per-image format of
  [`CheXlocalizeScores.per_image`][chexviz.evaluate.chexlocalize.scoring.CheXlocalizeScores],
  so that the benchmark compares with the methods as one more of them;
* `precision_sensitivity_specificity`: each pixel a classification, pooled over the CXRs,
  per pathology, for a method's segmentations or the benchmark's.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from chexviz.data.chexlocalize import (
    LOCALIZATION_LABELS,
    chexpert_name,
    read_chexlocalize,
    read_salient_points,
)
from chexviz.evaluate.chexlocalize._inputs import Pair, is_empty, mask_of, size_of
from chexviz.evaluate.chexlocalize._pixels import mask_iou
from chexviz.evaluate.chexlocalize.scoring import GroundTruth

__all__ = [
    "Segmentations",
    "precision_sensitivity_specificity",
    "score_human_benchmark",
]

logger = logging.getLogger(__name__)

Segmentations = (
    str | os.PathLike[str] | GroundTruth | Mapping[tuple[str, str], npt.ArrayLike | torch.Tensor]
)
"""Predicted masks: a CheXlocalize segmentation JSON file (its path), ``{cxr_id: {label:
mask}}`` as [`read_chexlocalize`][chexviz.data.chexlocalize.read_chexlocalize] returns, or
``{(cxr_id, label): mask}``; masks at the CXR's original size, non-zero inside."""

_SHOWN = 5  # CXR ids quoted in an error; the count says how many there are


def _name(source: object, default: str) -> str:
    """What to call an input in an error: its file when it came from one."""
    path = getattr(source, "path", None)
    return str(path) if path is not None else default


def _as_nested(source: Segmentations, what: str) -> tuple[Mapping[str, Mapping[str, Any]], str]:
    """``{cxr_id: {label: mask}}`` and the name of the input, from any accepted form."""
    if isinstance(source, str | os.PathLike):
        truth = read_chexlocalize(source)
        return truth, str(truth.path)
    if not isinstance(source, Mapping):
        raise TypeError(f"{what} must be a file or a mapping, got {type(source).__name__}")
    keys = list(source)
    if keys and all(isinstance(key, tuple) for key in keys):
        nested: dict[str, dict[str, Any]] = {}
        keyed: Mapping[Any, Any] = source
        for key in keys:
            if len(key) != 2 or not all(isinstance(k, str) for k in key):
                raise TypeError(f"{what} must be keyed by (cxr_id, label), got key {key!r}")
            nested.setdefault(key[0], {})[key[1]] = keyed[key]
        return nested, what
    if not all(isinstance(key, str) for key in keys):
        raise TypeError(f"{what} must be keyed by CXR id or by (cxr_id, label)")
    return source, _name(source, what)  # type: ignore[return-value]


def _listing(cxrs: Sequence[str]) -> str:
    shown = ", ".join(repr(cxr) for cxr in cxrs[:_SHOWN])
    return f"{len(cxrs)} CXRs ({shown}{', ...' if len(cxrs) > _SHOWN else ''})"


def _labels_of(labels: Sequence[str] | None) -> tuple[str, ...]:
    if labels is None:
        return LOCALIZATION_LABELS
    names = {chexpert_name(label) for label in labels}
    return tuple(label for label in LOCALIZATION_LABELS if label in names)


def _predicted(
    masks: Mapping[str, Any], cxr: str, label: str, size: tuple[int, int], where: str
) -> npt.NDArray[np.bool_]:
    """A predicted mask checked against its CXR's size; all zero when the label is absent."""
    mask = mask_of(masks, label)
    if mask is None:
        return np.zeros(size, dtype=np.bool_)
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    array: npt.NDArray[np.bool_] = np.asarray(mask) != 0
    if array.shape != size:
        raise ValueError(
            f"{where}: CXR {cxr!r}, {label!r}: the mask has shape {array.shape} but the ground "
            f"truth {size}; masks must be at the X-ray's original size"
        )
    return array


def _truth(ground_truth: GroundTruth, pair: Pair) -> npt.NDArray[np.bool_]:
    if pair.empty:
        return np.zeros(pair.size, dtype=np.bool_)
    return np.asarray(mask_of(ground_truth[pair.cxr], pair.label), dtype=np.bool_)


def score_human_benchmark(
    ground_truth: GroundTruth | str | os.PathLike[str],
    hb_segmentations: Segmentations,
    *,
    salient_points: str
    | os.PathLike[str]
    | Mapping[str, Mapping[str, Sequence[Sequence[float]]]]
    | None = None,
    true_positive_only: bool = True,
    labels: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Scores the human benchmark against the ground truth, per (CXR, pathology).

    IoU is the reference ``eval.py``'s ``calculate_iou`` of the benchmark's mask against the
    ground truth (its ``get_ious`` with ``--pred_path hb_segmentations_test.json``): on the
    true-positive slice (the default, ``--true_pos_only True``) defined where both masks are
    non-empty; on the full set wherever either is. Hit is ``get_hb_hitrates``'s (``eval.py
    --metric hitmiss --if_human_benchmark True``): where the ground truth is non-empty, 1 when
    any of the finding's salient points ``(x, y)`` falls inside it (``gt_mask[int(y),
    int(x)]``), 0 when none does **or the benchmark gave no point** for it; NaN where the
    ground truth is empty. Without ``salient_points``, hit is NaN throughout.

    The table has the columns and dtypes of
    [`CheXlocalizeScores.per_image`][chexviz.evaluate.chexlocalize.scoring.CheXlocalizeScores]
    without a probability or baselines (``cxr_id``, ``label``, ``gt_pixels``,
    ``pred_pixels``, ``iou``, ``hit``), one row per CXR of the ground truth and pathology, in
    the same order, with ``pred_pixels`` missing where ``score_chexlocalize`` leaves it
    missing (pairs without a finding, on the true-positive slice). So the benchmark goes into
    a comparison of methods as one more method.

    Unlike the reference, which scores a CXR missing from the benchmark's file as an empty
    mask and ignores a benchmark CXR without ground truth, both are errors here: the two files
    must cover the same CXRs (the reference's files do).

    Args:
        ground_truth: As [`read_chexlocalize`][chexviz.data.chexlocalize.read_chexlocalize]
            returns, or its file.
        hb_segmentations: The benchmark's masks: ``hb_segmentations_test.json`` (its path),
            or masks in any form of `Segmentations`.
        salient_points: ``hb_salient_pt_test.json`` (its path) or ``{cxr_id: {label: [[x, y],
            ...]}}``.
        true_positive_only: IoU on the true-positive slice (True) or the full set.
        labels: Pathologies to score (either spelling); all 10 by default.

    Returns:
        The per-image table.

    Raises:
        ValueError: The benchmark covers CXRs the ground truth lacks or the other way round,
            the salient points name a CXR without ground truth, a point lies off its image,
            or a mask is not at its CXR's size (each names the file and the CXRs); or a file
            is bad (see ``read_chexlocalize``).
        TypeError: An input is neither a file nor a mapping of the expected keys.
    """
    if isinstance(ground_truth, str | os.PathLike):
        ground_truth = read_chexlocalize(ground_truth)
    truth_name = _name(ground_truth, "ground_truth")
    hb, hb_name = _as_nested(hb_segmentations, "hb_segmentations")
    cxrs = sorted(ground_truth)
    missing = sorted(set(cxrs) - set(hb))
    extra = sorted(set(hb) - set(cxrs))
    if missing or extra:
        problems = []
        if extra:
            problems.append(f"{hb_name} covers {_listing(extra)} that {truth_name} lacks")
        if missing:
            problems.append(f"{truth_name} has {_listing(missing)} that {hb_name} lacks")
        raise ValueError(
            "the human benchmark and the ground truth must cover the same CXRs: "
            + "; ".join(problems)
        )
    points, points_name = _points(salient_points, set(cxrs), truth_name)
    scored = _labels_of(labels)
    rows: list[dict[str, Any]] = []
    unpointed = 0
    for cxr in cxrs:
        size = size_of(ground_truth, cxr)
        for label in scored:
            pair = Pair(cxr, label, size, is_empty(ground_truth, cxr, label))
            row: dict[str, Any] = {
                "cxr_id": cxr,
                "label": label,
                "gt_pixels": 0,
                "pred_pixels": pd.NA,
                "iou": math.nan,
                "hit": math.nan,
            }
            rows.append(row)
            if pair.empty and true_positive_only:
                continue  # as score_chexlocalize: nothing of this pair can be defined
            truth = None if pair.empty else _truth(ground_truth, pair)
            predicted = _predicted(hb[cxr], cxr, label, size, hb_name)
            row["iou"], row["pred_pixels"] = mask_iou(predicted, truth, true_positive_only)
            if truth is None:
                continue
            row["gt_pixels"] = int(np.count_nonzero(truth))
            if points is not None:
                found = points.get(cxr, {}).get(label)
                if found is None:
                    unpointed += 1
                row["hit"] = _hit(found or (), truth, f"{points_name}: CXR {cxr!r}, {label!r}")
    if unpointed:
        logger.info(
            "%s: %d findings of the ground truth have no salient point; they count as misses, "
            "as in the reference eval.py",
            points_name,
            unpointed,
        )
    columns = ["cxr_id", "label", "gt_pixels", "pred_pixels", "iou", "hit"]
    table: pd.DataFrame = pd.DataFrame(rows, columns=columns).astype(
        {"gt_pixels": "int64", "pred_pixels": "Int64", "iou": "float64", "hit": "float64"}
    )
    return table


def _points(
    salient_points: str
    | os.PathLike[str]
    | Mapping[str, Mapping[str, Sequence[Sequence[float]]]]
    | None,
    cxrs: set[str],
    truth_name: str,
) -> tuple[dict[str, dict[str, Sequence[Sequence[float]]]] | None, str]:
    """The salient points by CheXpert label, refusing CXRs the ground truth lacks."""
    if salient_points is None:
        return None, "salient_points"
    if isinstance(salient_points, str | os.PathLike):
        name = str(salient_points)
        raw: Mapping[str, Mapping[str, Sequence[Sequence[float]]]] = read_salient_points(
            salient_points
        )
    else:
        name, raw = "salient_points", salient_points
    points: dict[str, dict[str, Sequence[Sequence[float]]]] = {}
    for cxr, labelled in raw.items():
        points[cxr] = {}
        for label, listed in labelled.items():
            if label == "img_size":
                continue
            points[cxr][chexpert_name(label)] = listed
    extra = sorted(set(points) - cxrs)
    if extra:
        raise ValueError(
            f"{name} has salient points of {_listing(extra)} that {truth_name} lacks; "
            "the human benchmark and the ground truth must cover the same CXRs"
        )
    return points, name


def _hit(points: Sequence[Sequence[float]], truth: npt.NDArray[np.bool_], where: str) -> float:
    """``get_hb_hitrates``: 1.0 when any point ``(x, y)`` is in the mask at ``[int(y), int(x)]``."""
    height, width = truth.shape
    hit = 0.0
    for index, point in enumerate(points):
        x, y = float(point[0]), float(point[1])
        # int() truncates towards zero, so (-1, width) is the range that lands on a pixel; the
        # reference would index from the end for a negative one.
        if not (-1.0 < x < width and -1.0 < y < height):
            raise ValueError(
                f"{where}, point {index}: ({x:g}, {y:g}) lies off the {width}x{height} image"
            )
        if truth[int(y), int(x)]:
            hit = 1.0
    return hit


def precision_sensitivity_specificity(
    segmentations: Segmentations,
    ground_truth: GroundTruth | str | os.PathLike[str],
    *,
    labels: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Pixel precision, sensitivity (recall) and specificity per pathology.

    As the reference ``precision_recall_specificity.py``: every pixel of every CXR of the
    ground truth is a classification, the ground-truth mask its label; the true and false
    positives and negatives are **pooled over the CXRs** of each pathology (not averaged per
    CXR), and ``precision = TP / (TP + FP)``, ``sensitivity = TP / (TP + FN)``,
    ``specificity = TN / (TN + FP)`` (NaN where the denominator is 0). It runs the same way
    for a saliency method's segmentations and for the human benchmark's.

    Only the ground truth's CXRs count (the reference's loop); segmentations of other CXRs
    (a method's file lists every CXR, the ground truth only those with a finding) are left out
    and counted in a log line. A ground-truth CXR without segmentations is an error (the
    reference would count it as empty masks).

    Args:
        segmentations: Predicted masks in any form of
            [`Segmentations`][chexviz.evaluate.chexlocalize.human.Segmentations] (a
            pathology missing from a CXR's masks is an empty mask).
        ground_truth: As [`read_chexlocalize`][chexviz.data.chexlocalize.read_chexlocalize]
            returns, or its file.
        labels: Pathologies (either spelling); all 10 by default.

    Returns:
        One row per pathology (index ``label``, CheXpert names): ``cxrs``, ``tp``, ``fp``,
        ``tn``, ``fn`` (pixel counts), ``precision``, ``sensitivity``, ``specificity``.

    Raises:
        ValueError: A ground-truth CXR has no segmentations, or a mask is not at its CXR's
            size (naming the input and the CXRs).
        TypeError: An input is neither a file nor a mapping of the expected keys.
    """
    if isinstance(ground_truth, str | os.PathLike):
        ground_truth = read_chexlocalize(ground_truth)
    truth_name = _name(ground_truth, "ground_truth")
    predicted, name = _as_nested(segmentations, "segmentations")
    cxrs = sorted(ground_truth)
    missing = sorted(set(cxrs) - set(predicted))
    if missing:
        raise ValueError(f"{name} has no segmentations of {_listing(missing)} of {truth_name}")
    outside = len(set(predicted) - set(cxrs))
    if outside:
        logger.info("%s: %d CXRs without ground truth are not counted", name, outside)
    scored = _labels_of(labels)
    counts = np.zeros((len(scored), 4), dtype=np.int64)  # tp, fp, tn, fn
    for cxr in cxrs:
        size = size_of(ground_truth, cxr)
        for row, label in enumerate(scored):
            pair = Pair(cxr, label, size, is_empty(ground_truth, cxr, label))
            truth = _truth(ground_truth, pair)
            mask = _predicted(predicted[cxr], cxr, label, size, name)
            tp = int(np.count_nonzero(mask & truth))
            positives, found = int(np.count_nonzero(mask)), int(np.count_nonzero(truth))
            counts[row] += (tp, positives - tp, truth.size - positives - found + tp, found - tp)
    table: pd.DataFrame = pd.DataFrame(
        counts, columns=["tp", "fp", "tn", "fn"], index=pd.Index(scored)
    )
    table.index.name = "label"
    table.insert(0, "cxrs", len(cxrs))
    true_pos, false_pos, true_neg, false_neg = counts.astype(np.float64).T
    with np.errstate(invalid="ignore", divide="ignore"):
        table["precision"] = true_pos / (true_pos + false_pos)
        table["sensitivity"] = true_pos / (true_pos + false_neg)
        table["specificity"] = true_neg / (true_neg + false_pos)
    return table
