"""Draws docs/images/synthetic_examples.png: one synthetic radiograph per drawn sign.

The images come from the public API (a small set written by ``make_synthetic_chexpert``), so
the figure shows exactly what the data set contains::

    python docs/scripts/make_synthetic_figure.py   # writes docs/images/synthetic_examples.png

Each frontal tile shows an image whose only drawn sign is the one named, with that sign's
boxes from ``train_boxes.csv``; the last tile is a lateral view.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from chexviz.data.boxes import load_boxes
from chexviz.data.synthetic import SIGN_LABELS, make_synthetic_chexpert

BOX_RGB = (255, 59, 48)
OUT = Path(__file__).resolve().parents[1] / "images" / "synthetic_examples.png"


def pick_examples(release: Path) -> list[tuple[str, str]]:
    """``(title, path)`` per tile: a normal study, one per sign (alone if possible), a lateral."""
    with (release / "train.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    frontal = [r for r in rows if r["Frontal/Lateral"] == "Frontal"]

    def signs(row: dict[str, str]) -> set[str]:
        return {label for label in SIGN_LABELS if row[label] == "1.0"}

    picks = [("No Finding", next(r["Path"] for r in frontal if not signs(r)))]
    for label in SIGN_LABELS:
        having = sorted((r for r in frontal if label in signs(r)), key=lambda r: len(signs(r)))
        picks.append((label, having[0]["Path"]))
    picks.append(("Lateral view", next(r["Path"] for r in rows if r["AP/PA"] == "")))
    return picks


def main() -> None:
    """Writes the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--work", type=Path, default=None, help="folder for the data set")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="chexviz-figure-"))
    release = make_synthetic_chexpert(work, n_patients=60, valid_patients=0, seed=0)
    boxes = load_boxes(release / "train_boxes.csv")
    picks = pick_examples(release)

    columns = 4
    rows = -(-len(picks) // columns)
    figure = Figure(figsize=(3.0 * columns, 2.55 * rows), dpi=80)
    FigureCanvasAgg(figure)
    for index, (title, path) in enumerate(picks):
        axes = figure.add_subplot(rows, columns, index + 1)
        with Image.open(release.parent / path) as image:
            axes.imshow(np.asarray(image), cmap="gray", vmin=0, vmax=255)
        for box in boxes[(boxes.Path == path) & (boxes.label == title)].itertuples():
            axes.add_patch(
                Rectangle(
                    (box.x0 - 0.5, box.y0 - 0.5),
                    box.x1 - box.x0,
                    box.y1 - box.y0,
                    fill=False,
                    edgecolor=tuple(c / 255 for c in BOX_RGB),
                    linewidth=1.5,
                )
            )
        axes.set_title(title, fontsize=10)
        axes.set_axis_off()
    figure.tight_layout(pad=0.4)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out)
    # Grey images and one box colour: a palette of 63 greys and the box red keeps the PNG small.
    palette = Image.new("P", (1, 1))
    greys = [round(i * 255 / 62) for i in range(63)]
    palette.putpalette([v for g in greys for v in (g, g, g)] + list(BOX_RGB))
    with Image.open(args.out) as image:
        small = image.convert("RGB").quantize(palette=palette, dither=Image.Dither.NONE)
    small.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
