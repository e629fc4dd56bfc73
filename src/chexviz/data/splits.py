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
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from torch.utils.data import Subset

from chexviz._internal.datasets import unwrap_subsets

__all__ = ["REFERENCE_SPLIT", "PatientDataset", "PatientSplits", "split_by_patient"]

logger = logging.getLogger(__name__)

REFERENCE_SPLIT: tuple[int, int, int] = (30_000, 5_000, 5_000)
"""Train/validation/test image counts of the reference study, drawn from ``train.csv``."""

T = TypeVar("T", covariant=True)

_TOLERANCE = 1e-9
# Placements the exact search of split_by_patient may try before it keeps the greedy split.
_SEARCH_STEPS = 1_000_000


class PatientDataset(Protocol[T]):
    """A map-style data set that knows the patient of each item (like ``CheXpertDataset``)."""

    @property
    def patient_ids(self) -> Sequence[str]:
        """Patient id of each item."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> T: ...


class PatientSplits(tuple[Subset[T], ...], Generic[T]):
    """The subsets of `split_by_patient`, with how close they came to the sizes asked for.

    A tuple of ``Subset``s (``train, val, test = split_by_patient(...)`` unpacks it) that
    also carries, per split:

    Attributes:
        targets: The image counts aimed at (fractions turned into counts).
        sizes: The image counts reached.
        patients: The number of patients in each split.
    """

    targets: tuple[int, ...]
    sizes: tuple[int, ...]
    patients: tuple[int, ...]

    def __new__(
        cls,
        subsets: Sequence[Subset[T]],
        targets: Sequence[int],
        patients: Sequence[int],
    ) -> PatientSplits[T]:
        """Wraps the subsets with their targets and patient counts."""
        splits = super().__new__(cls, subsets)
        splits.targets = tuple(int(target) for target in targets)
        splits.sizes = tuple(len(subset) for subset in subsets)
        splits.patients = tuple(int(count) for count in patients)
        return splits

    @property
    def deviations(self) -> tuple[int, ...]:
        """Images reached minus images aimed at, per split."""
        return tuple(size - target for size, target in zip(self.sizes, self.targets, strict=True))

    def summary(self) -> str:
        """One line per split: images reached, aimed at, and patients."""
        return "\n".join(
            f"split {number}: {size} images (target {target}, {size - target:+d}), "
            f"{patients} patients"
            for number, (size, target, patients) in enumerate(
                zip(self.sizes, self.targets, self.patients, strict=True)
            )
        )


def split_by_patient(
    dataset: PatientDataset[T] | Subset[T],
    sizes: Sequence[float] | Sequence[int],
    *,
    seed: int = 0,
) -> PatientSplits[T]:
    """Splits a data set into patient-disjoint subsets, as close to the sizes as patients allow.

    Whole patients are assigned, largest first, each to a split it fits in, drawn with a
    probability proportional to how far that split is below its target (so large patients are
    spread over the splits like the targets, not all put in the largest), or, when it fits in
    none, to the one it overshoots least. The many small patients of a chest X-ray data
    set then fill the gaps the large ones leave. When that pass misses a target, a depth-first
    search over the patients looks for an exact split, so **image counts are exact whenever
    whole patients can add up to them** (the search is capped at a million placements, far
    beyond what it needs on small or one-image-rich data sets), and heavy-tailed data (an NIH
    patient with over a hundred follow-up images) still gets every split a fair share instead
    of an error. The result says how close it came (``targets``, ``sizes``, ``deviations``,
    ``summary()``), and a warning is logged when a split misses its target.

    Sizes are either all fractions of the images (floats in ``(0, 1]``, summing to at most 1)
    or all image counts (ints, summing to at most ``len(dataset)``):

    - **Fractions are targets**: ``round(fraction * len(dataset))`` images, which a split may
      over- or undershoot by whole patients. When they sum to 1, every image is assigned (the
      last split's target is what the others leave); otherwise the images beyond them are left
      out of every split.
    - **Counts are limits**: a split never holds more images than its count, and patients that
      fit in no split are left out. ``(30_000, 5_000, 5_000)`` on the frontal images of
      ``train.csv`` reproduces the reference study's protocol
      ([`REFERENCE_SPLIT`][chexviz.data.splits.REFERENCE_SPLIT]).

    A split is never empty: when the assignment leaves one without patients, the patient whose
    move there costs least is moved. Only a split that truly cannot get a patient (fewer
    patients than splits, or a count smaller than every patient) raises.

    The same patients, sizes and seed always give the same splits, whatever the order of the
    items. Within a split, items keep the data set's order.

    Args:
        dataset: A data set with ``patient_ids`` (one per item), or a ``Subset`` of one
            (nested subsets too).
        sizes: One size per split: fractions or image counts.
        seed: Seed of the random choices.

    Returns:
        One ``Subset`` per size, as a [`PatientSplits`][chexviz.data.splits.PatientSplits]
        tuple. Subsets of a ``Subset`` are flattened: their ``dataset`` is the underlying data
        set and their ``indices`` index it directly.

    Raises:
        TypeError: ``dataset`` has no ``patient_ids``, or sizes mix ints and floats.
        ValueError: Sizes are empty, not positive, fractions sum to more than 1, or counts sum
            to more than the number of images; a split cannot get any patient.

    Example:
        >>> class Toy(list):
        ...     patient_ids = ["p1", "p1", "p2", "p3", "p3", "p4"]
        >>> train, test = split_by_patient(Toy(range(6)), (4, 2), seed=0)
        >>> len(train), len(test)
        (4, 2)
    """
    base, indices = _flatten(dataset)
    patients = np.asarray([str(base.patient_ids[i]) for i in indices], dtype=object)
    targets, limits = _targets(sizes, len(indices))
    names, inverse, counts = np.unique(patients, return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    # Largest first; equal patients in a random order.
    shuffled = rng.permutation(len(names))
    order = shuffled[np.argsort(-counts[shuffled], kind="stable")]
    # Bins: the splits, then the images left out (when the sizes do not cover every image).
    rest = len(indices) - sum(targets)
    bins = np.asarray([*targets, rest] if rest > 0 or limits else targets, dtype=np.int64)
    assignment = _assign(order, counts, bins, rng, limits=limits, splits=len(targets))
    placed = assignment >= 0
    reached = np.bincount(assignment[placed], weights=counts[placed], minlength=len(targets))
    # The bins add up to the images unless rounded fractions overshoot them (then none is exact).
    if not np.array_equal(reached, targets) and int(bins.sum()) == len(indices):
        exact = _exact(order, counts, bins, rng)
        if exact is not None:
            assignment = np.where(exact < len(targets), exact, -1)
    for split in range(len(targets)):
        if not (assignment == split).any():
            _fill_empty(assignment, counts, bins, split, limits=limits, splits=len(targets))
    item_split = assignment[inverse]
    subsets = [
        Subset(base, [indices[i] for i in np.flatnonzero(item_split == split)])
        for split in range(len(targets))
    ]
    result = PatientSplits(
        subsets, targets, [int((assignment == split).sum()) for split in range(len(targets))]
    )
    logger.info("patient split:\n%s", result.summary())
    for split, (size, target) in enumerate(zip(result.sizes, targets, strict=True)):
        if size != target:
            logger.warning(
                "split %d holds %d images, not %d: whole patients (%d in it) do not add up to "
                "it exactly",
                split,
                size,
                target,
                result.patients[split],
            )
    return result


def _assign(
    order: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
    bins: npt.NDArray[np.int64],
    rng: np.random.Generator,
    *,
    limits: bool,
    splits: int,
) -> npt.NDArray[np.int64]:
    """Bin of each patient, largest patients first.

    A patient goes to a bin it fits in, drawn with a probability proportional to how far the
    bin is below its target, so that large patients spread over the splits like the targets
    do instead of all landing in the largest one; a patient that fits nowhere goes to the bin
    it overshoots least (with limits: to the images left out).
    """
    deficit = bins.astype(np.int64).copy()
    assignment = np.full(len(counts), -1, dtype=np.int64)
    for patient in order:
        size = int(counts[patient])
        room = np.where(deficit >= size, deficit, 0).astype(np.float64)
        if room.any():
            chosen = int(rng.choice(len(bins), p=room / room.sum()))
        elif limits:
            # Counts are limits: what fits in no split stays out (the last bin).
            chosen = len(bins) - 1
        else:
            chosen = int(np.argmax(deficit))
        assignment[patient] = chosen
        deficit[chosen] -= size
    assignment[assignment >= splits] = -1
    return assignment


def _exact(
    order: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
    bins: npt.NDArray[np.int64],
    rng: np.random.Generator,
) -> npt.NDArray[np.int64] | None:
    """An assignment that fills every bin exactly, or None when there is none.

    A depth-first search over the patients, largest first: each goes to a bin it fits in,
    tried in a random order weighted by how far each bin is below its target (as `_assign`
    draws), so the seed picks among the exact splits. Dead ends are remembered by the patient
    and the bins' remaining room, a bin with the same room as one already tried is not tried
    again (the two are interchangeable), and once only one-image patients remain every
    remaining room can be filled. The bins add up to the number of images, so a full
    assignment is exact. The search gives up (None) after ``_SEARCH_STEPS`` placements.
    """
    sizes = counts[order]
    # Patients are sorted largest first, so the one-image patients are the tail.
    singles_from = int(np.searchsorted(-sizes, -1, side="left"))
    room = [int(value) for value in bins]
    chosen = np.full(len(order), -1, dtype=np.int64)
    candidates: list[list[int]] = []
    dead_ends: set[tuple[int, tuple[int, ...]]] = set()
    position, steps = 0, 0
    while position >= 0:
        if position == singles_from:
            fill = np.repeat(np.arange(len(room)), room)
            chosen[singles_from:] = rng.permutation(fill)
            assignment = np.empty(len(order), dtype=np.int64)
            assignment[order] = chosen
            return assignment
        size = int(sizes[position])
        if len(candidates) == position:  # a new node
            candidates.append(_bins_to_try(room, size, rng, (position, tuple(room)) in dead_ends))
        else:  # back from a dead end below: undo this patient's placement
            room[int(chosen[position])] += size
        if candidates[position]:
            target = candidates[position].pop()
            chosen[position] = target
            room[target] -= size
            position += 1
            steps += 1
            if steps > _SEARCH_STEPS:
                return None
        else:
            dead_ends.add((position, tuple(room)))
            candidates.pop()
            position -= 1
    return None


def _bins_to_try(room: list[int], size: int, rng: np.random.Generator, dead: bool) -> list[int]:
    """Bins a patient of ``size`` images may go to, the first to try last (for ``pop``)."""
    if dead:
        return []
    fitting = [b for b in range(len(room)) if room[b] >= size]
    distinct = [b for i, b in enumerate(fitting) if room[b] not in [room[f] for f in fitting[:i]]]
    if not distinct:
        return []
    weights = np.asarray([room[b] for b in distinct], dtype=np.float64)
    drawn = rng.choice(len(distinct), size=len(distinct), replace=False, p=weights / weights.sum())
    return [distinct[int(i)] for i in drawn[::-1]]


def _fill_empty(
    assignment: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
    bins: npt.NDArray[np.int64],
    split: int,
    *,
    limits: bool,
    splits: int,
) -> None:
    """Moves into the empty ``split`` the patient whose move adds the least deviation."""
    filled = np.asarray([int(counts[assignment == b].sum()) for b in range(splits)], dtype=np.int64)
    members = np.bincount(assignment[assignment >= 0], minlength=splits)
    # A patient may leave a split that keeps another patient, or the images left out.
    donor = np.where(assignment >= 0, members[np.maximum(assignment, 0)] >= 2, True)
    if limits:
        donor &= counts <= bins[split]
    if not donor.any():
        size = f"{bins[split]} images" if limits else f"a target of {bins[split]} images"
        raise ValueError(
            f"split {split} would be empty ({size}): no patient can be moved into it "
            f"({len(counts)} patients, {int(counts.min())} to {int(counts.max())} images each)"
        )
    source = np.where(assignment >= 0, assignment, 0)
    before = np.abs(filled[source] - bins[source])
    after = np.abs(filled[source] - counts - bins[source])
    leaving = np.where(assignment >= 0, after - before, 0)
    cost = leaving + np.abs(counts - bins[split]) - abs(int(bins[split]))
    cost = np.where(donor, cost, np.iinfo(np.int64).max)
    # Ties: the smallest patient, then the first in name order.
    best = np.lexsort((np.arange(len(counts)), counts, cost))[0]
    assignment[best] = split


def _flatten(dataset: object) -> tuple[Any, list[int]]:
    base, positions = unwrap_subsets(dataset)
    patient_ids = getattr(base, "patient_ids", None)
    if patient_ids is None or not hasattr(base, "__len__"):
        raise TypeError(
            f"split_by_patient needs a data set with patient_ids, got {type(base).__name__}"
        )
    size = len(base)
    if len(patient_ids) != size:
        raise ValueError(f"patient_ids has {len(patient_ids)} entries for {size} items")
    return base, list(range(size)) if positions is None else positions


def _targets(sizes: Sequence[float] | Sequence[int], total: int) -> tuple[list[int], bool]:
    """Image count aimed at per split, and whether the counts are limits (sizes were ints)."""
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
        return counts, True
    if any(isinstance(value, Integral) for value in values):
        raise TypeError(f"sizes must be all fractions (floats) or all counts (ints), got {values}")
    fractions = [float(value) for value in values]
    if any(not 0.0 < fraction <= 1.0 for fraction in fractions):
        raise ValueError(f"fractions must lie in (0, 1], got {fractions}")
    fraction_sum = math.fsum(fractions)
    if fraction_sum > 1.0 + _TOLERANCE:
        raise ValueError(f"fractions must sum to at most 1, got {fractions} (sum {fraction_sum})")
    targets = [round(fraction * total) for fraction in fractions]
    if fraction_sum >= 1.0 - _TOLERANCE:
        # Every image is assigned: the last split aims at what the others leave.
        targets[-1] = max(0, total - sum(targets[:-1]))
    return targets, False
