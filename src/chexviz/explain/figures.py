"""The study figure of one explained image.

`study_figure` draws one image's input, its probability table (predicted positives in
bold) and one overlay per explained class, like the figures of the reference study but with
the colours the right way round. `save_study_figure` writes it atomically (a temporary file in
the same folder, then a rename) and creates missing parent folders. matplotlib is imported
only inside the functions that draw, and only its object-oriented API is used (no pyplot
state, no display needed).
"""

from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chexviz._internal.atomic import write_bytes_atomic
from chexviz.explain._captions import check_index, overlay_caption, prediction_rows
from chexviz.explain.explanation import Explanation
from chexviz.explain.overlay import colormap, image_to_pil, overlay_heatmap

if TYPE_CHECKING:
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure


__all__ = ["save_study_figure", "study_figure"]

logger = logging.getLogger(__name__)

_OVERLAY_COLUMNS = 3
# Label and layer names are data: "$...$" must not turn into (or fail as) mathtext or LaTeX.
_LITERAL: dict[str, Any] = {"parse_math": False, "usetex": False}


def study_figure(
    explanation: Explanation,
    *,
    index: int = 0,
    alpha: float = 0.5,
    cmap: str | Colormap = "inferno",
) -> Figure:
    """Draws one image's explanation: input, probability table and heatmap overlays.

    The table lists every label with its probability and threshold; predicted positives
    (probability ``>=`` threshold) are in bold. Below come the overlays of the explained
    classes, three per row, titled with class and probability (and a note for maps without
    positive evidence), above one shared colour scale.

    The figure is a plain ``matplotlib.figure.Figure`` on the Agg canvas, outside pyplot, so it
    needs no display and is freed with its last reference.

    Args:
        explanation: The explanation to draw.
        index: Which image of the batch.
        alpha: Opacity of the heatmaps, in [0, 1].
        cmap: matplotlib colormap (name or object) of the heatmaps.

    Returns:
        The figure, about 10 inches wide.

    Raises:
        IndexError: If ``index`` is outside the batch.
        ValueError: If ``alpha`` or ``cmap`` is invalid.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.transforms import Bbox

    index = check_index(explanation, index)
    classes = explanation.classes[index]
    overlays = [
        overlay_heatmap(
            explanation.images[index], explanation.heatmaps[index][cls], alpha=alpha, cmap=cmap
        )
        for cls in classes
    ]
    overlay_rows = math.ceil(len(classes) / _OVERLAY_COLUMNS)
    top_height = max(3.2, 0.26 * (len(explanation.labels) + 1))
    figure = Figure(figsize=(10.0, top_height + 3.3 * overlay_rows + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(
        1 + overlay_rows, _OVERLAY_COLUMNS, height_ratios=[top_height] + [3.3] * overlay_rows
    )
    figure.suptitle(f"{explanation.method} at layer {explanation.layer}", **_LITERAL)

    axis = figure.add_subplot(grid[0, 0])
    axis.imshow(image_to_pil(explanation.images[index]))
    axis.set_title("Input")
    axis.set_axis_off()

    axis = figure.add_subplot(grid[0, 1:])
    axis.set_axis_off()
    rows = prediction_rows(explanation, index)
    table = axis.table(
        cellText=[[label, f"{100 * p:.1f}", f"{100 * t:.1f}"] for label, p, t, _ in rows],
        colLabels=["Finding", "Probability (%)", "Threshold (%)"],
        colWidths=[0.56, 0.24, 0.2],
        cellLoc="left",
        bbox=Bbox.from_bounds(0.0, 0.0, 1.0, 1.0),
    )
    table.auto_set_font_size(False)
    for (row, column), cell in table.get_celld().items():
        cell.get_text().update(_LITERAL)
        cell.set_fontsize(9)
        cell.set_edgecolor("#bbbbbb")
        if column > 0:
            cell.get_text().set_horizontalalignment("right")
        if row == 0:
            cell.set_facecolor("#eeeeee")
            cell.get_text().set_fontweight("bold")
        elif rows[row - 1][3]:
            cell.get_text().set_fontweight("bold")

    overlay_axes = []
    for position, (cls, picture) in enumerate(zip(classes, overlays, strict=True)):
        axis = figure.add_subplot(
            grid[1 + position // _OVERLAY_COLUMNS, position % _OVERLAY_COLUMNS]
        )
        axis.imshow(picture)
        axis.set_title(overlay_caption(explanation, index, cls), fontsize=10, **_LITERAL)
        axis.set_axis_off()
        overlay_axes.append(axis)
    if overlay_axes:
        figure.colorbar(
            ScalarMappable(norm=Normalize(0.0, 1.0), cmap=colormap(cmap)),
            ax=overlay_axes,
            location="bottom",
            shrink=0.5,
            aspect=40,
            label="heatmap (normalised per class)",
        )
    else:
        figure.supxlabel("no class explained for this image")
    return figure


def save_study_figure(
    explanation: Explanation,
    path: str | os.PathLike[str],
    *,
    index: int = 0,
    alpha: float = 0.5,
    cmap: str | Colormap = "inferno",
    dpi: int = 100,
) -> Path:
    """Saves the figure of `study_figure` for one image.

    Args:
        explanation: The explanation to draw.
        path: Output file; its suffix picks the format: ``.png``, or another one matplotlib
            writes (``.pdf``, ``.svg``...). Missing parent folders are created.
        index: Which image of the batch.
        alpha: Opacity of the heatmaps, in [0, 1].
        cmap: matplotlib colormap (name or object) of the heatmaps.
        dpi: Resolution of raster output.

    Returns:
        The written path.

    Raises:
        IndexError: If ``index`` is outside the batch.
        ValueError: If the suffix is not a format matplotlib writes, or ``alpha`` or ``cmap``
            is invalid.
    """
    target = Path(path)
    figure = study_figure(explanation, index=index, alpha=alpha, cmap=cmap)
    formats = figure.canvas.get_supported_filetypes()
    suffix = target.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise ValueError(
            f"cannot save a figure as {target.name!r}: the suffix must be one of "
            f"{sorted('.' + name for name in formats)}"
        )
    buffer = io.BytesIO()
    figure.savefig(buffer, format=suffix, dpi=dpi)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(target, buffer.getvalue())
    logger.info("saved the study figure of image %d to %s", index, target)
    return target
