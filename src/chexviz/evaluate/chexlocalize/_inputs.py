"""The checked inputs of one scoring or tuning run: heatmaps, ground truth, sizes, pairs."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from chexviz.data.chexlocalize import LOCALIZATION_LABELS, chexlocalize_name, chexpert_name
from chexviz.evaluate.chexlocalize._pixels import Mask, as_map, check_size

if TYPE_CHECKING:
    from chexviz.evaluate.chexlocalize.scoring import GroundTruth
    from chexviz.evaluate.chexlocalize.segmentation import HeatmapLike

__all__ = ["Inputs", "Pair", "is_empty", "mask_of", "probability_of", "size_of"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    cxr: str
    label: str
    size: tuple[int, int]
    empty: bool  # the ground-truth mask is empty (or the CXR has no ground truth)


class Inputs:
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
            self.sizes[cxr] = size_of(ground_truth, cxr)
        if full_set and extra:
            missing = [cxr for cxr in extra if sizes is None or cxr not in sizes]
            if missing:
                raise ValueError(
                    f"{len(missing)} CXRs have heatmaps but no ground truth and no size, first "
                    f"{missing[0]!r}: the full set counts them as CXRs without findings, which "
                    "needs their original (H, W) in sizes="
                )
            for cxr in extra:
                self.sizes[cxr] = check_size(sizes[cxr])  # type: ignore[index]
        elif extra:
            logger.info(
                "%d CXRs have heatmaps but no ground truth; the true-positive slice cannot "
                "count them (their ground truth is empty)",
                len(extra),
            )
        self.cxrs = sorted(self.sizes)
        self.known = set(known)

    def pairs(self, cxr: str) -> Iterator[Pair]:
        """One pair per scored pathology of a CXR."""
        known = cxr in self.known
        for label in self.labels:
            empty = not known or is_empty(self.ground_truth, cxr, label)
            yield Pair(cxr, label, self.sizes[cxr], empty)

    def heatmap(self, pair: Pair) -> torch.Tensor:
        key = self.keys.get((pair.cxr, pair.label))
        if key is None:
            raise ValueError(
                f"no heatmap for CXR {pair.cxr!r}, {pair.label!r} (its ground truth is "
                f"{'empty' if pair.empty else 'not empty'}); give one for every scored pair"
            )
        return as_map(self.heatmaps[key], f"heatmaps[{key!r}]")

    def truth(self, pair: Pair) -> Mask | None:
        if pair.empty:
            return None
        mask = np.asarray(mask_of(self.ground_truth[pair.cxr], pair.label), dtype=np.bool_)
        if mask.shape != pair.size:
            raise ValueError(
                f"ground truth of CXR {pair.cxr!r}, {pair.label!r} has shape {mask.shape}, "
                f"expected {pair.size}"
            )
        return mask


def size_of(ground_truth: GroundTruth, cxr: str) -> tuple[int, int]:
    size = getattr(ground_truth, "size", None)
    if callable(size):
        return check_size(size(cxr))
    masks = ground_truth[cxr]
    shapes = {np.shape(masks[label]) for label in masks}
    if len(shapes) != 1:
        raise ValueError(f"ground truth of CXR {cxr!r}: masks of different shapes {shapes}")
    return check_size(next(iter(shapes)))


def is_empty(ground_truth: GroundTruth, cxr: str, label: str) -> bool:
    is_empty = getattr(ground_truth, "is_empty", None)
    if callable(is_empty):
        return bool(is_empty(cxr, label))
    mask = mask_of(ground_truth[cxr], label)
    return mask is None or not bool(np.any(mask))


def mask_of(masks: Mapping[str, npt.ArrayLike], label: str) -> npt.ArrayLike | None:
    """A CXR's mask of ``label`` under either spelling ("Lung Opacity" is "Airspace Opacity")."""
    listed = set(masks)  # the keys given, not every spelling a mapping resolves
    names = [name for name in dict.fromkeys((label, chexlocalize_name(label))) if name in listed]
    if len(names) > 1:
        raise ValueError(f"ground truth has {names[0]!r} and {names[1]!r}: the same pathology")
    return masks[names[0]] if names else None


def probability_of(probabilities: Mapping[tuple[str, str], float] | None, pair: Pair) -> float:
    if probabilities is None:
        return math.nan
    for key in ((pair.cxr, pair.label), (pair.cxr, chexlocalize_name(pair.label))):
        if key in probabilities:
            value = float(probabilities[key])
            if not math.isfinite(value):
                raise ValueError(f"probabilities[{key!r}] is {value}")
            return value
    raise ValueError(f"no probability for CXR {pair.cxr!r}, {pair.label!r}")
