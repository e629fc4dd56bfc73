"""Why a method fails: geometric features of the findings, and their correlation with scores.

CheXlocalize (Saporta et al. 2022, Table 2) explains where saliency methods fail with four
features of each ground-truth finding, computed as the reference
``compute_pathology_features.py`` computes them:

* **instances**: the number of separate pieces (bilateral effusion has two). The reference
  counts the radiologists' polygons in the annotation file; given one
  (``annotations=``), so does chexviz, and otherwise it counts the mask's 8-connected pieces
  (the outer contours OpenCV traces);
* **relative size**: the mask's area over the image's;
* **elongation**: the long side over the short side of the minimum-area rotated rectangle
  (``cv2.minAreaRect``) around the finding's longest contour;
* **irrectangularity**: ``1 - contour area / rectangle area`` for the same contour and
  rectangle (the reference's ``1 - rec_area_ratio``, ``regression_pathology_features.py``).

As in the reference, the contours are OpenCV's (``cv2.findContours`` with ``RETR_LIST`` and
``CHAIN_APPROX_NONE``), through the centres of the boundary pixels: a solid rectangle of
``h x w`` pixels has a contour, and so a rectangle, of ``(h - 1) x (w - 1)``.

[`feature_correlations`][chexviz.evaluate.chexlocalize.geometry.feature_correlations] then
gives, as ``regression_pathology_features.py`` does (through ``utils.run_linear_regression``),
the Spearman correlation of each feature with each method's IoU and hit, and with the gap
``human - method``, pooled over the pathologies on the true-positive slice (the CXRs where the
ground truth has the finding), with a Fisher-z 95% interval.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from chexviz.data.chexlocalize import (
    LOCALIZATION_LABELS,
    CheXlocalizeGroundTruth,
    chexlocalize_name,
    read_chexlocalize,
)
from chexviz.evaluate.chexlocalize._inputs import is_empty, mask_of
from chexviz.evaluate.chexlocalize.scoring import CheXlocalizeScores, GroundTruth

__all__ = ["FEATURES", "feature_correlations", "geometric_features", "shape_features"]

FEATURES: tuple[str, ...] = ("instances", "relative_size", "elongation", "irrectangularity")
"""The four features, in the order of the paper's Table 2."""

_OUTCOMES = ("iou", "hit")
_Z = 1.96  # the reference's two-sided 95% normal quantile


def shape_features(mask: npt.ArrayLike) -> dict[str, float]:
    """The four features of one non-empty mask, as ``get_geometric_features`` computes them.

    ``instances`` here is the number of 8-connected pieces (see the module's notes); the other
    three are the reference's. A finding whose longest contour has no area (a line or a single
    pixel, where the reference divides by zero) has NaN elongation and irrectangularity.

    Args:
        mask: ``[H, W]``, non-zero inside.

    Returns:
        ``{"instances", "relative_size", "elongation", "irrectangularity"}``.

    Raises:
        ValueError: The mask is not 2-D or is empty.
    """
    array = np.asarray(mask) != 0
    if array.ndim != 2:
        raise ValueError(f"a mask must be 2-D, got shape {array.shape}")
    if not array.any():
        raise ValueError("an empty mask has no geometric features")
    pixels = array.astype(np.uint8)
    outer, _ = cv2.findContours(pixels, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contours, _ = cv2.findContours(pixels, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    longest = max(contours, key=len)  # the reference's argmax over contour lengths
    _, (width, height), _ = cv2.minAreaRect(longest)
    elongation = irrectangularity = math.nan
    if min(width, height) > 0:
        elongation = max(width, height) / min(width, height)
        irrectangularity = 1.0 - cv2.contourArea(longest) / (width * height)
    return {
        "instances": float(len(outer)),
        "relative_size": float(np.count_nonzero(array)) / array.size,
        "elongation": float(elongation),
        "irrectangularity": float(irrectangularity),
    }


def geometric_features(
    ground_truth: GroundTruth | str | os.PathLike[str],
    *,
    annotations: CheXlocalizeGroundTruth | str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """The four features of every finding of the ground truth.

    Args:
        ground_truth: As [`read_chexlocalize`][chexviz.data.chexlocalize.read_chexlocalize]
            returns, or its file (segmentations or annotations).
        annotations: The radiologists' polygons (``gt_annotations_*.json``, read or its path):
            instances are then the number of polygons of the finding, as the reference counts
            them; without it, the mask's connected pieces.

    Returns:
        One row per (CXR, pathology) with a non-empty mask, CXRs sorted and pathologies in
        CheXpert order: ``cxr_id``, ``label`` (CheXpert name) and the four features.

    Raises:
        ValueError: ``annotations`` is not an annotations file or lacks a CXR of the ground
            truth (naming it).
    """
    if isinstance(ground_truth, str | os.PathLike):
        ground_truth = read_chexlocalize(ground_truth)
    if isinstance(annotations, str | os.PathLike):
        annotations = read_chexlocalize(annotations)
    if annotations is not None and annotations.format != "annotations":
        raise ValueError(f"{annotations.path}: annotations= needs a polygon (annotations) file")
    rows: list[dict[str, Any]] = []
    for cxr in sorted(ground_truth):
        masks = ground_truth[cxr]
        for label in _labels(masks):
            if is_empty(ground_truth, cxr, label):
                continue
            features = shape_features(np.asarray(mask_of(masks, label)))
            if annotations is not None:
                if cxr not in annotations:
                    raise ValueError(f"{annotations.path}: no CXR {cxr!r} of the ground truth")
                features["instances"] = float(len(annotations.polygons(cxr, label)))
            rows.append({"cxr_id": cxr, "label": label, **features})
    table: pd.DataFrame = pd.DataFrame(rows, columns=["cxr_id", "label", *FEATURES])
    return table


def _labels(masks: Mapping[str, Any]) -> list[str]:
    listed = set(masks)
    return [
        label
        for label in LOCALIZATION_LABELS
        if label in listed or chexlocalize_name(label) in listed
    ]


def _per_image(scores: pd.DataFrame | CheXlocalizeScores, what: str) -> pd.DataFrame:
    table = scores.per_image if isinstance(scores, CheXlocalizeScores) else scores
    missing = [c for c in ("cxr_id", "label", *_OUTCOMES) if c not in table.columns]
    if missing:
        raise ValueError(f"{what} lacks the columns {missing} of a per-image table")
    duplicated = table.duplicated(["cxr_id", "label"])
    if duplicated.any():
        first = table.loc[duplicated, ["cxr_id", "label"]].iloc[0].tolist()
        raise ValueError(f"{what} scores CXR {first[0]!r}, {first[1]!r} twice")
    indexed: pd.DataFrame = table.set_index(["cxr_id", "label"])[list(_OUTCOMES)]
    typed: pd.DataFrame = indexed.astype("float64")
    return typed


def _spearman(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``run_linear_regression``'s Spearman part: rho, p-value and the Fisher-z interval."""
    kept = ~(np.isnan(x) | np.isnan(y))
    n = int(kept.sum())
    out = {"n": float(n), "rho": math.nan, "p_value": math.nan}
    out |= {"rho_lower": math.nan, "rho_upper": math.nan}
    if n < 3 or np.ptp(x[kept]) == 0 or np.ptp(y[kept]) == 0:
        return out  # no rank correlation is defined
    result = stats.spearmanr(x[kept], y[kept])
    rho, p_value = float(result.statistic), float(result.pvalue)
    out |= {"rho": rho, "p_value": p_value}
    if n > 3:
        delta = _Z / math.sqrt(n - 3)
        z = math.atanh(min(max(rho, -1.0 + 1e-15), 1.0 - 1e-15))
        out |= {"rho_lower": math.tanh(z - delta), "rho_upper": math.tanh(z + delta)}
    return out


def feature_correlations(
    features: pd.DataFrame,
    scores_by_method: Mapping[str, pd.DataFrame | CheXlocalizeScores],
    human: pd.DataFrame | CheXlocalizeScores | None = None,
) -> pd.DataFrame:
    """Spearman correlation of each feature with each method's scores and gap to the human.

    As ``regression_pathology_features.py`` (the paper's Table 2): pooled over the
    pathologies, on the true-positive slice (every finding of ``features``, that is every
    (CXR, pathology) whose ground truth is non-empty), pairs with an undefined score left out
    (``spearmanr(..., nan_policy="omit")``). The interval is the reference's
    ``tanh(atanh(rho) +- 1.96 / sqrt(n - 3))``. The reference min-max normalises each feature
    first, which leaves ranks, and so Spearman's rho, unchanged.

    Args:
        features: As `geometric_features` returns.
        scores_by_method: Method name -> its per-image table (``CheXlocalizeScores.per_image``,
            or the scores themselves).
        human: The human benchmark's per-image table
            ([`score_human_benchmark`][chexviz.evaluate.chexlocalize.human.score_human_benchmark]);
            adds the gaps ``human - method`` (the reference's ``iou_diff``, ``hitmiss_diff``).

    Returns:
        One row per method, outcome (``iou``, ``hit``, and with ``human`` ``iou_gap``,
        ``hit_gap``) and feature: ``n`` (pairs), ``rho``, ``p_value`` (two-sided),
        ``rho_lower``, ``rho_upper`` (NaN where undefined: fewer than 3 or 4 pairs, or a
        constant column).

    Raises:
        ValueError: A table lacks the per-image columns or scores a pair twice, or a finding of
            ``features`` has no row in a method's (or the human's) table, naming it.
    """
    missing = [c for c in ("cxr_id", "label", *FEATURES) if c not in features.columns]
    if missing:
        raise ValueError(f"features lacks the columns {missing}")
    if not scores_by_method:
        raise ValueError("scores_by_method is empty: nothing to correlate")
    keys = pd.MultiIndex.from_frame(features[["cxr_id", "label"]])
    values = {name: features[name].to_numpy(dtype=np.float64) for name in FEATURES}
    tables = {
        name: _per_image(table, f"scores_by_method[{name!r}]")
        for name, table in scores_by_method.items()
    }
    if human is not None:
        tables["human benchmark"] = _per_image(human, "human")
    aligned: dict[str, pd.DataFrame] = {}
    for name, table in tables.items():
        absent = keys.difference(table.index)
        if len(absent):
            raise ValueError(
                f"{name}: no scores for {len(absent)} findings of the ground truth, first "
                f"CXR {absent[0][0]!r}, {absent[0][1]!r}; score every CXR with a finding"
            )
        aligned[name] = table.reindex(keys)
    rows: list[dict[str, Any]] = []
    for method in scores_by_method:
        outcomes = {outcome: aligned[method][outcome].to_numpy() for outcome in _OUTCOMES}
        if human is not None:
            for outcome in _OUTCOMES:
                gap = aligned["human benchmark"][outcome].to_numpy() - outcomes[outcome]
                outcomes[f"{outcome}_gap"] = gap
        for outcome, y in outcomes.items():
            for feature in FEATURES:
                rows.append(
                    {
                        "method": method,
                        "outcome": outcome,
                        "feature": feature,
                        **_spearman(values[feature], y),
                    }
                )
    correlations: pd.DataFrame = pd.DataFrame(rows).astype({"n": "int64"})
    return correlations
