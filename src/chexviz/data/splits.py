"""Patient-disjoint train/validation/test splits.

Images of one patient are strongly correlated (several views and studies of the same chest), so
a random split by image leaks patients across splits and inflates test scores.
[`split_by_patient`][chexviz.data.splits.split_by_patient] assigns whole patients to splits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from torch.utils.data import Subset

__all__ = ["REFERENCE_SPLIT", "PatientDataset", "split_by_patient"]

logger = logging.getLogger(__name__)

REFERENCE_SPLIT: tuple[int, int, int] = (30_000, 5_000, 5_000)
"""Train/validation/test image counts of the reference study, drawn from ``train.csv``."""

T = TypeVar("T", covariant=True)

_TOLERANCE = 1e-9


class PatientDataset(Protocol[T]):
    """A map-style data set that knows the patient of each item (like ``CheXpertDataset``)."""

    @property
    def patient_ids(self) -> Sequence[str]:
        """Patient id of each item."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> T: ...


def split_by_patient(
    dataset: PatientDataset[T] | Subset[T],
    sizes: Sequence[float] | Sequence[int],
    *,
    seed: int = 0,
) -> tuple[Subset[T], ...]:
    """Splits a data set into patient-disjoint subsets.

    Patients are shuffled with ``seed`` and dealt to the splits in order: the first split takes
    patients until it holds its number of images, then the second, and so on. A patient whose
    images would overshoot the current split is passed over (and stays available for the next
    splits), so **image counts are exact** whenever the remaining patients allow it; when they
    do not (say, every remaining patient has two images and one image is missing), the split
    ends just below its count and a warning is logged.

    Sizes are either all fractions of the images (floats in ``(0, 1]``, summing to at most 1)
    or all image counts (ints, summing to at most ``len(dataset)``). Fractions become counts by
    rounding ``fraction * len(dataset)``; when fractions sum to 1, the last split takes every
    remaining patient, so no image is left out. Otherwise the images beyond the requested
    sizes are left out of every split: ``(30_000, 5_000, 5_000)`` on the frontal images of
    ``train.csv`` reproduces the reference study's protocol
    ([`REFERENCE_SPLIT`][chexviz.data.splits.REFERENCE_SPLIT]).

    The same patients, sizes and seed always give the same splits, whatever the order of the
    items. Within a split, items keep the data set's order.

    Args:
        dataset: A data set with ``patient_ids`` (one per item), or a ``Subset`` of one
            (nested subsets too).
        sizes: One size per split: fractions or image counts.
        seed: Seed of the patient shuffle.

    Returns:
        One ``Subset`` per size. Subsets of a ``Subset`` are flattened: their ``dataset`` is the
        underlying data set and their ``indices`` index it directly.

    Raises:
        TypeError: ``dataset`` has no ``patient_ids``, or sizes mix ints and floats.
        ValueError: Sizes are empty, not positive, fractions sum to more than 1, or counts sum
            to more than the number of images; a split would be empty.

    Example:
        >>> class Toy(list):
        ...     patient_ids = ["p1", "p1", "p2", "p3", "p3", "p4"]
        >>> train, test = split_by_patient(Toy(range(6)), (4, 2), seed=0)
        >>> len(train), len(test)
        (4, 2)
    """
    base, indices = _flatten(dataset)
    patients = np.asarray([str(base.patient_ids[i]) for i in indices], dtype=object)
    targets, take_rest = _targets(sizes, len(indices))
    names, inverse, counts = np.unique(patients, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(names))
    assignment = np.full(len(names), -1, dtype=np.int64)
    remaining = order
    for split, target in enumerate(targets):
        rest = take_rest and split == len(targets) - 1
        if rest:
            chosen, remaining = remaining, remaining[:0]
        else:
            chosen, remaining = _fill(remaining, counts, target)
        assignment[chosen] = split
        filled = int(counts[chosen].sum())
        if filled == 0:
            raise ValueError(
                f"split {split} would be empty (size {sizes[split]!r} of {len(indices)} images)"
            )
        if filled < target and not rest:
            logger.warning(
                "split %d holds %d images, not %d: the remaining patients' images do not add "
                "up to it exactly",
                split,
                filled,
                target,
            )
    item_split = assignment[inverse]
    return tuple(
        Subset(base, [indices[i] for i in np.flatnonzero(item_split == split)])
        for split in range(len(targets))
    )


def _flatten(dataset: object) -> tuple[Any, list[int]]:
    if isinstance(dataset, Subset):
        base, outer = _flatten(dataset.dataset)
        return base, [outer[int(i)] for i in dataset.indices]
    patient_ids = getattr(dataset, "patient_ids", None)
    if patient_ids is None or not hasattr(dataset, "__len__"):
        raise TypeError(
            f"split_by_patient needs a data set with patient_ids, got {type(dataset).__name__}"
        )
    size = len(dataset)
    if len(patient_ids) != size:
        raise ValueError(f"patient_ids has {len(patient_ids)} entries for {size} items")
    return dataset, list(range(size))


def _targets(sizes: Sequence[float] | Sequence[int], total: int) -> tuple[list[int], bool]:
    values = list(sizes)
    if not values:
        raise ValueError("sizes must name at least one split")
    if any(isinstance(value, bool) or not isinstance(value, Real) for value in values):
        raise TypeError(f"sizes must be numbers, got {values!r}")
    if all(isinstance(value, Integral) for value in values):
        counts = [int(value) for value in values]
        if any(count <= 0 for count in counts):
            raise ValueError(f"image counts must be positive, got {counts}")
        if sum(counts) > total:
            raise ValueError(f"sizes ask for {sum(counts)} images but the data set has {total}")
        return counts, False
    if any(isinstance(value, Integral) for value in values):
        raise TypeError(f"sizes must be all fractions (floats) or all counts (ints), got {values}")
    fractions = [float(value) for value in values]
    if any(not 0.0 < fraction <= 1.0 for fraction in fractions):
        raise ValueError(f"fractions must lie in (0, 1], got {fractions}")
    fraction_sum = math.fsum(fractions)
    if fraction_sum > 1.0 + _TOLERANCE:
        raise ValueError(f"fractions must sum to at most 1, got {fractions} (sum {fraction_sum})")
    return [round(fraction * total) for fraction in fractions], fraction_sum >= 1.0 - _TOLERANCE


def _fill(
    candidates: npt.NDArray[np.int64], counts: npt.NDArray[np.int64], target: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    taken = np.zeros(len(candidates), dtype=bool)
    filled = 0
    for position, patient in enumerate(candidates):
        if filled == target:
            break
        if filled + counts[patient] <= target:
            taken[position] = True
            filled += int(counts[patient])
    return candidates[taken], candidates[~taken]
