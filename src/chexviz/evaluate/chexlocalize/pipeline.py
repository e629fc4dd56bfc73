"""The whole CheXlocalize pipeline on a data set, as ``chexviz localize`` and the demo run it."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from chexviz._internal.cases import DEFAULT_MIN_POSITIVES
from chexviz.data.chexlocalize import (
    LOCALIZATION_LABELS,
    CheXlocalizeGroundTruth,
    chexpert_name,
    cxr_id,
    write_chexlocalize,
)
from chexviz.data.images import read_image_size
from chexviz.evaluate.chexlocalize._pixels import Mask
from chexviz.evaluate.chexlocalize.files import ground_truth_overlay, plot_chexlocalize
from chexviz.evaluate.chexlocalize.scoring import CheXlocalizeScores, score_chexlocalize
from chexviz.evaluate.chexlocalize.segmentation import segment_heatmap
from chexviz.evaluate.chexlocalize.tuning import tune_chexlocalize

if TYPE_CHECKING:
    from chexviz.data.dataset import CheXpertDataset
    from chexviz.explain.methods import MapMaker

__all__ = ["CheXlocalizeMaps", "chexlocalize_maps", "run_chexlocalize"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class CheXlocalizeMaps:
    """The maps of a data set's CXRs, ready for scoring and tuning.

    Attributes:
        heatmaps: ``(cxr_id, label) -> raw map`` (at the map maker's resolution).
        probabilities: ``(cxr_id, label) -> model probability``.
        paths: CXR id -> image file.
        sizes: CXR id -> original ``(H, W)`` of every image of the data set.
        labels: The pathologies mapped (CheXpert names, in CheXlocalize's order).
        cxrs: The CXRs mapped, sorted.
        extra: ``sizes`` of the mapped CXRs without a ground-truth entry (the ``sizes`` that
            scoring on the full set and tuning need).
    """

    heatmaps: dict[tuple[str, str], torch.Tensor]
    probabilities: dict[tuple[str, str], float]
    paths: dict[str, Path]
    sizes: dict[str, tuple[int, int]]
    labels: tuple[str, ...]
    cxrs: tuple[str, ...]
    extra: dict[str, tuple[int, int]]


def _explain_set(
    cam: MapMaker,
    dataset: CheXpertDataset,
    labels: Mapping[str, Sequence[str]],
    cxrs: Sequence[str],
    batch_size: int,
    progress: bool,
    name: str,
) -> tuple[dict[tuple[str, str], torch.Tensor], dict[tuple[str, str], float]]:
    """Raw maps and probabilities of the given CXRs (``labels[cxr]`` each), checked."""
    position = {cxr_id(path): index for index, path in enumerate(dataset.paths)}
    heatmaps: dict[tuple[str, str], torch.Tensor] = {}
    probabilities: dict[tuple[str, str], float] = {}
    with tqdm(total=len(cxrs), desc=name, unit="CXR", disable=None if progress else True) as bar:
        for start in range(0, len(cxrs), batch_size):
            chunk = cxrs[start : start + batch_size]
            images = torch.stack([dataset[position[cxr]][0] for cxr in chunk])
            explanation = cam.explain(images, [list(labels[cxr]) for cxr in chunk])
            for offset, cxr in enumerate(chunk):
                for label in labels[cxr]:
                    heatmap = explanation.raw_maps[offset][label]
                    _check_map(
                        heatmap, images.shape[-2:], dataset.paths[position[cxr]], cxr, label, name
                    )
                    heatmaps[(cxr, label)] = heatmap
                    column = explanation.labels.index(label)
                    probabilities[(cxr, label)] = float(explanation.probabilities[offset, column])
            bar.update(len(chunk))
    return heatmaps, probabilities


def _check_map(
    heatmap: torch.Tensor,
    image: Sequence[int],
    path: Path,
    cxr: str,
    label: str,
    name: str,
) -> None:
    """Refuses a map that is not 2-D or whose shape is not its image's, up to one map cell.

    A map may be coarser than the image (a CAM is at its layer's resolution) but must cover
    it: its aspect ratio must be the image's, or it would be stretched onto the X-ray.
    """
    height, width = int(image[0]), int(image[1])
    if heatmap.ndim == 2:
        h, w = int(heatmap.shape[0]), int(heatmap.shape[1])
        if h > 0 and w > 0 and abs(h * width - w * height) < max(height, width):
            return
    raise ValueError(
        f"{path}: CXR {cxr!r}, {label}: the {name} map has shape {list(heatmap.shape)}, which "
        f"is not a map [h, w] of the model input's {height}x{width} image (same aspect ratio)"
    )


def chexlocalize_maps(
    cam: MapMaker,
    dataset: CheXpertDataset,
    ground_truth: CheXlocalizeGroundTruth,
    *,
    every_image: bool = False,
    findings_only: bool = False,
    batch_size: int = 16,
    progress: bool = True,
    name: str = "maps",
) -> CheXlocalizeMaps:
    """The maps of the pathologies the model outputs, on the CXRs the protocol scores.

    Checks that every ground-truth CXR has an image in ``dataset`` at the size the ground
    truth gives, then explains the ground-truth CXRs (or, with ``every_image``, every image of
    ``dataset``: tuning and the full set need the CXRs without findings too).

    Args:
        cam: A map maker (``GradCAM``, ``IntegratedGradients``, ...: see
            [`map_maker`][chexviz.explain.methods.map_maker]) of a model with ``labels``.
        dataset: The X-rays (``CheXpertDataset(..., frontal_only=False, transform=None)``).
        ground_truth: As [`read_chexlocalize`][chexviz.data.chexlocalize.read_chexlocalize]
            returns.
        every_image: Map every image of ``dataset``, not only the ground truth's CXRs.
        findings_only: Map only the pathologies each CXR has a finding of (a non-empty
            ground-truth mask): all that scoring and threshold tuning on the true-positive
            slice read, at a fraction of the cost for a costly method (Integrated Gradients
            makes ``n_steps`` passes per map). Not with ``every_image``. A pathology no CXR
            has is then absent from the maps, so from the scores.
        batch_size: Images per pass.
        progress: Show a progress bar (only on a terminal).
        name: The method's name, for the progress bar and messages.

    Returns:
        The maps.

    Raises:
        ValueError: As
            [`run_chexlocalize`][chexviz.evaluate.chexlocalize.pipeline.run_chexlocalize],
            and for a map that is not 2-D or not of its image's aspect ratio (naming the image
            file and the CXR).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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
        cxr = cxr_id(path)
        if cxr in images:
            raise ValueError(
                f"{dataset.csv_path}: two images have the CXR id {cxr!r}: {images[cxr]}, {path}"
            )
        images[cxr] = path
    for cxr in ground_truth:
        if cxr not in images:
            raise ValueError(
                f"{ground_truth.path}: CXR {cxr!r} has no image in {dataset.csv_path} "
                "(is the ground truth of another split?)"
            )
    sizes: dict[str, tuple[int, int]] = {}
    for cxr, path in images.items():
        width, height = read_image_size(path)
        sizes[cxr] = (height, width)
        if cxr in ground_truth and ground_truth.size(cxr) != (height, width):
            raise ValueError(
                f"{ground_truth.path}: CXR {cxr!r}, field 'size': {list(ground_truth.size(cxr))} "
                f"but its image {path} is {height}x{width} (height x width); masks are at the "
                "original size (the full-resolution release, not CheXpert-v1.0-small)"
            )
    if every_image and findings_only:
        raise ValueError("findings_only maps the ground truth's CXRs; not with every_image")
    wanted = sorted(images) if every_image else sorted(ground_truth)
    per_cxr = {
        cxr: [
            label for label in labels if not findings_only or not ground_truth.is_empty(cxr, label)
        ]
        for cxr in wanted
    }
    heatmaps, probabilities = _explain_set(
        cam, dataset, per_cxr, wanted, batch_size, progress, name
    )
    return CheXlocalizeMaps(
        heatmaps=heatmaps,
        probabilities=probabilities,
        paths={cxr: images[cxr] for cxr in wanted},
        sizes=sizes,
        labels=tuple(labels),
        cxrs=tuple(wanted),
        extra={cxr: sizes[cxr] for cxr in wanted if cxr not in ground_truth},
    )


def run_chexlocalize(
    cam: MapMaker,
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
    [`score_chexlocalize`][chexviz.evaluate.chexlocalize.scoring.score_chexlocalize] does.

    Writes into ``out_dir``: the tables of
    [`CheXlocalizeScores.to_csv`][chexviz.evaluate.chexlocalize.scoring.CheXlocalizeScores.to_csv];
    ``localization.png`` (mIoU and hit rate per pathology beside chance and the anatomical
    prior); ``overlays/<cxr>_<label>.png`` for the first ``overlays`` pairs with a finding
    (the heatmap over the X-ray with the radiologists' contour); with ``tune``, the tuned
    thresholds and cutoffs of this set (``tuning_results.csv``,
    ``probability_tuning_results.csv``: tune on the validation set, score the test set with
    them); with ``export``, ``saliency_segmentations.json``, the segmentations of every CXR in
    the form the reference ``eval.py`` reads.

    Args:
        cam: A map maker of a model with ``labels`` (a chexviz classifier): ``GradCAM``, or
            any method of [`map_maker`][chexviz.explain.methods.map_maker].
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
            [`score_chexlocalize`][chexviz.evaluate.chexlocalize.scoring.score_chexlocalize]).

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
    explained = chexlocalize_maps(
        cam,
        dataset,
        ground_truth,
        every_image=tune or export or not true_positive_only,
        batch_size=batch_size,
        progress=progress,
        name=str(getattr(cam, "method", "maps")),
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels, wanted, sizes, extra = (
        explained.labels,
        explained.cxrs,
        explained.sizes,
        explained.extra,
    )
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
    explained: CheXlocalizeMaps, ground_truth: CheXlocalizeGroundTruth, folder: Path, limit: int
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
