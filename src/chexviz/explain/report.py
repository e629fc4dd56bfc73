"""Figures and HTML reports of explanations.

`study_figure` draws one image's input, its probability table (predicted positives in
bold) and one overlay per explained class, like the figures of the reference study but with
the colours the right way round. `write_html_report` collects many images in one
self-contained HTML file: the pictures are embedded as base64 PNG data, so the file opens in
any browser without a server, and every piece of text is HTML-escaped.

`save_study_figure` and `write_html_report` write atomically (a temporary file in the same
folder, then a rename) and create missing parent folders. matplotlib is imported only inside
the functions that draw, and only its object-oriented API is used (no pyplot state, no display
needed).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chexviz._internal.atomic import write_bytes_atomic
from chexviz._version import __version__
from chexviz.explain.explanation import Explanation
from chexviz.explain.overlay import colormap, image_to_pil, overlay_heatmap

if TYPE_CHECKING:
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure
    from PIL import Image


__all__ = ["save_study_figure", "study_figure", "write_html_report"]

logger = logging.getLogger(__name__)

_OVERLAY_COLUMNS = 3
# Label and layer names are data: "$...$" must not turn into (or fail as) mathtext or LaTeX.
_LITERAL: dict[str, Any] = {"parse_math": False, "usetex": False}


def _check_index(explanation: Explanation, index: int) -> int:
    if not -len(explanation) <= index < len(explanation):
        raise IndexError(f"index {index} is out of range for an explanation of {len(explanation)}")
    return index % len(explanation)


def _rows(explanation: Explanation, index: int) -> list[tuple[str, float, float, bool]]:
    """(label, probability, threshold, predicted positive) for every model output."""
    probabilities = explanation.probabilities[index].tolist()
    thresholds = explanation.thresholds.tolist()
    return [
        (label, p, t, p >= t)
        for label, p, t in zip(explanation.labels, probabilities, thresholds, strict=True)
    ]


def _caption(explanation: Explanation, index: int, cls: str) -> str:
    probability = float(explanation.probabilities[index, explanation.labels.index(cls)])
    note = " · no positive evidence" if cls in explanation.zero_maps[index] else ""
    return f"{cls} ({100 * probability:.1f}%){note}"


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

    index = _check_index(explanation, index)
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
    rows = _rows(explanation, index)
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
        axis.set_title(_caption(explanation, index, cls), fontsize=10, **_LITERAL)
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


def _png_data_uri(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _gradient_css(cmap: str | Colormap) -> str:
    colours = colormap(cmap)
    stops = []
    for value in np.linspace(0.0, 1.0, 11):
        red, green, blue = (round(255 * c) for c in colours(float(value))[:3])
        stops.append(f"rgb({red},{green},{blue}) {100 * value:.0f}%")
    return "linear-gradient(to right, " + ", ".join(stops) + ")"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 70rem; }
h1 { margin-bottom: 0.2rem; }
.meta { color: #666; margin-top: 0; }
section { border-top: 1px solid #ddd; padding: 1rem 0; }
.top { display: flex; gap: 2rem; align-items: flex-start; flex-wrap: wrap; }
figure { margin: 0; display: inline-block; }
figure img { width: 16rem; height: auto; image-rendering: auto; display: block; }
figcaption { font-size: 0.9rem; text-align: center; margin-top: 0.3rem; }
.overlays { display: flex; gap: 1rem; flex-wrap: wrap; margin-top: 1rem; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.15rem 0.6rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.positive { font-weight: bold; background: #fff6e0; }
.scale { display: flex; align-items: center; gap: 0.5rem; font-size: 0.85rem; color: #555; }
.scale span.bar { width: 12rem; height: 0.8rem; border: 1px solid #ccc; }
.note { color: #666; font-style: italic; }
"""


def _image_section(
    explanation: Explanation,
    index: int,
    name: str,
    anchor: str,
    alpha: float,
    cmap: str | Colormap,
) -> str:
    escape = html.escape
    table_rows = []
    for label, p, t, positive in _rows(explanation, index):
        attributes = ' class="positive"' if positive else ""
        table_rows.append(
            f"<tr{attributes}><td>{escape(label)}</td>"
            f'<td class="num">{100 * p:.1f}</td><td class="num">{100 * t:.1f}</td></tr>'
        )
    figures = []
    for cls in explanation.classes[index]:
        picture = overlay_heatmap(
            explanation.images[index], explanation.heatmaps[index][cls], alpha=alpha, cmap=cmap
        )
        caption = escape(_caption(explanation, index, cls))
        figures.append(
            f'<figure><img src="{_png_data_uri(picture)}" alt="{escape(cls)} heatmap of '
            f'{escape(name)}"><figcaption>{caption}</figcaption></figure>'
        )
    overlays = "\n".join(figures) or '<p class="note">No class explained for this image.</p>'
    return f"""<section id="{anchor}">
<h2>{escape(name)}</h2>
<div class="top">
<figure><img src="{_png_data_uri(image_to_pil(explanation.images[index]))}" alt="input image \
{escape(name)}"><figcaption>Input</figcaption></figure>
<table>
<thead><tr><th>Finding</th><th>Probability (%)</th><th>Threshold (%)</th></tr></thead>
<tbody>
{chr(10).join(table_rows)}
</tbody>
</table>
</div>
<div class="overlays">
{overlays}
</div>
</section>"""


def write_html_report(
    explanations: Explanation | Sequence[Explanation],
    path: str | os.PathLike[str],
    *,
    names: Sequence[str | os.PathLike[str]] | None = None,
    title: str = "chexviz report",
    alpha: float = 0.5,
    cmap: str | Colormap = "inferno",
) -> Path:
    """Writes a self-contained HTML report of many explained images.

    Each image gets a section with its name, the input image, the probability table of all
    labels (predicted positives in bold) and one overlay per explained class. Images are
    embedded as base64 PNG data URIs, so the single file opens in a browser without a server
    or other files. All text (title, names, labels, class names) is HTML-escaped.

    Args:
        explanations: One explanation or several; their images are reported in order.
        path: Output ``.html`` file; missing parent folders are created.
        names: One name per image over all explanations (e.g. file names); default
            ``"image 1"``, ``"image 2"``, ...
        title: Title of the page.
        alpha: Opacity of the heatmaps, in [0, 1].
        cmap: matplotlib colormap (name or object) of the heatmaps.

    Returns:
        The written path.

    Raises:
        ValueError: If there is no image, or ``names`` does not have one entry per image.
    """
    batches = [explanations] if isinstance(explanations, Explanation) else list(explanations)
    slots = [(batch, index) for batch in batches for index in range(len(batch))]
    if not slots:
        raise ValueError("no image to report: explanations are empty")
    if names is None:
        labels = [f"image {number}" for number in range(1, len(slots) + 1)]
    else:
        labels = [os.fspath(name) for name in names]
        if len(labels) != len(slots):
            raise ValueError(
                f"names has {len(labels)} entries but the explanations hold {len(slots)} images"
            )
    methods = sorted({f"{batch.method} at {batch.layer}" for batch in batches})
    sections = [
        _image_section(batch, index, name, f"image-{number}", alpha, cmap)
        for number, ((batch, index), name) in enumerate(zip(slots, labels, strict=True), start=1)
    ]
    escape = html.escape
    document = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{escape(title)}</h1>
<p class="meta">{len(slots)} image{"s" if len(slots) != 1 else ""} · \
{escape("; ".join(methods))} · chexviz {escape(__version__)}</p>
<p class="scale">heatmap, normalised per class: low <span class="bar" \
style="background: {_gradient_css(cmap)}"></span> high · bold rows: predicted positive \
(probability &ge; threshold)</p>
{chr(10).join(sections)}
</body>
</html>
"""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(target, document.encode("utf-8"))
    logger.info("wrote HTML report of %d images to %s", len(slots), target)
    return target
