"""Self-contained HTML reports of explanations.

`write_html_report` collects many images in one self-contained HTML file: the pictures are
embedded as small base64 JPEG thumbnails, so the file opens in any browser without a server
and stays small enough to e-mail, and every piece of text is HTML-escaped. Given the answer
key it shows, per image, the true labels beside the predictions (true positive, false
positive, missed finding), the ground-truth boxes on the overlays and summary tables at the
top, and lets the reader filter by finding and outcome. It writes atomically (a temporary
file in the same folder, then a rename) and creates missing parent folders. The page's markup
is built in `chexviz.explain._html`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chexviz._internal.atomic import write_bytes_atomic
from chexviz.data.boxes import BoxLike
from chexviz.explain._html import Marks, Pictures, filters_html, render, summaries_html, top_html
from chexviz.explain.explanation import Explanation

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.colors import Colormap


__all__ = ["write_html_report"]

logger = logging.getLogger(__name__)

_MIN_QUALITY = 30
"""The lowest JPEG quality the report drops to when it must fit ``max_bytes``."""


def _as_box_array(value: BoxLike, where: str) -> np.ndarray:
    boxes = np.asarray(value, dtype=np.float64)
    if boxes.ndim == 1:
        boxes = boxes[None, :]
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
        raise ValueError(f"{where} must be (x0, y0, x1, y1) boxes, got {value!r}")
    return boxes


def _per_image(
    name: str, values: Sequence[Any] | np.ndarray | None, count: int
) -> Sequence[Any] | np.ndarray | None:
    if values is not None and len(values) != count:
        raise ValueError(
            f"{name} has {len(values)} entries but the explanations hold {count} images"
        )
    return values


def write_html_report(
    explanations: Explanation | Sequence[Explanation],
    path: str | os.PathLike[str],
    *,
    names: Sequence[str | os.PathLike[str]] | None = None,
    title: str = "chexviz report",
    alpha: float = 0.5,
    cmap: str | Colormap = "inferno",
    truth: np.ndarray | Sequence[Sequence[float]] | None = None,
    boxes: Sequence[Mapping[str, BoxLike] | None] | None = None,
    summaries: Mapping[str, pd.DataFrame] | None = None,
    notes: Sequence[str] = (),
    verdict: Sequence[str] = (),
    not_learnable: Collection[str] = (),
    low_threshold: float = 0.05,
    thumbnail: int = 160,
    quality: int = 80,
    max_bytes: int | None = 5_000_000,
) -> Path:
    """Writes a self-contained HTML report of many explained images.

    Each image gets a section with its name, the input image, the probability table of all
    labels (predicted positives in bold) and one overlay per explained class. With ``truth``
    the table also shows each label's true value and the outcome (true positive, false
    positive, missed finding), and the reader can filter the images by finding and by outcome
    (a small inline script; without it every image shows). With ``boxes`` the overlays show
    the ground-truth boxes (cyan) and the map's pointing-game point (a white cross).
    ``summaries`` are tables shown at the top (metrics beside their baselines, localisation
    beside chance and the prior), after the ``notes`` and the ``verdict``. The input picture
    carries every ground-truth box as a labelled frame; a missed finding (true positive in
    ``truth``, predicted negative) that the explanation explains gets its overlay too, framed
    in red and captioned "missed: the model's map for ...". Labels in ``not_learnable`` and
    thresholds below ``low_threshold`` are flagged.

    Pictures are JPEG thumbnails of at most ``thumbnail`` pixels a side embedded as data URIs,
    so the single file opens in a browser without a server or other files and a few hundred
    images stay a few MB. All text (title, names, labels, class names, table cells) is
    HTML-escaped, and the page's Content-Security-Policy lets only its own filter script run
    and nothing be fetched.

    Args:
        explanations: One explanation or several (with the same labels); their images are
            reported in order.
        path: Output ``.html`` file; missing parent folders are created.
        names: One name per image over all explanations (e.g. file names); default
            ``"image 1"``, ``"image 2"``, ...
        title: Title of the page.
        alpha: Opacity of the heatmaps, in [0, 1].
        cmap: matplotlib colormap (name or object) of the heatmaps.
        truth: The answer key, ``[N, L]`` over all images and the explanations' labels: 1
            positive, 0 negative, NaN not scored (e.g. an uncertain label left out).
        boxes: Per image, label -> box(es) ``(x0, y0, x1, y1)`` in the pixels of the
            explanation's images (their heatmaps' resolution), or None for an image without.
        summaries: Heading -> table to show at the top, in order (e.g.
            ``metrics.to_frame()`` and ``summarize_localization(scores)``). Column names
            are shown as words (``hit_rate`` as "pointing game (hit rate)"; others lose their
            underscores), the index name heads the row labels in the same header row, float
            columns of whole numbers show as counts and ``"too few cases"`` is highlighted.
        notes: Lines of text shown at the top, before the verdict (e.g. where the images
            come from).
        verdict: Lines shown at the top as a list under "Verdict" (where the figures beat
            their baselines and where not).
        not_learnable: Labels the model cannot learn (e.g. drawn nowhere in its training
            images); they are tagged "not learnable" in every table.
        low_threshold: Thresholds below this are flagged (a flag sign) in every image's table and
            listed at the top, with a predicted positive they make.
        thumbnail: Largest side of the pictures, in pixels.
        quality: JPEG quality of the pictures, 1 to 95.
        max_bytes: Size the file should keep within (5 MB by default; None: no limit). Over
            it, the pictures are encoded again at 10 less quality each time, down to
            quality 30, and a warning says so if even that is too large.

    Returns:
        The written path.

    Raises:
        ValueError: If there is no image, ``names``, ``truth`` or ``boxes`` does not have one
            entry per image, the explanations' labels differ, a box is malformed, or
            ``thumbnail``, ``quality`` or ``low_threshold`` is out of range.
    """
    batches = [explanations] if isinstance(explanations, Explanation) else list(explanations)
    slots = [(batch, index) for batch in batches for index in range(len(batch))]
    if not slots:
        raise ValueError("no image to report: explanations are empty")
    if not 0.0 <= low_threshold <= 1.0:
        raise ValueError(f"low_threshold must be in [0, 1], got {low_threshold}")
    if thumbnail < 16 or not 1 <= quality <= 95:
        raise ValueError(
            f"thumbnail must be >= 16 and quality in [1, 95], got {thumbnail}, {quality}"
        )
    labels = batches[0].labels
    if any(batch.labels != labels for batch in batches):
        raise ValueError("the explanations have different labels; report them separately")
    if names is None:
        titles = [f"image {number}" for number in range(1, len(slots) + 1)]
    else:
        titles = [os.fspath(name) for name in names]
        _per_image("names", titles, len(slots))
    key = None
    if truth is not None:
        key = np.asarray(truth, dtype=np.float64)
        if key.shape != (len(slots), len(labels)):
            raise ValueError(
                f"truth must have shape [{len(slots)}, {len(labels)}] (images x labels), "
                f"got {list(key.shape)}"
            )
    per_image = _per_image("boxes", boxes, len(slots))
    drawn = [
        {
            str(label): _as_box_array(value, f"boxes[{number}][{label!r}]")
            for label, value in ((per_image[number] or {}) if per_image is not None else {}).items()
        }
        for number in range(len(slots))
    ]
    marks = Marks(not_learnable, low_threshold)
    methods = sorted({f"{batch.method} at {batch.layer}" for batch in batches})
    # The pictures are most of the file: over max_bytes, encode them again at a lower JPEG
    # quality (10 less each time, down to _MIN_QUALITY) rather than drop any of them.
    limit = math.inf if max_bytes is None else max_bytes
    attempts = (
        [quality] if max_bytes is None else [quality, *range(quality - 10, _MIN_QUALITY - 1, -10)]
    )
    top = (
        top_html(notes, verdict, labels, batches[0].thresholds.cpu().numpy(), marks)
        + "\n"
        + summaries_html(summaries, marks)
    )
    for attempt in attempts:
        encoded = render(
            Pictures(alpha, cmap, thumbnail, attempt),
            slots,
            titles,
            key,
            drawn,
            marks,
            per_image is not None,
            title,
            methods,
            top,
            filters_html(labels, key is not None),
            cmap,
            low_threshold,
        )
        if len(encoded) <= limit:
            break
        logger.info(
            "report is %.2f MB at JPEG quality %d, over %.2f MB: encoding again",
            len(encoded) / 1e6,
            attempt,
            limit / 1e6,
        )
    else:
        logger.warning(
            "report is %.2f MB even at JPEG quality %d, over max_bytes %.2f MB: report fewer "
            "images or pass a smaller thumbnail",
            len(encoded) / 1e6,
            attempts[-1],
            limit / 1e6,
        )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(target, encoded)
    logger.info("wrote HTML report of %d images to %s", len(slots), target)
    return target
