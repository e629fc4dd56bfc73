"""Ground-truth boxes: the box file format, its reader and the scaling to resized images.

The localisation scorers in [`chexviz.evaluate.localization`][chexviz.evaluate.localization] take
boxes in this format, whoever wrote them: the synthetic data set
([`make_synthetic_chexpert`][chexviz.data.synthetic.make_synthetic_chexpert]) writes
``train_boxes.csv`` and ``valid_boxes.csv`` in it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from chexviz.data.labels import CHEXPERT_LABELS, MissingColumnsError

__all__ = ["BOX_COLUMNS", "BoxLike", "load_boxes", "scale_boxes"]

BOX_COLUMNS: tuple[str, ...] = ("Path", "label", "x0", "y0", "x1", "y1", "width", "height")
"""Columns of ``train_boxes.csv`` and ``valid_boxes.csv``.

``x0, y0, x1, y1`` are pixel edges in the original image (the box covers columns ``x0`` to
``x1 - 1`` and rows ``y0`` to ``y1 - 1``) and ``width, height`` the size of that image.
A finding drawn in several separate places (a bilateral effusion, two devices) has one row per
part; score a hit in any of them as a hit.
"""

BoxLike = Sequence[float] | Sequence[Sequence[float]] | np.ndarray
"""One box ``(x0, y0, x1, y1)``, or several as a sequence or an array ``[K, 4]``."""


def load_boxes(csv_path: str | os.PathLike[str]) -> pd.DataFrame:
    """Reads and checks a box file (as `make_synthetic_chexpert` writes).

    Args:
        csv_path: A ``train_boxes.csv`` or ``valid_boxes.csv``.

    Returns:
        A frame with the columns of `BOX_COLUMNS`: ``Path`` and ``label`` strings,
        the rest int64.

    Raises:
        FileNotFoundError: The file does not exist.
        chexviz.data.labels.MissingColumnsError: A column of `BOX_COLUMNS` is missing.
        ValueError: A cell is malformed, a label is not a CheXpert observation, or a box is
            empty or reaches outside its image (the message names the line and column).
    """
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"box file {path} does not exist")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    _check_columns(frame, str(path))
    out: pd.DataFrame = pd.DataFrame(
        {"Path": frame["Path"].astype(str), "label": frame["label"].astype(str)}
    )
    for column in BOX_COLUMNS[2:]:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = numbers.isna() | (numbers != numbers.round())
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"{path}, line {line + 2}, column {column!r}: expected an integer pixel "
                f"coordinate, got {frame[column].iloc[line]!r}"
            )
        out[column] = numbers.astype(np.int64)
    _check_boxes(out, str(path), first_line=2)
    return out


def scale_boxes(boxes: pd.DataFrame, size: int) -> pd.DataFrame:
    """Maps boxes to an image resized whole to ``size x size``, as the data sets do.

    Each box is scaled by ``size / width`` horizontally and ``size / height`` vertically (no
    rounding, so it stays exact); ``width`` and ``height`` become ``size``.

    Args:
        boxes: A frame with at least the columns ``x0, y0, x1, y1, width, height`` (as from
            `load_boxes`).
        size: Side of the resized image, in pixels.

    Returns:
        A new frame, the other columns unchanged, with float box coordinates in
        ``[0, size]``.

    Raises:
        ValueError: ``size`` is not a positive integer, or a box is empty or outside its
            image.
        chexviz.data.labels.MissingColumnsError: A needed column is missing.
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    _check_columns(boxes, "the boxes frame", BOX_COLUMNS[2:])
    _check_boxes(boxes, "the boxes frame", first_line=None)
    out: pd.DataFrame = boxes.copy()
    sx = size / boxes["width"].astype(np.float64)
    sy = size / boxes["height"].astype(np.float64)
    for column, factor in (("x0", sx), ("x1", sx), ("y0", sy), ("y1", sy)):
        out[column] = (boxes[column].astype(np.float64) * factor).clip(0.0, float(size))
    out["width"] = size
    out["height"] = size
    return out


def _check_columns(frame: pd.DataFrame, where: str, columns: Iterable[str] = BOX_COLUMNS) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise MissingColumnsError(missing, where)


def _check_boxes(frame: pd.DataFrame, where: str, *, first_line: int | None) -> None:
    """Raises ValueError naming the first box that is empty or leaves its image."""

    def at(position: int) -> str:
        if first_line is None:
            return f"{where}, row {frame.index[position]!r}"
        return f"{where}, line {position + first_line}"

    if "label" in frame.columns:
        unknown = ~frame["label"].isin(CHEXPERT_LABELS)
        if unknown.any():
            position = int(np.flatnonzero(unknown.to_numpy())[0])
            raise ValueError(
                f"{at(position)}, column 'label': {frame['label'].iloc[position]!r} is not a "
                "CheXpert observation"
            )
    values = {c: frame[c].to_numpy(dtype=np.float64) for c in BOX_COLUMNS[2:]}
    checks = (
        ("width", values["width"] >= 1, "the image width must be at least 1"),
        ("height", values["height"] >= 1, "the image height must be at least 1"),
        ("x0", values["x0"] >= 0, "x0 must be at least 0"),
        ("y0", values["y0"] >= 0, "y0 must be at least 0"),
        ("x1", values["x1"] > values["x0"], "the box is empty: x1 must exceed x0"),
        ("y1", values["y1"] > values["y0"], "the box is empty: y1 must exceed y0"),
        ("x1", values["x1"] <= values["width"], "x1 must be at most the image width"),
        ("y1", values["y1"] <= values["height"], "y1 must be at most the image height"),
    )
    for column, ok, message in checks:
        if not ok.all():
            position = int(np.flatnonzero(~ok)[0])
            box = [frame[c].iloc[position] for c in BOX_COLUMNS[2:]]
            raise ValueError(f"{at(position)}, column {column!r}: {message} (x0..height = {box})")
