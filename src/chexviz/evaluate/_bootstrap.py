"""The reference's bootstrap interval, one home for every CheXlocalize-style summary."""

from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.05
"""One minus the coverage of the intervals (95%)."""


def percentile_interval(replicates: np.ndarray) -> tuple[float, float]:
    """CheXlocalize ``eval.py``'s 95% percentile interval: the sorted replicates at fixed ranks.

    The ranks are ``int(0.025 n) - 1`` and ``int(0.975 n) - 1`` of the ``n`` defined replicates.
    Replicates in which the metric is undefined (no defined value was drawn) are left out; the
    reference sorts them last, which can make its upper bound NaN.

    Args:
        replicates: The bootstrap replicates of one statistic (NaN where undefined).

    Returns:
        ``(lower, upper)``; NaN for both when no replicate is defined.
    """
    ordered = np.sort(replicates[~np.isnan(replicates)])
    count = len(ordered)
    if count == 0:
        return math.nan, math.nan
    lower = max(int(CONFIDENCE / 2 * count) - 1, 0)
    upper = max(int((1 - CONFIDENCE / 2) * count) - 1, 0)
    return float(ordered[lower]), float(ordered[upper])
