"""The markup of the HTML report: its sections, tables, pictures, style and one script.

`render` builds the whole page that `chexviz.explain.report.write_html_report` writes: every
piece of text in it is HTML-escaped, the pictures are JPEG data URIs, and the page's
Content-Security-Policy (`POLICY`) lets only `FILTER_SCRIPT` run and nothing be fetched.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from chexviz._internal.cases import TOO_FEW
from chexviz._version import __version__
from chexviz.explain._captions import missed_caption, overlay_caption, prediction_rows
from chexviz.explain.explanation import Explanation
from chexviz.explain.overlay import colormap, image_to_pil, map_peak, overlay_heatmap

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.colors import Colormap


_BOX_COLOUR = (0, 255, 255)
_PEAK_COLOUR = (255, 255, 255)
_OUTCOME_TEXT = {
    "tp": "true positive",
    "fp": "false positive",
    "fn": "missed finding",
    "tn": "",
    "na": "not scored",
}
_TRUTH_TEXT = {"tp": "positive", "fn": "positive", "fp": "negative", "tn": "negative", "na": "—"}


def _jpeg_data_uri(picture: Image.Image, quality: int) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _thumbnail(picture: Image.Image, side: int) -> tuple[Image.Image, float, float]:
    """The picture shrunk to at most ``side`` pixels a side, and the x and y scale factors."""
    width, height = picture.size
    scale = min(1.0, side / max(width, height))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    return picture, picture.size[0] / width, picture.size[1] / height


def _draw_ground_truth(
    picture: Image.Image, boxes: np.ndarray, peak: tuple[int, int] | None, sx: float, sy: float
) -> None:
    """Ground-truth boxes (cyan) and the map's single pointing-game point (a white cross)."""
    draw = ImageDraw.Draw(picture)
    for x0, y0, x1, y1 in boxes:
        # pixel c covers [c, c + 1): the box's last pixel column is x1 - 1
        corners = (x0 * sx, y0 * sy, max(x0 * sx, x1 * sx - 1), max(y0 * sy, y1 * sy - 1))
        draw.rectangle(corners, outline=_BOX_COLOUR)
    if peak is not None:
        row, column = peak
        x, y, arm = (column + 0.5) * sx, (row + 0.5) * sy, max(2.0, 2 * sx)
        draw.line([(x - arm, y), (x + arm, y)], fill=_PEAK_COLOUR)
        draw.line([(x, y - arm), (x, y + arm)], fill=_PEAK_COLOUR)


def _outcomes(explanation: Explanation, index: int, truth: np.ndarray | None) -> dict[str, str]:
    """Per label: tp, fp, fn, tn or na (not scored) with an answer key; pp or pn without."""
    codes = {}
    for j, (label, _, _, positive) in enumerate(prediction_rows(explanation, index)):
        if truth is None:
            codes[label] = "pp" if positive else "pn"
        elif math.isnan(truth[j]):
            codes[label] = "na"
        elif truth[j] == 1:
            codes[label] = "tp" if positive else "fn"
        else:
            codes[label] = "fp" if positive else "tn"
    return codes


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem 2rem; color: #222; max-width: 70rem; }
h1 { margin-bottom: 0.2rem; }
.meta { color: #666; margin-top: 0; }
section { border-top: 1px solid #ddd; padding: 1rem 0; }
.top { display: flex; gap: 2rem; align-items: flex-start; flex-wrap: wrap; }
figure { margin: 0; display: inline-block; }
figure img { width: 12rem; height: auto; image-rendering: auto; display: block; }
figcaption { font-size: 0.9rem; text-align: center; margin-top: 0.3rem; max-width: 12rem; }
.overlays { display: flex; gap: 1rem; flex-wrap: wrap; margin-top: 1rem; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.15rem 0.6rem; }
td.num, section.image td:nth-child(2), section.image td:nth-child(3) {
  text-align: right; font-variant-numeric: tabular-nums; }
tr.positive { font-weight: bold; background: #fff6e0; }
td.tp { color: #11661f; } td.fp { color: #b00020; } td.fn { color: #b00020; }
.scale { display: flex; align-items: center; gap: 0.5rem; font-size: 0.85rem; color: #555; }
.scale span.bar { width: 12rem; height: 0.8rem; border: 1px solid #ccc; }
.note { color: #666; font-style: italic; }
.filters { margin: 1rem 0; display: flex; gap: 1.5rem; align-items: center; }
.summaries h2, .verdict h2 { font-size: 1.1rem; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table.summary { font-size: 0.8rem; }
table.summary th, table.summary td { padding: 0.15rem 0.35rem; }
table.summary th { white-space: normal; vertical-align: bottom; min-width: 3.5rem; }
table.summary th[scope="row"] { text-align: left; font-weight: normal; min-width: 8rem;
  vertical-align: middle; }
td.few { color: #8a6d00; }
.frame { position: relative; display: inline-block; line-height: 0; }
.frame .box { position: absolute; border: 2px solid #00e5ff; box-sizing: border-box; }
.frame .box span { position: absolute; left: 0; top: 0; font-size: 0.6rem; line-height: 1.2;
  background: rgba(0, 0, 0, 0.6); color: #9ff; white-space: nowrap; padding: 0 2px; }
figure.missed img { outline: 3px solid #b00020; }
figure.missed figcaption { color: #b00020; }
.tag { font-size: 0.72rem; color: #555; border: 1px solid #bbb; border-radius: 3px;
  padding: 0 3px; margin-left: 0.3rem; white-space: nowrap; font-weight: normal; }
td.low { color: #b00020; }
.notes p, .verdict li { margin: 0.3rem 0; }
.warning { color: #8a3a00; }
@media (max-width: 60rem) { body { margin: 0.6rem; } table { font-size: 0.8rem; } }
"""

# The report's only script: it filters sections by the codes in their data-outcomes attribute
# and interpolates nothing. The page's Content-Security-Policy allows exactly this script (by
# its hash) and no other, nor any request.
FILTER_SCRIPT = """
(function () {
  var form = document.getElementById("filters");
  var finding = document.getElementById("finding");
  var outcome = document.getElementById("outcome");
  var sections = document.querySelectorAll("section.image");
  var errors = ["fp", "fn"];
  function matches(code, wanted) {
    if (!wanted) { return ["tp", "fp", "fn", "pp"].indexOf(code) >= 0; }
    if (wanted === "correct") { return ["tp", "tn", "pp", "pn"].indexOf(code) >= 0; }
    return code === wanted;
  }
  function update() {
    var wanted = outcome ? outcome.value : "";
    var shown = 0;
    sections.forEach(function (section) {
      var codes = JSON.parse(section.getAttribute("data-outcomes"));
      var labels = finding.value ? [finding.value] : Object.keys(codes);
      var keep;
      if (!finding.value && !wanted) {
        keep = true;
      } else if (!finding.value && wanted === "correct") {
        keep = labels.every(function (l) { return errors.indexOf(codes[l]) < 0; });
      } else {
        keep = labels.some(function (l) { return matches(codes[l], wanted); });
      }
      section.hidden = !keep;
      shown += keep ? 1 : 0;
    });
    document.getElementById("shown").textContent =
      shown + " of " + sections.length + " images shown";
  }
  form.hidden = false;
  finding.addEventListener("change", update);
  if (outcome) { outcome.addEventListener("change", update); }
  update();
})();
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(FILTER_SCRIPT.encode()).digest()).decode()
POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_SCRIPT_HASH}'"
)


def _gradient_css(cmap: str | Colormap) -> str:
    colours = colormap(cmap)
    stops = []
    for value in np.linspace(0.0, 1.0, 11):
        red, green, blue = (round(255 * c) for c in colours(float(value))[:3])
        stops.append(f"rgb({red},{green},{blue}) {100 * value:.0f}%")
    return "linear-gradient(to right, " + ", ".join(stops) + ")"


def _box_markers(boxes: Mapping[str, np.ndarray], width: int, height: int) -> str:
    """Every ground-truth box as an element over the input, placed in percent of its size.

    Elements rather than pixels: they stay sharp at any zoom, carry their label as text, and a
    reader (or a test) can count them.
    """
    markers = []
    for label, rows in boxes.items():
        for x0, y0, x1, y1 in rows:
            left, top = 100 * max(0.0, x0) / width, 100 * max(0.0, y0) / height
            right, bottom = (
                100 * min(float(width), x1) / width,
                100 * min(float(height), y1) / height,
            )
            place = (
                f"left:{left:.2f}%;top:{top:.2f}%;"
                f"width:{max(0.0, right - left):.2f}%;height:{max(0.0, bottom - top):.2f}%"
            )
            markers.append(
                f'<span class="box" style="{place}"><span>{html.escape(label)}</span></span>'
            )
    return "".join(markers)


class Pictures:
    """How the report draws its pictures: thumbnails as JPEG, overlays with their boxes."""

    def __init__(self, alpha: float, cmap: str | Colormap, thumbnail: int, quality: int) -> None:
        self.alpha, self.cmap, self.thumbnail, self.quality = alpha, cmap, thumbnail, quality

    def input(self, explanation: Explanation, index: int) -> str:
        picture = image_to_pil(explanation.images[index])
        if explanation.images.shape[1] == 1:
            picture = picture.convert("L")  # a third of the bytes for a grey X-ray
        return _jpeg_data_uri(_thumbnail(picture, self.thumbnail)[0], self.quality)

    def overlay(
        self, explanation: Explanation, index: int, cls: str, boxes: np.ndarray | None
    ) -> str:
        heat = explanation.heatmaps[index][cls]
        picture = overlay_heatmap(explanation.images[index], heat, alpha=self.alpha, cmap=self.cmap)
        picture, sx, sy = _thumbnail(picture, self.thumbnail)
        if boxes is not None:
            _draw_ground_truth(picture, boxes, map_peak(heat), sx, sy)
        return _jpeg_data_uri(picture, self.quality)


class Marks:
    """What the tables flag: labels that cannot be learned, and thresholds that are too low."""

    def __init__(self, not_learnable: Collection[str], low_threshold: float) -> None:
        self.not_learnable = frozenset(not_learnable)
        self.low_threshold = low_threshold

    def label(self, label: str) -> str:
        tag = '<span class="tag">not learnable</span>' if label in self.not_learnable else ""
        return html.escape(label) + tag

    def is_low(self, threshold: float) -> bool:
        return threshold < self.low_threshold


def _image_section(
    explanation: Explanation,
    index: int,
    name: str,
    anchor: str,
    pictures: Pictures,
    truth: np.ndarray | None,
    boxes: Mapping[str, np.ndarray],
    marks: Marks,
) -> str:
    escape = html.escape
    codes = _outcomes(explanation, index, truth)
    table_rows = []
    for label, p, t, positive in prediction_rows(explanation, index):
        attributes = ' class="positive"' if positive else ""
        low = marks.is_low(t)
        cells = f"<td>{marks.label(label)}</td><td>{100 * p:.1f}</td>"
        cells += (
            f'<td class="low">&#9873; {100 * t:.1f}</td>' if low else (f"<td>{100 * t:.1f}</td>")
        )
        if truth is not None:
            code = codes[label]
            outcome = _OUTCOME_TEXT[code]
            if positive and low:
                outcome += f" (threshold below {100 * marks.low_threshold:g}%)"
            cells += f'<td>{_TRUTH_TEXT[code]}</td><td class="{code}">{outcome}</td>'
        table_rows.append(f"<tr{attributes}>{cells}</tr>")
    figures = []
    for cls in explanation.classes[index]:
        source = pictures.overlay(explanation, index, cls, boxes.get(cls))
        missed = codes[cls] == "fn"
        if missed:
            caption = missed_caption(explanation, index, cls)
        else:
            caption = overlay_caption(explanation, index, cls)
            if truth is not None:
                caption += f" · {_OUTCOME_TEXT[codes[cls]] or 'true negative'}"
        kind = ' class="missed"' if missed else ""
        figures.append(
            f'<figure{kind}><img src="{source}" alt="{escape(cls)} heatmap of {escape(name)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    unexplained = [
        label
        for label, code in codes.items()
        if code == "fn" and label not in explanation.classes[index]
    ]
    if unexplained:
        figures.append(
            '<p class="note">Missed, not explained: '
            f"{escape(', '.join(unexplained))} (explain them with classes=...)</p>"
        )
    overlays = "\n".join(figures) or '<p class="note">No class explained for this image.</p>'
    header = "<th>Finding</th><th>Probability (%)</th><th>Threshold (%)</th>"
    if truth is not None:
        header += "<th>Truth</th><th>Outcome</th>"
    height, width = (int(side) for side in explanation.images.shape[-2:])
    drawn = ", ".join(boxes)
    input_caption = f"Input · ground truth: {drawn}" if drawn else "Input"
    outcomes = escape(json.dumps(codes, separators=(",", ":")))
    return f"""<section class="image" id="{anchor}" data-outcomes="{outcomes}">
<h2>{escape(name)}</h2>
<div class="top">
<figure><span class="frame"><img src="{pictures.input(explanation, index)}" \
alt="input image {escape(name)}">{_box_markers(boxes, width, height)}</span>\
<figcaption>{escape(input_caption)}</figcaption></figure>
<div class="table-wrap"><table>
<thead><tr>{header}</tr></thead>
<tbody>
{chr(10).join(table_rows)}
</tbody>
</table></div>
</div>
<div class="overlays">
{overlays}
</div>
</section>"""


_HEADER_WORDS = {
    "label": "Finding",
    "status": "status",
    "auroc": "AUROC",
    "binary_accuracy": "accuracy at 0.5",
    "accuracy": "accuracy, tuned",
    "all_negative_accuracy": "all-negative accuracy",
    "majority_accuracy": "majority-class accuracy",
    "f1": "F1",
    "support": "images",
    "hit_rate": "pointing game (hit rate)",
    "chance": "random point",
    "prior_hit_rate": "hit rate, anatomical prior",
    "iou": "IoU",
    "prior_iou": "IoU, anatomical prior",
    "energy": "energy in box",
    "prior_energy": "energy, anatomical prior",
    "miou": "mIoU",
    "chance_miou": "mIoU, whole image",
    "prior_miou": "mIoU, anatomical prior",
    "chance_hit_rate": "hit rate, random point",
}
"""Column names of chexviz's tables as a reader says them; others lose their underscores."""


def _header_words(name: object) -> str:
    text = str(name)
    return _HEADER_WORDS.get(text, text.replace("_", " "))


def _cell(value: object, as_count: bool) -> str:
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return "—"
        return f"{value:.0f}" if as_count else f"{value:.3f}"
    return html.escape(str(value))


def _summary_table(frame: pd.DataFrame, marks: Marks) -> str:
    """One summary table: worded headers in one row, counts as integers, flagged rows."""
    escape = html.escape
    corner = "" if frame.index.name is None else _header_words(frame.index.name)
    header = f"<th>{escape(corner)}</th>" + "".join(
        f"<th>{escape(_header_words(column))}</th>" for column in frame.columns
    )
    counts = {}
    for column in frame.columns:
        values = frame[column]
        defined = values.dropna().to_numpy() if values.dtype.kind == "f" else np.array([])
        # a float column of whole numbers above 1 holds counts (NaN made it float)
        counts[column] = (
            defined.size > 0 and bool((defined == np.round(defined)).all()) and defined.max() > 1
        )
    rows = []
    for label, row in frame.iterrows():
        cells = [f'<th scope="row">{marks.label(str(label))}</th>']
        for column in frame.columns:
            value = row[column]
            if value == TOO_FEW:
                kind = ' class="few"'
            elif isinstance(value, float | int | np.number):
                kind = ' class="num"'
            else:
                kind = ""
            cells.append(f"<td{kind}>{_cell(value, counts[column])}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<div class="table-wrap"><table class="summary"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def summaries_html(summaries: Mapping[str, pd.DataFrame] | None, marks: Marks) -> str:
    if not summaries:
        return ""
    parts = ['<div class="summaries">']
    for heading, frame in summaries.items():
        table = _summary_table(frame, marks)
        parts.append(f"<h2>{html.escape(str(heading))}</h2>\n{table}")
    parts.append("</div>")
    return "\n".join(parts)


def top_html(
    notes: Sequence[str],
    verdict: Sequence[str],
    labels: tuple[str, ...],
    thresholds: np.ndarray,
    marks: Marks,
) -> str:
    """The notes, the verdict and the labels whose thresholds are below the flag."""
    escape = html.escape
    parts = []
    if notes:
        parts.append(
            '<div class="notes">' + "".join(f"<p>{escape(note)}</p>" for note in notes) + "</div>"
        )
    if verdict:
        items = "".join(f"<li>{escape(line)}</li>" for line in verdict)
        parts.append(
            '<div class="verdict"><h2>Verdict: where it beats each baseline and where not</h2>'
            f"<ul>{items}</ul></div>"
        )
    low = [
        f"{label} {100 * t:.1f}%"
        for label, t in zip(labels, thresholds.tolist(), strict=True)
        if marks.is_low(t)
    ]
    if low:
        parts.append(
            f'<p class="warning">&#9873; Thresholds below {100 * marks.low_threshold:g}%: '
            f"{escape('; '.join(low))}. There a probability that small counts as a "
            "positive: read those positives with care.</p>"
        )
    return "\n".join(parts)


def filters_html(labels: tuple[str, ...], with_truth: bool) -> str:
    escape = html.escape
    options = "".join(
        f'<option value="{escape(label)}">{escape(label)}</option>' for label in labels
    )
    finding = f'<label>Finding <select id="finding"><option value="">any</option>{options}'
    finding += "</select></label>"
    outcome = ""
    if with_truth:
        choices = [("", "any"), *((c, _OUTCOME_TEXT[c]) for c in ("tp", "fp", "fn"))]
        choices.append(("correct", "no error"))
        listed = "".join(f'<option value="{value}">{text}</option>' for value, text in choices)
        outcome = f'<label>Outcome <select id="outcome">{listed}</select></label>'
    return (
        f'<form class="filters" id="filters" hidden>{finding}{outcome}'
        f'<span id="shown"></span></form>'
    )


def render(
    pictures: Pictures,
    slots: Sequence[tuple[Explanation, int]],
    titles: Sequence[str],
    key: np.ndarray | None,
    drawn: Sequence[Mapping[str, np.ndarray]],
    marks: Marks,
    with_boxes: bool,
    title: str,
    methods: Sequence[str],
    top: str,
    filters: str,
    cmap: str | Colormap,
    low_threshold: float,
) -> bytes:
    """The report's HTML, encoded, with its pictures drawn by ``pictures``."""
    sections = [
        _image_section(
            batch,
            index,
            name,
            f"image-{number + 1}",
            pictures,
            None if key is None else key[number],
            drawn[number],
            marks,
        )
        for number, ((batch, index), name) in enumerate(zip(slots, titles, strict=True))
    ]
    escape = html.escape
    legend = "bold rows: predicted positive (probability &ge; threshold)"
    if with_boxes:
        legend += (
            " · cyan: ground-truth box (on the input: every finding's) · white cross: the map's"
            " peak (pointing game)"
        )
    if key is not None:
        legend += " · red frame: a missed finding, the model's map for it"
    legend += f" · &#9873;: threshold below {100 * low_threshold:g}%"
    document = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{POLICY}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{escape(title)}</h1>
<p class="meta">{len(slots)} image{"s" if len(slots) != 1 else ""} · \
{escape("; ".join(methods))} · chexviz {escape(__version__)}</p>
{top}
<p class="scale">heatmap, normalised per class: low <span class="bar" \
style="background: {_gradient_css(cmap)}"></span> high · {legend}</p>
{filters}
{chr(10).join(sections)}
<script>{FILTER_SCRIPT}</script>
</body>
</html>
"""
    return document.encode("utf-8")
