"""How well heatmaps point at annotated boxes: pointing game, IoU, energy in box.

Box convention: a box ``(x0, y0, x1, y1)`` is a rectangle in continuous pixel coordinates of
the map it is compared with, where pixel ``(row r, column c)`` covers ``[c, c + 1) x [r, r + 1)``.
A pixel belongs to the box when its square overlaps the box with positive area, so integer
boxes select exactly ``map[y0:y1, x0:x1]``, and a box scaled down to a small map never
vanishes. Boxes reaching past the map's edge are clipped to it. Several boxes for one
finding count as their union ("hit if in any").

Every score is paired with two baselines that know nothing of the image:

* chance, a uniformly random pixel: the fraction of the map's pixels inside the box. It is the
  expected hit rate of a random pointer and the expected energy in the box of a flat map.
* the anatomical prior ([`anatomical_prior`][chexviz.evaluate.localization.anatomical_prior]):
  per label, the mean of that label's *training* boxes, scored exactly like a heatmap. Findings
  sit where the anatomy puts them (the heart, the bases), so a map that only found the right
  region of the chest scores about as well as this fixed map per label; beating chance alone
  says little.

The pointing game scores a single point per map, its arg-max (see
[`map_peak`][chexviz.explain.overlay.map_peak] for the tie rule), as CheXlocalize does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, Protocol, cast

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

from chexviz._internal.arrays import as_heatmap
from chexviz._internal.cases import (
    DEFAULT_MIN_POSITIVES,
    TOO_FEW,
    check_minimum,
    enough_cases,
)
from chexviz._internal.datasets import unwrap_subsets
from chexviz.data.boxes import BOX_COLUMNS, BoxLike, scale_boxes
from chexviz.data.dataset import RELEASE_FOLDERS
from chexviz.data.labels import MissingColumnsError
from chexviz.data.splits import split_by_patient
from chexviz.explain.overlay import map_peak

if TYPE_CHECKING:
    from chexviz.data.dataset import CheXpertDataset
    from chexviz.explain.explanation import Explanation

__all__ = [
    "Explainer",
    "anatomical_prior",
    "box_iou",
    "box_mask",
    "chance_pointing_rate",
    "energy_in_box",
    "pointing_game",
    "score_localization",
    "score_localization_cross_fitted",
    "select_boxes",
    "summarize_localization",
    "unscored_boxes",
]

logger = logging.getLogger(__name__)

MapLike = torch.Tensor | np.ndarray

_EPS = 1e-6
"""Slack for float error in scaled box edges: an edge at 64.0000001 must not add a pixel."""

_CORNERS = ["x0", "y0", "x1", "y1"]


class Explainer(Protocol):
    """What `score_localization` needs of an explainer; `chexviz.explain.gradcam.GradCAM` is one."""

    def explain(self, img: torch.Tensor, classes: Sequence[Sequence[str]] | None, /) -> Explanation:
        """Explains a batch ``[B, C, H, W]``: the predicted positives, or per-image classes."""


def _as_boxes(box: BoxLike) -> np.ndarray:
    try:
        boxes = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"box must be (x0, y0, x1, y1) or a list of such, got {box!r}") from error
    if boxes.ndim == 1:
        boxes = boxes[None, :]
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] == 0:
        raise ValueError(
            f"box must be (x0, y0, x1, y1) or a non-empty list of such, got shape {boxes.shape}"
        )
    if not np.isfinite(boxes).all():
        raise ValueError(f"box coordinates must be finite, got {boxes.tolist()}")
    bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bad.any():
        raise ValueError(f"box {boxes[bad][0].tolist()} is empty: it needs x0 < x1 and y0 < y1")
    return boxes


def box_mask(box: BoxLike, shape: tuple[int, int]) -> np.ndarray:
    """Rasterises one or several boxes onto a map of the given shape.

    Args:
        box: One box ``(x0, y0, x1, y1)`` or several, in the map's pixel coordinates.
        shape: ``(H, W)`` of the map.

    Returns:
        Boolean array ``[H, W]``, true on pixels whose square overlaps any box.

    Raises:
        ValueError: If a box is empty or malformed, or no box overlaps the map.
    """
    height, width = shape
    boxes = _as_boxes(box)
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[:, None]
    in_rows = (rows < boxes[:, 3] - _EPS) & (rows + 1 > boxes[:, 1] + _EPS)  # [H, K]
    in_cols = (cols < boxes[:, 2] - _EPS) & (cols + 1 > boxes[:, 0] + _EPS)  # [W, K]
    mask: np.ndarray = np.any(in_rows[:, None, :] & in_cols[None, :, :], axis=2)
    if not mask.any():
        raise ValueError(f"box {boxes.tolist()} lies outside the {height}x{width} map")
    return mask


def pointing_game(heatmap: MapLike, box: BoxLike) -> bool:
    """Whether the heatmap's peak falls inside the box (or any of the boxes).

    The peak is one pixel, [`map_peak`][chexviz.explain.overlay.map_peak] (the first
    maximum in row-major order); a constant map (such as an all-zero map) points nowhere and
    never hits, so a method cannot score by highlighting nothing.

    Args:
        heatmap: Map ``[H, W]``.
        box: One box ``(x0, y0, x1, y1)`` or several, in the map's pixel coordinates.

    Returns:
        True for a hit.

    Raises:
        ValueError: If the map is not a finite 2-D map, or a box is empty or off the map.
    """
    heat = as_heatmap(heatmap)
    mask = box_mask(box, heat.shape)
    peak = map_peak(heat)
    return peak is not None and bool(mask[peak])


def box_iou(heatmap: MapLike, box: BoxLike, threshold: float = 0.5) -> float:
    """Intersection over union of the thresholded heatmap with the box region.

    Args:
        heatmap: Map ``[H, W]``, normally in [0, 1] as in ``Explanation.heatmaps``.
        box: One box ``(x0, y0, x1, y1)`` or several (their union), in the map's pixels.
        threshold: Pixels with ``heatmap >= threshold`` form the predicted region.

    Returns:
        IoU in [0, 1]; 0 when no pixel reaches the threshold.

    Raises:
        ValueError: If the map or box is malformed, or the threshold is not finite.
    """
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    heat = as_heatmap(heatmap)
    mask = box_mask(box, heat.shape)
    region = heat >= threshold
    return float((region & mask).sum() / (region | mask).sum())


def energy_in_box(heatmap: MapLike, box: BoxLike) -> float:
    """Fraction of the heatmap's total mass that lies inside the box(es).

    An all-zero map has no mass anywhere; it scores 0, like a map whose mass is all outside,
    so that empty explanations earn no credit (and do not vanish from averages as NaN would).

    Args:
        heatmap: Non-negative map ``[H, W]``.
        box: One box ``(x0, y0, x1, y1)`` or several (their union), in the map's pixels.

    Returns:
        A fraction in [0, 1].

    Raises:
        ValueError: If the map has negative values or the map or box is malformed.
    """
    heat = as_heatmap(heatmap)
    if heat.min() < 0:
        raise ValueError(f"heatmap must be non-negative for energy_in_box, min is {heat.min()}")
    mask = box_mask(box, heat.shape)
    total = heat.sum()
    if total == 0:
        return 0.0
    return float(min(1.0, heat[mask].sum() / total))


def _chance(box: BoxLike, shape: tuple[int, int]) -> float:
    return float(box_mask(box, shape).mean())


def chance_pointing_rate(boxes: pd.DataFrame | Sequence[BoxLike], size: int) -> float:
    """Hit rate of a pointer that picks a uniformly random pixel, averaged over findings.

    For each finding it is the fraction of pixels inside its box(es); this is the level a
    pointing-game hit rate (or an energy-in-box average) must beat to mean anything.

    Args:
        boxes: Either a boxes frame as written by ``chexviz.data.synthetic`` (columns ``Path``,
            ``label``, ``x0``, ``y0``, ``x1``, ``y1``, ``width``, ``height``, boxes in each
            image's original pixels; rows sharing ``Path`` and ``label`` form one finding),
            scaled here to ``size`` like the dataset resizes images; or a sequence with the
            box(es) of each finding already in the pixels of a ``size`` map.
        size: Side ``S`` of the square ``S x S`` maps (the dataset's ``image_size``).

    Returns:
        The mean chance over findings.

    Raises:
        ValueError: If there are no boxes, or a box is empty or off the map.
        KeyError: If the frame lacks a required column.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    shape = (size, size)
    if isinstance(boxes, Sequence):
        groups: list[BoxLike] = list(boxes)
    else:
        groups = list(_finding_boxes(boxes, size).values())
    if not groups:
        raise ValueError("no boxes given")
    return float(np.mean([_chance(group, shape) for group in groups]))


def _path_key(value: object) -> str:
    """A CSV ``Path`` without the release folder, so both CSVs' spellings meet."""
    parts = [part for part in str(value).strip().replace("\\", "/").split("/") if part]
    if len(parts) > 1 and parts[0] in RELEASE_FOLDERS:
        parts = parts[1:]
    return "/".join(parts)


def _finding_boxes(boxes: pd.DataFrame, size: int) -> dict[tuple[str, str], np.ndarray]:
    """Boxes ``[K, 4]`` in ``size x size`` pixels per ``(Path, label)``, in frame order."""
    missing = [column for column in BOX_COLUMNS if column not in boxes.columns]
    if missing:
        raise MissingColumnsError(missing, "the boxes frame")
    scaled = scale_boxes(boxes, size)
    keys = scaled["Path"].map(_path_key)
    groups: dict[tuple[str, str], np.ndarray] = {}
    for _, group in scaled.groupby([keys, scaled["label"]], sort=False):
        first = group.iloc[0]
        groups[(str(first["Path"]), str(first["label"]))] = group[_CORNERS].to_numpy(
            dtype=np.float64
        )
    return groups


def anatomical_prior(
    boxes: pd.DataFrame, size: int, labels: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """The anatomical-prior baseline: per label, the mean of that label's box masks.

    Build it from the **training** images' boxes (see
    [`select_boxes`][chexviz.evaluate.localization.select_boxes]) and score it on the test
    boxes exactly like a heatmap: its peak is the pointing guess, it is thresholded for IoU and
    its mass counted for energy. Each finding (the union of its boxes, rasterised at
    ``size``) counts once. The mean is min-max normalised like Grad-CAM heatmaps, so the
    same IoU threshold means the same thing; a constant mean map becomes all zero and points
    nowhere.

    Args:
        boxes: A boxes frame (columns ``Path``, ``label``, ``x0``, ``y0``, ``x1``, ``y1``,
            ``width``, ``height``, boxes in each image's original pixels), as from
            ``chexviz.data.boxes.load_boxes``.
        size: Side ``S`` of the square ``S x S`` maps (the dataset's ``image_size``).
        labels: Build maps for these labels only; None for every label with a box.

    Returns:
        Label -> float64 map ``[S, S]`` in ``[0, 1]``, in order of first appearance; labels
        without any box have no map.

    Raises:
        KeyError: If the frame lacks a required column.
        ValueError: If ``size`` is not positive, or a box is empty or off its image.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    wanted = None if labels is None else set(labels)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for (_, label), group in _finding_boxes(boxes, size).items():
        if wanted is not None and label not in wanted:
            continue
        mask = box_mask(group, (size, size))
        sums[label] = sums.get(label, np.zeros((size, size))) + mask
        counts[label] = counts.get(label, 0) + 1
    prior = {}
    for label, total in sums.items():
        mean = total / counts[label]
        spread = mean.max() - mean.min()
        prior[label] = (mean - mean.min()) / spread if spread > 0 else np.zeros_like(mean)
    return prior


def select_boxes(
    boxes: pd.DataFrame, dataset: Dataset[tuple[torch.Tensor, torch.Tensor]]
) -> pd.DataFrame:
    """The rows of a boxes frame that lie on images of ``dataset``.

    Use it to keep the training split's boxes for
    [`anatomical_prior`][chexviz.evaluate.localization.anatomical_prior], so that the baseline
    never sees the boxes it is scored on.

    Args:
        boxes: A boxes frame with a ``Path`` column (with or without the release folder).
        dataset: A `CheXpertDataset` or a ``Subset`` of one (as from ``split_by_patient``).

    Returns:
        The matching rows, in their order.

    Raises:
        KeyError: If ``boxes`` has no ``Path`` column.
        TypeError: If ``dataset`` is not a `CheXpertDataset` or a ``Subset`` of one.
    """
    if "Path" not in boxes.columns:
        raise MissingColumnsError(["Path"], "the boxes frame")
    base, positions = _items(dataset)
    csv_paths = base.frame["Path"].to_numpy()
    keys = {_path_key(csv_paths[position]) for position in positions}
    selected: pd.DataFrame = boxes[boxes["Path"].map(_path_key).isin(keys)]
    return selected


def _items(
    dataset: Dataset[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[CheXpertDataset, list[int]]:
    """The underlying data set and, per item of ``dataset``, its position there."""
    inner, positions = unwrap_subsets(dataset)
    for attribute in ("frame", "image_size"):
        if not hasattr(inner, attribute):
            raise TypeError(
                f"dataset must be a CheXpertDataset (or a Subset of one) with .{attribute}, "
                f"got {type(inner).__name__}"
            )
    base = cast("CheXpertDataset", inner)
    return base, list(range(len(base))) if positions is None else positions


_ROW_TYPES: dict[str, str] = {
    "index": "int64",
    "Path": "str",
    "label": "str",
    "n_boxes": "int64",
    "probability": "float64",
    "predicted": "bool",
    "explained": "bool",
    "zero_map": "boolean",
    "hit": "boolean",
    "iou": "float64",
    "energy": "float64",
    "chance": "float64",
    "prior_hit": "boolean",
    "prior_iou": "float64",
    "prior_energy": "float64",
}


def _finding_rows(
    explanation: Explanation,
    offset: int,
    item: int,
    findings: list[tuple[str, str, np.ndarray]],
    threshold: float,
    prior: Mapping[str, np.ndarray],
) -> Iterator[dict[str, object]]:
    shape = (int(explanation.images.shape[2]), int(explanation.images.shape[3]))
    maps = explanation.heatmaps[offset]
    for path, label, group in findings:
        position = explanation.labels.index(label)
        probability = float(explanation.probabilities[offset, position])
        row: dict[str, object] = {
            "index": item,
            "Path": path,
            "label": label,
            "n_boxes": len(group),
            "probability": probability,
            "predicted": probability >= float(explanation.thresholds[position]),
            "explained": label in maps,
            "zero_map": pd.NA,
            "hit": pd.NA,
            "iou": np.nan,
            "energy": np.nan,
            "chance": _chance(group, shape),
            "prior_hit": pd.NA,
            "prior_iou": np.nan,
            "prior_energy": np.nan,
        }
        if label in maps:
            heat = maps[label]
            row["zero_map"] = label in explanation.zero_maps[offset]
            row["hit"] = pointing_game(heat, group)
            row["iou"] = box_iou(heat, group, threshold)
            row["energy"] = energy_in_box(heat, group)
            if label in prior:
                # the same findings, scored the same way, by the fixed map of the label
                row["prior_hit"] = pointing_game(prior[label], group)
                row["prior_iou"] = box_iou(prior[label], group, threshold)
                row["prior_energy"] = energy_in_box(prior[label], group)
        yield row


def _check_labels(findings: Iterable[tuple[str, str]], labels: tuple[str, ...]) -> None:
    unknown = sorted({label for _, label in findings} - set(labels))
    if unknown:
        raise ValueError(f"boxes have labels {unknown} that the model does not output {labels}")


_NO_LABEL = "no CheXpert counterpart"
_NOT_OUTPUT = "not an output of the model"


def unscored_boxes(boxes: pd.DataFrame, labels: Iterable[str]) -> pd.DataFrame:
    """The boxes that scoring a model with ``labels`` leaves out, and why.

    A box is left out when its ``label`` is empty (a finding of another data set with no
    CheXpert counterpart, such as NIH's Infiltrate boxes from
    [`read_nih_boxes`][chexviz.data.nih.read_nih_boxes]) or is not one of the model's
    outputs. [`score_localization`][chexviz.evaluate.localization.score_localization] logs
    their count; ``chexviz localize`` prints it.

    Args:
        boxes: A boxes frame with a ``label`` column.
        labels: The model's outputs.

    Returns:
        The left-out rows, with a ``reason`` column (``"no CheXpert counterpart"`` or
        ``"not an output of the model"``).

    Raises:
        MissingColumnsError: ``boxes`` has no ``label`` column.
    """
    reasons = _reasons(boxes, tuple(labels))
    left: pd.DataFrame = boxes[(reasons != "").to_numpy()].assign(
        reason=reasons[reasons != ""].to_numpy()
    )
    return left


def _reasons(boxes: pd.DataFrame, labels: tuple[str, ...]) -> pd.Series:
    """Per box, why it is not scored, or ``""``."""
    if "label" not in boxes.columns:
        raise MissingColumnsError(["label"], "the boxes frame")
    label = boxes["label"].fillna("").astype(str).str.strip()
    reasons = np.where(label == "", _NO_LABEL, np.where(label.isin(labels), "", _NOT_OUTPUT))
    out: pd.Series = pd.Series(reasons, index=boxes.index, dtype=str)
    return out


def _scorable(boxes: pd.DataFrame, labels: tuple[str, ...] | None) -> pd.DataFrame:
    """The boxes a model with ``labels`` can be scored on; the others are counted in the log."""
    if labels is None:  # an explainer without model.labels: boxes are checked per batch
        return boxes
    reasons = _reasons(boxes, labels)
    if (reasons == "").all():
        return boxes
    column = "nih_label" if "nih_label" in boxes.columns else "label"
    for reason in (_NO_LABEL, _NOT_OUTPUT):
        rows = boxes[(reasons == reason).to_numpy()]
        if len(rows):
            logger.warning(
                "left out %d of %d boxes (%s): %s",
                len(rows),
                len(boxes),
                reason,
                rows[column].value_counts().to_dict(),
            )
    kept: pd.DataFrame = boxes[(reasons == "").to_numpy()]
    if kept.empty:
        raise ValueError(
            f"none of the {len(boxes)} boxes is of a label the model outputs {list(labels)}"
        )
    return kept


def _model_labels(cam: Explainer) -> tuple[str, ...] | None:
    """The outputs of the explainer's model (``cam.model.labels``), if it says."""
    labels = getattr(getattr(cam, "model", None), "labels", None)
    return tuple(str(label) for label in labels) if labels else None


def score_localization(
    cam: Explainer,
    dataset: Dataset[tuple[torch.Tensor, torch.Tensor]],
    boxes: pd.DataFrame,
    *,
    classes: Literal["positives", "true"] = "positives",
    threshold: float = 0.5,
    batch_size: int = 16,
    progress: bool = True,
    prior: Mapping[str, MapLike] | None = None,
) -> pd.DataFrame:
    """Scores Grad-CAM heatmaps against annotated boxes: one row per boxed finding.

    Boxes are given in each image's original pixels (with its ``width`` and ``height``) and
    scaled to the dataset's ``S x S`` images, as the dataset resizes whole images. Several
    boxes of one label on one image form one finding (hit if in any). Boxes of images that
    are not in ``dataset`` (other splits, lateral views) are left out, with a log message, and
    so are boxes of findings the model does not output (an empty ``label``, or one not in
    ``cam.model.labels``; see
    [`unscored_boxes`][chexviz.evaluate.localization.unscored_boxes]), with a warning that
    counts them per finding and reason.

    Args:
        cam: The explainer (a `chexviz.explain.gradcam.GradCAM`) of the model to evaluate.
        dataset: A `CheXpertDataset`, or a ``Subset`` of one (as from ``split_by_patient``).
        boxes: Frame with columns ``Path``, ``label``, ``x0``, ``y0``, ``x1``, ``y1``,
            ``width``, ``height``, as from ``chexviz.data.boxes.load_boxes``; ``Path`` as in
            the dataset's CSV (with or without the release folder).
        classes: ``"positives"``: explain what the model predicts (as ``GradCAM.explain``
            does by default); boxed findings it misses get a row without scores, so the
            scores measure localisation of detected findings. ``"true"``: explain every boxed
            label, predicted or not.
        threshold: Heatmap level that delimits the region for IoU (see `box_iou`).
        batch_size: Images per Grad-CAM pass.
        progress: Show a progress bar (only on a terminal).
        prior: The anatomical prior, label -> map ``[S, S]``, from
            [`anatomical_prior`][chexviz.evaluate.localization.anatomical_prior] on the
            *training* boxes; each explained finding whose label has a map is scored with it
            too. None leaves the ``prior_*`` columns empty.

    Returns:
        Columns ``index`` (item of ``dataset``), ``Path``, ``label``, ``n_boxes``,
        ``probability``, ``predicted``, ``explained``, ``zero_map``, ``hit``, ``iou``,
        ``energy``, ``chance`` (fraction of the image inside the boxes: the hit rate of a
        random point) and the prior's ``prior_hit``, ``prior_iou``, ``prior_energy`` on the
        same findings. Scores are missing (NA) where the finding was not explained.

    Raises:
        KeyError: If ``boxes`` lacks a column.
        ValueError: If no box is of a label the model outputs, no box belongs to an image of
            ``dataset``, a box is empty or outside its image, ``dataset`` has a
            ``transform``, a prior map is not ``S x S``, or ``classes`` or ``batch_size`` is
            invalid; with an explainer that has no ``model.labels``, if a box label is not
            one of its outputs.
    """
    if classes not in ("positives", "true"):
        raise ValueError(f"classes must be 'positives' or 'true', got {classes!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    base, positions = _items(dataset)
    if getattr(base, "transform", None) is not None:
        # A transform may move pixels (a flip, a crop) and boxes are not carried through
        # it, so maps of transformed images would be scored against boxes in the wrong place.
        raise ValueError(
            "dataset has a transform: its images may no longer match the boxes, which are "
            "not transformed with them; score localisation on a dataset built with "
            "transform=None"
        )
    size = int(base.image_size)
    priors = {
        str(label): as_heatmap(value, f"prior[{label!r}]", shape=(size, size))
        for label, value in (prior or {}).items()
    }
    findings = _finding_boxes(_scorable(boxes, _model_labels(cam)), size)

    csv_paths = base.frame["Path"].to_numpy()
    item_of: dict[str, int] = {}
    for item, position in enumerate(positions):
        item_of.setdefault(_path_key(csv_paths[position]), item)
    per_item: dict[int, list[tuple[str, str, np.ndarray]]] = {}
    outside = 0
    for (path, label), group in findings.items():
        key = _path_key(path)
        if key not in item_of:
            outside += 1
            continue
        per_item.setdefault(item_of[key], []).append((path, label, group))
    if outside:
        logger.info(
            "%d of %d boxed findings are on images outside the dataset", outside, len(findings)
        )
    if not per_item:
        raise ValueError(
            f"none of the {len(findings)} boxed findings is on an image of the dataset; "
            "are the boxes for another split?"
        )

    items = sorted(per_item)
    rows: list[dict[str, object]] = []
    with tqdm(
        total=len(items), unit="img", desc="localisation", disable=None if progress else True
    ) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            images = torch.stack([dataset[item][0] for item in chunk])
            wanted = (
                None
                if classes == "positives"
                else [[label for _, label, _ in per_item[item]] for item in chunk]
            )
            explanation = cam.explain(images, wanted)
            if start == 0:
                _check_labels(findings, explanation.labels)
            for offset, item in enumerate(chunk):
                rows.extend(
                    _finding_rows(explanation, offset, item, per_item[item], threshold, priors)
                )
            bar.update(len(chunk))
    frame: pd.DataFrame = pd.DataFrame(rows, columns=list(_ROW_TYPES)).astype(_ROW_TYPES)
    return frame


def score_localization_cross_fitted(
    cam: Explainer,
    dataset: Dataset[tuple[torch.Tensor, torch.Tensor]],
    boxes: pd.DataFrame,
    *,
    classes: Literal["positives", "true"] = "true",
    threshold: float = 0.5,
    batch_size: int = 16,
    progress: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """`score_localization` with an anatomical prior that never sees the boxes it is scored on.

    For ground truth without a separate training set of boxes (NIH ChestX-ray14's all lie on
    its test images) the prior cannot be learnt elsewhere. The boxed images are split in two
    halves by patient; each half is scored with the
    [`anatomical_prior`][chexviz.evaluate.localization.anatomical_prior] of the other half's
    boxes. A label boxed in one half only has no prior in the other (NaN there).

    Args:
        cam: The explainer of the model to evaluate.
        dataset: A data set with ``frame``, ``image_size`` and ``patient_ids`` (a
            `CheXpertDataset` or `NIHChestXray14Dataset`), or a ``Subset`` of one.
        boxes: The boxes frame, as for `score_localization`.
        classes: What to explain, as for `score_localization` (here ``"true"`` by default).
        threshold: Heatmap level that delimits the region for IoU.
        batch_size: Images per Grad-CAM pass.
        progress: Show progress bars (only on a terminal).
        seed: Seed of the split into halves.

    Returns:
        The columns of `score_localization` (``index`` is the item of ``dataset``) and
        ``fold`` (0 or 1, the half the finding was scored in).

    Raises:
        ValueError: If the boxed images belong to fewer than two patients, or as
            `score_localization` does.
    """
    base, positions = _items(dataset)
    # Left out once here (and counted once in the log), not again in each half.
    boxes = _scorable(boxes, _model_labels(cam))
    keys = {_path_key(path) for path in boxes["Path"]}
    csv_paths = base.frame["Path"].to_numpy()
    boxed = [item for item, at in enumerate(positions) if _path_key(csv_paths[at]) in keys]
    if len({base.patient_ids[positions[item]] for item in boxed}) < 2:
        raise ValueError(
            "the boxed images belong to fewer than two patients of the dataset; the "
            "cross-fitted prior needs two"
        )
    # split_by_patient flattens nested Subsets: the halves index ``base`` directly.
    item_of = {at: item for item, at in enumerate(positions)}
    halves = split_by_patient(Subset(dataset, boxed), (0.5, 0.5), seed=seed)
    parts = []
    for fold, (scored, other) in enumerate((halves, halves[::-1])):
        prior = anatomical_prior(select_boxes(boxes, other), int(base.image_size))
        part = score_localization(
            cam,
            scored,
            boxes,
            classes=classes,
            threshold=threshold,
            batch_size=batch_size,
            progress=progress,
            prior=prior,
        )
        part["index"] = [item_of[scored.indices[int(i)]] for i in part["index"]]
        parts.append(part.assign(fold=fold))
    table: pd.DataFrame = pd.concat(parts, ignore_index=True)
    return table


def summarize_localization(
    scores: pd.DataFrame,
    *,
    min_findings: int = DEFAULT_MIN_POSITIVES,
    patients: Sequence[object] | None = None,
) -> pd.DataFrame:
    """Per-label and overall localisation scores beside chance and the anatomical prior.

    The rule for too few cases (``chexviz._internal.cases``, as for AUROC): a label with
    fewer than ``min_findings`` explained findings has status ``"too few cases"``, keeps its
    counts but no scores, and is left out of ``"overall"``; every finding of a box summary is
    a positive case, so there is no minimum of negatives.

    Args:
        scores: The frame of `score_localization`.
        min_findings: Fewest explained findings a label needs to be scored (at least 1).
        patients: The patient of each dataset item (``dataset.patient_ids``), indexed by the
            ``index`` column, to count patients per label; None leaves ``patients`` NaN.

    Returns:
        One row per label (in order of appearance) and a last row ``"overall"`` whose scores
        pool the findings of the labels scored (a micro-average) and whose counts are of every
        finding, with columns ``status`` (``"scored"`` or ``"too few cases"``;
        ``"overall"``'s says how many labels its scores pool),
        ``findings`` (boxed findings), ``explained`` (those with a heatmap), ``patients``
        (of the boxed findings), ``hit_rate`` (pointing game), ``chance`` (hit rate of a
        random point on the same explained findings), ``prior_hit_rate`` (the anatomical
        prior's), ``iou``, ``prior_iou``, ``energy`` and ``prior_energy`` (means over the
        explained findings; the prior's over those whose label has a prior map). A label
        without enough explained findings has NaN scores, as has the prior where none was
        given.

    Raises:
        KeyError: If ``scores`` lacks a column of `score_localization`'s output.
        ValueError: If ``min_findings`` is not a positive integer.
    """
    missing = [column for column in _ROW_TYPES if column not in scores.columns]
    if missing:
        raise KeyError(f"scores lacks columns {missing}; pass the frame of score_localization")
    check_minimum(min_findings)
    owners = None if patients is None else np.asarray([str(p) for p in patients], dtype=object)

    def counts(rows: pd.DataFrame) -> dict[str, object]:
        return {
            "findings": len(rows),
            "explained": int(rows["explained"].astype(bool).sum()),
            "patients": np.nan
            if owners is None
            else len(set(owners[rows["index"].to_numpy(dtype=np.int64)])),
        }

    def pooled(rows: pd.DataFrame) -> dict[str, object]:
        explained = rows[rows["explained"].astype(bool)]
        return {
            "hit_rate": float(explained["hit"].astype("float64").mean()),
            "chance": float(explained["chance"].mean()),
            "prior_hit_rate": float(explained["prior_hit"].astype("float64").mean()),
            "iou": float(explained["iou"].mean()),
            "prior_iou": float(explained["prior_iou"].mean()),
            "energy": float(explained["energy"].mean()),
            "prior_energy": float(explained["prior_energy"].mean()),
        }

    groups = list(scores.groupby("label", sort=False))
    explained = np.asarray([int(rows["explained"].astype(bool).sum()) for _, rows in groups])
    enough = enough_cases(explained, None, min_findings)
    table: dict[str, dict[str, object]] = {
        str(label): {"status": "scored", **counts(rows), **pooled(rows)}
        if ok
        else {"status": TOO_FEW, **counts(rows)}
        for (label, rows), ok in zip(groups, enough, strict=True)
    }
    kept = [label for (label, _), ok in zip(groups, enough, strict=True) if ok]
    # "overall" counts every finding (the missed ones too) but pools the scored labels only.
    table["overall"] = {
        "status": f"{len(kept)} of {len(groups)} labels",
        **counts(scores),
        **pooled(scores[scores["label"].isin(kept)]),
    }
    columns = ["status", "findings", "explained", "patients", "hit_rate", "chance"]
    columns += ["prior_hit_rate", "iou", "prior_iou", "energy", "prior_energy"]
    summary = pd.DataFrame.from_dict(table, orient="index").reindex(columns=columns)
    summary.index.name = "label"
    typed: pd.DataFrame = summary.astype({"findings": "int64", "explained": "int64"})
    for column in columns[4:]:
        typed[column] = typed[column].astype("float64")
    return typed
