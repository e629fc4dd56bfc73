"""Files and figures of the CheXlocalize protocol: tuned values read back, plots, overlays."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt
import pandas as pd
from PIL import Image, ImageDraw

from chexviz.data.chexlocalize import chexlocalize_name, chexpert_name
from chexviz.evaluate.chexlocalize._pixels import as_map, normalise_, resize_map

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from chexviz.evaluate.chexlocalize.scoring import CheXlocalizeScores
    from chexviz.evaluate.chexlocalize.segmentation import HeatmapLike

__all__ = ["ground_truth_overlay", "plot_chexlocalize", "read_tuning_csv"]


def read_tuning_csv(path: str | os.PathLike[str]) -> dict[str, float]:
    """Reads tuned values from the reference scripts' CSV files (or chexviz's copies).

    ``tuning_results.csv`` (columns ``threshold, task``) gives each task's threshold;
    ``probability_tuning_results.csv`` (``prob_threshold, mIoU, task``, every candidate)
    gives each task's cutoff with the highest mIoU (the first on ties, as the reference).

    Args:
        path: The CSV file.

    Returns:
        CheXpert label name -> value.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file has neither set of columns, an unknown task, a task twice (in
            a threshold file) or a value that is not a finite number; the message names the
            file, line and column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "tuning CSV not found", str(path))
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable CSV file ({error})") from None
    if {"threshold", "task"} <= set(frame.columns):
        column = "threshold"
    elif {"prob_threshold", "mIoU", "task"} <= set(frame.columns):
        column = "prob_threshold"
    else:
        raise ValueError(
            f"{path}: expected columns 'threshold, task' (tuning_results.csv) or "
            f"'prob_threshold, mIoU, task' (probability_tuning_results.csv), got "
            f"{list(frame.columns)}"
        )
    numbers: dict[str, list[float]] = {}
    for line, cells in enumerate(frame.to_dict("records"), start=2):
        try:
            label = chexpert_name(cells["task"].strip())
        except ValueError as error:
            raise ValueError(f"{path} line {line}, column 'task': {error}") from None
        for name in (column, "mIoU") if column == "prob_threshold" else (column,):
            try:
                value = float(cells[name])
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise ValueError(
                    f"{path} line {line}, column {name!r}: {cells[name]!r} is not a finite number"
                )
        numbers.setdefault(label, []).append(float(cells[column]))
        if column == "prob_threshold":
            numbers[label].append(float(cells["mIoU"]))
    out: dict[str, float] = {}
    for label, values in numbers.items():
        if column == "threshold":
            if len(values) > 1:
                raise ValueError(
                    f"{path}: task {chexlocalize_name(label)!r} appears {len(values)} times"
                )
            out[label] = values[0]
        else:
            pairs = list(zip(values[0::2], values[1::2], strict=True))
            out[label] = max(pairs, key=lambda pair: pair[1])[0]
    if not out:
        raise ValueError(f"{path}: no rows")
    return out


def plot_chexlocalize(
    scores: CheXlocalizeScores, path: str | os.PathLike[str] | None = None
) -> Figure:
    """Plots mIoU and hit rate per pathology with their intervals beside the baselines.

    Args:
        scores: The result of ``score_chexlocalize`` (with ``baselines=True`` the chance and
            anatomical-prior figures are drawn beside the model's).
        path: Where to save the figure (PNG, 150 dpi); None only returns it.

    Returns:
        The matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    summary = scores.summary
    labels = list(summary.index)
    figure, axes = plt.subplots(1, 2, figsize=(11, 0.42 * len(labels) + 1.6), sharey=True)
    positions = np.arange(len(labels))[::-1]
    series = [
        ("", "model", "C0", "o", 0.18),
        ("prior_", "anatomical prior", "C2", "s", 0.0),
        ("chance_", "chance", "0.5", "|", -0.18),
    ]
    for axis, metric, title in ((axes[0], "miou", "mIoU"), (axes[1], "hit_rate", "hit rate")):
        for prefix, name, colour, marker, offset in series:
            column = f"{prefix}{metric}"
            if column not in summary.columns:
                continue
            values = summary[column].to_numpy(dtype=float)
            errors = np.abs(
                np.vstack(
                    [
                        values - summary[f"{column}_lower"].to_numpy(dtype=float),
                        summary[f"{column}_upper"].to_numpy(dtype=float) - values,
                    ]
                )
            )
            axis.errorbar(
                values,
                positions + offset,
                xerr=errors,
                fmt=marker,
                color=colour,
                label=name,
                capsize=2,
                markersize=5,
            )
        axis.set_title(f"{title} (95% bootstrap interval)")
        axis.set_xlim(0, 1)
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, labels)
    handles, names = axes[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="lower center", ncol=3, frameon=False)
    slice_name = "true-positive slice" if scores.true_positive_only else "full set"
    figure.suptitle(f"CheXlocalize protocol, IoU on the {slice_name}")
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    if path is not None:
        figure.savefig(path, dpi=150)
    return figure


def ground_truth_overlay(
    image: Image.Image | np.ndarray,
    heatmap: HeatmapLike,
    truth: npt.ArrayLike,
    *,
    size: int = 512,
    alpha: float = 0.5,
) -> Image.Image:
    """The heatmap over the X-ray with the radiologists' contour drawn on top.

    Args:
        image: The X-ray at its original size (PIL image or array ``[H, W]``, uint8 grey).
        heatmap: Its heatmap at any resolution (resized bilinearly and min-max normalised).
        truth: The ground-truth mask ``[H, W]`` at the original size.
        size: Longest side of the returned image, in pixels.
        alpha: Weight of the heatmap colour.

    Returns:
        An RGB image with the contour in cyan.

    Raises:
        ValueError: ``truth`` does not have the image's size.
    """
    from chexviz.explain.overlay import overlay_heatmap

    grey = (
        image.convert("L")
        if isinstance(image, Image.Image)
        else Image.fromarray(np.asarray(image, dtype=np.uint8))
    )
    mask = np.asarray(truth) != 0
    if mask.shape != (grey.height, grey.width):
        raise ValueError(f"truth has shape {mask.shape}, the image is {(grey.height, grey.width)}")
    scale = size / max(grey.width, grey.height)
    width, height = max(1, round(grey.width * scale)), max(1, round(grey.height * scale))
    small = np.asarray(grey.resize((width, height), Image.Resampling.BILINEAR))
    resized = resize_map(as_map(heatmap, "heatmap"), (height, width))
    normalised = normalise_(resized)
    heat = np.zeros((height, width)) if normalised is None else normalised
    picture = overlay_heatmap(small, heat, alpha=alpha)
    outline = cv2.resize(mask.view(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(outline, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    draw = ImageDraw.Draw(picture)
    for contour in contours:
        points = [(int(x), int(y)) for x, y in contour[:, 0, :]]
        if len(points) > 1:
            draw.line([*points, points[0]], fill=(0, 255, 255), width=2)
        else:
            draw.point(points, fill=(0, 255, 255))
    return picture
