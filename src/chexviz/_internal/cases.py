"""The one rule for "too few cases": the labels a summary scores, and a bootstrap that keeps them.

Every summary chexviz prints with an interval (external validation's AUROC, box
localisation, CheXlocalize) follows the same rule, so it lives here, below both
``chexviz.training`` and ``chexviz.explain``:

* A label is scored only with at least ``min_positives`` positive and ``min_negatives``
  negative cases (10 and 10 by default). Below that it is reported as "too few cases" with
  its counts, has no score and no interval, and is left out of the mean: an AUROC from two
  positives is 0.995 or 0.5 by luck, and its interval says nothing.
* The mean's bootstrap interval is over that fixed label set in every replicate. A replicate
  in which a kept label lost every positive (or negative) case is drawn again, and the
  number of such redraws is reported. With at least ten cases of each class the chance of
  a redraw is about ``exp(-10)`` per label, so nearly every first draw is kept and the
  conditioning is negligible; dropping such replicates while keeping labels with two
  positives (as chexviz did) conditioned on a common event (115 of 1,000 replicates) and
  biased the interval. Stratifying the resampling by each unit's pattern of label presence
  would guarantee both classes without redraws, but over a dozen labels most patterns hold
  a single patient, who would then be in every replicate and narrow the interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

DEFAULT_MIN_POSITIVES = 10
"""Fewest positive cases a label needs to be scored and averaged."""

DEFAULT_MIN_NEGATIVES = 10
"""Fewest negative cases a label needs to be scored and averaged."""

TOO_FEW = "too few cases"
"""The status of a label left out by the rule."""

_MAX_REDRAWS_PER_REPLICATE = 100

T = TypeVar("T")


def check_minimum(min_positives: int, min_negatives: int = 1) -> None:
    """Refuses a minimum that is not a positive integer.

    Args:
        min_positives: Fewest positive cases a label needs.
        min_negatives: Fewest negative cases a label needs.

    Raises:
        ValueError: Naming the argument at fault.
    """
    for name, value in (("min_positives", min_positives), ("min_negatives", min_negatives)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")


def enough_cases(
    positives: npt.ArrayLike,
    negatives: npt.ArrayLike | None,
    min_positives: int,
    min_negatives: int = 1,
) -> npt.NDArray[np.bool_]:
    """Whether each label has enough cases of each class to be scored.

    Args:
        positives: Positive cases per label.
        negatives: Negative cases per label, or None for a summary of positive cases only
            (localisation scores only positive findings).
        min_positives: Fewest positive cases needed.
        min_negatives: Fewest negative cases needed.

    Returns:
        ``[L]`` booleans.
    """
    check_minimum(min_positives, min_negatives)
    enough: npt.NDArray[np.bool_] = np.asarray(positives) >= min_positives
    if negatives is not None:
        enough &= np.asarray(negatives) >= min_negatives
    return enough


def too_few_line(
    labels: Sequence[str],
    counts: Sequence[str],
    enough: Sequence[bool] | npt.NDArray[np.bool_],
    *,
    min_positives: int,
    min_negatives: int | None,
) -> str | None:
    """The line naming the labels the rule left out, with their counts and the rule.

    Args:
        labels: Label names.
        counts: Per label, its counts in words (``"2 positives, 40 negatives"``).
        enough: Per label, whether it met the minimum.
        min_positives: The minimum of positive cases.
        min_negatives: The minimum of negative cases (None where only positives count).

    Returns:
        The line, or None when every label met the minimum.
    """
    left = [
        f"{label} ({count})"
        for label, count, ok in zip(labels, counts, enough, strict=True)
        if not ok
    ]
    if not left:
        return None
    rule = f"at least {min_positives} positive"
    rule += " cases" if min_negatives is None else f" and {min_negatives} negative cases"
    return f"{TOO_FEW}, not scored and left out of the mean (the rule: {rule}): " + "; ".join(left)


def complete_replicates(
    draw: Callable[[], T], complete: Callable[[T], bool], replicates: int
) -> tuple[list[T], int]:
    """Bootstrap replicates in which every kept label is defined, and how many were redrawn.

    Args:
        draw: Draws one replicate (its resampling weights, say).
        complete: Whether every kept label is defined in a replicate.
        replicates: How many replicates to return.

    Returns:
        The replicates (exactly ``replicates`` of them) and the number of draws rejected.

    Raises:
        ValueError: If a replicate still misses a label after 100 draws per replicate (the
            minimum is far too low for the data).
    """
    kept: list[T] = []
    redrawn = 0
    limit = _MAX_REDRAWS_PER_REPLICATE * max(replicates, 1)
    while len(kept) < replicates:
        candidate = draw()
        if complete(candidate):
            kept.append(candidate)
            continue
        redrawn += 1
        if redrawn > limit:
            raise ValueError(
                f"{redrawn} bootstrap draws missed a scored label's positives or negatives; "
                "raise the minimum number of cases"
            )
    return kept, redrawn
