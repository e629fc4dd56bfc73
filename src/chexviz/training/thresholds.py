"""Per-label decision thresholds tuned on validation predictions.

A multi-label model trained on imbalanced labels rarely has its best operating point at 0.5.
[`tune_thresholds`][chexviz.training.thresholds.tune_thresholds] picks, per label, the threshold
that
maximises F1 or Youden's J (sensitivity + specificity - 1) on validation data. The trainer
stores them on the model with ``MultiLabelClassifier.set_thresholds``, where Grad-CAM and the
accuracy metric read them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np

from chexviz._internal.arrays import on_host

__all__ = ["ThresholdMetric", "tune_thresholds"]

logger = logging.getLogger(__name__)

ThresholdMetric = Literal["f1", "youden"]
"""What [`tune_thresholds`][chexviz.training.thresholds.tune_thresholds] maximises: ``"f1"`` or
``"youden"`` (Youden's J).
"""


def _best_threshold(score: np.ndarray, truth: np.ndarray, metric: ThresholdMetric) -> float:
    """Best ``score >= t`` cut for one label with both classes present."""
    order = np.argsort(-score, kind="stable")
    ordered = score[order]
    # One candidate per distinct score: predicting positive everything scored at least that high.
    last_of_group = np.r_[np.flatnonzero(np.diff(ordered)), ordered.size - 1]
    true_pos = np.cumsum(truth[order])[last_of_group].astype(np.float64)
    false_pos = (last_of_group + 1) - true_pos
    positives = float(truth.sum())
    if metric == "f1":
        value = 2.0 * true_pos / (true_pos + false_pos + positives)
    else:
        value = true_pos / positives - false_pos / (truth.size - positives)
    # argmax takes the first maximum, i.e. the highest threshold among equally good ones.
    return float(ordered[last_of_group[int(np.argmax(value))]])


def tune_thresholds(
    probs: np.ndarray,
    targets: np.ndarray,
    *,
    metric: ThresholdMetric = "f1",
    default: float | Sequence[float] | np.ndarray = 0.5,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Choose per-label thresholds maximising F1 or Youden's J on ``(probs, targets)``.

    A label is predicted positive when ``probability >= threshold``; each returned threshold is
    one of that label's observed probabilities. Entries whose target is ``nan`` are ignored. A
    label whose evaluated entries hold a single class cannot be tuned: it keeps its ``default``
    threshold and a warning names it.

    Args:
        probs: Probabilities ``[N, L]`` (an array, or a tensor on any device).
        targets: Targets ``[N, L]`` in ``{0, 1, nan}``.
        metric: ``"f1"`` or ``"youden"``.
        default: Threshold(s) for labels that cannot be tuned (scalar or ``[L]``).
        labels: Label names, only used in messages.

    Returns:
        Thresholds ``[L]`` as float32.

    Raises:
        ValueError: On shape mismatch or an unknown ``metric``.
    """
    if metric not in ("f1", "youden"):
        raise ValueError(f"metric must be 'f1' or 'youden', got {metric!r}")
    p = np.asarray(on_host(probs), dtype=np.float32)
    y = np.asarray(on_host(targets), dtype=np.float32)
    if p.ndim != 2 or p.shape != y.shape:
        raise ValueError(f"probs {p.shape} and targets {y.shape} must both have shape [N, L]")
    count = p.shape[1]
    names = tuple(labels) if labels is not None else tuple(f"label {j}" for j in range(count))
    if len(names) != count:
        raise ValueError(f"{len(names)} label names given for {count} columns")
    defaults = np.asarray(on_host(default), dtype=np.float32)
    result: np.ndarray = np.broadcast_to(defaults, (count,)).copy()
    untuned = []
    for j in range(count):
        valid = ~np.isnan(y[:, j])
        truth = y[valid, j] == 1
        if truth.all() or not truth.any():
            untuned.append(names[j])
            continue
        result[j] = _best_threshold(p[valid, j], truth, metric)
    if untuned:
        logger.warning(
            "thresholds not tuned (a single class in the data) for: %s; kept the default",
            ", ".join(untuned),
        )
    return result
