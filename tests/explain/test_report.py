import base64
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from chexviz.explain._html import FILTER_SCRIPT
from chexviz.explain.explanation import Explanation
from chexviz.explain.report import write_html_report

SIZE = 32
LABELS = ("Cardiomegaly", "Edema", "Pleural Effusion", "Support Devices")


def _explanation(
    batch: int = 1,
    *,
    labels: tuple[str, ...] = LABELS,
    explained: tuple[str, ...] = ("Edema", "Pleural Effusion"),
    channels: int = 1,
) -> Explanation:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, channels, SIZE, SIZE, generator=generator)
    probabilities = torch.linspace(0.1, 0.9, len(labels)).repeat(batch, 1)
    maps = []
    for _ in range(batch):
        per_class = {}
        for k, cls in enumerate(explained):
            heat = torch.zeros(SIZE, SIZE)
            heat[4 * k : 4 * k + 8, 4 * k : 4 * k + 8] = 1.0
            per_class[cls] = heat
        maps.append(per_class)
    return Explanation(
        images=images,
        labels=labels,
        probabilities=probabilities,
        thresholds=torch.full((len(labels),), 0.5),
        classes=tuple(explained for _ in range(batch)),
        heatmaps=tuple(maps),
        raw_maps=tuple({c: m[::8, ::8] for c, m in per.items()} for per in maps),
        zero_maps=tuple(frozenset() for _ in range(batch)),
        layer="backbone.features",
        method="gradcam",
    )


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.text: list[str] = []
        self.tags: list[str] = []
        self.positive_rows = 0
        self.scripts: list[str] = []
        self.sections: list[dict[str, str | None]] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in_script = tag == "script"
        if tag == "img":
            self.images.append(dict(attrs))
        if tag == "tr" and ("class", "positive") in attrs:
            self.positive_rows += 1
        if tag == "section":
            self.sections.append(dict(attrs))

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)
        else:
            self.text.append(data)


def _parse(path: Path) -> _Collector:
    collector = _Collector()
    collector.feed(path.read_text(encoding="utf-8"))
    return collector


def test_html_report_embeds_every_picture(tmp_path: Path) -> None:
    path = write_html_report(
        [_explanation(batch=2), _explanation(channels=3)],
        tmp_path / "report.html",
        names=["a.jpg", "b.jpg", Path("c.jpg")],
    )
    parsed = _parse(path)
    # 3 images x (input + 2 overlays)
    assert len(parsed.images) == 9
    modes = []
    for image in parsed.images:
        source = image["src"] or ""
        assert source.startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as picture:
            assert picture.size == (SIZE, SIZE)
            modes.append(picture.mode)
    # the grey inputs are grey JPEGs, the RGB input and every overlay colour ones
    assert modes == ["L", "RGB", "RGB"] * 2 + ["RGB"] * 3
    text = "".join(parsed.text)
    for name in ("a.jpg", "b.jpg", "c.jpg", "Pleural Effusion (63.3%)"):
        assert name in text
    assert parsed.positive_rows == 3 * 2
    assert parsed.scripts == [FILTER_SCRIPT]  # the only script: no data in it
    assert re.search(r"https?:|src=\"//", path.read_text()) is None  # nothing to fetch


def test_html_report_escapes_all_text(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    explanation = _explanation(labels=(evil, "B & C", '"quoted"', "D"), explained=(evil, "B & C"))
    path = write_html_report(explanation, tmp_path / "r.html", names=[evil], title=evil)
    raw = path.read_text(encoding="utf-8")
    assert raw.count("<script") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    assert "B &amp; C" in raw
    parsed = _parse(path)
    assert parsed.scripts == [FILTER_SCRIPT]
    assert evil in "".join(parsed.text)  # the browser shows the name as text
    assert any(evil in (image.get("alt") or "") for image in parsed.images)


def test_html_report_default_names_and_empty_images(tmp_path: Path) -> None:
    path = write_html_report([_explanation(), _explanation(explained=())], tmp_path / "r.html")
    text = "".join(_parse(path).text)
    assert "image 1" in text
    assert "image 2" in text
    assert "No class explained for this image." in text


def test_html_report_bad_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="names has 1 entries but the explanations hold 2"):
        write_html_report(_explanation(batch=2), tmp_path / "r.html", names=["x"])
    with pytest.raises(ValueError, match="no image"):
        write_html_report([], tmp_path / "r.html")


def test_html_report_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "r.html"
    path.write_text("old report")

    def fail(source: object, target: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_html_report(_explanation(), path)
    assert path.read_text() == "old report"
    assert os.listdir(tmp_path) == ["r.html"]
    monkeypatch.undo()
    write_html_report(_explanation(), path)
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert os.listdir(tmp_path) == ["r.html"]


def test_html_report_heat_scale_follows_the_colormap(tmp_path: Path) -> None:
    raw = write_html_report(_explanation(), tmp_path / "r.html", cmap="viridis").read_text()
    stops = re.findall(r"rgb\((\d+),(\d+),(\d+)\) (\d+)%", raw)
    assert stops[0] == ("68", "1", "84", "0")  # viridis starts dark purple: R, G, B in order
    assert stops[-1][3] == "100"
    assert np.argmax([int(v) for v in stops[-1][:3]]) in (0, 1)  # ends yellow


_ALLOWED_ATTRIBUTES = {
    "src",
    "alt",
    "class",
    "id",
    "style",
    "lang",
    "charset",
    "name",
    "content",
    "http-equiv",
    "data-outcomes",
    "hidden",
    "value",
    "border",
}


class _Attributes(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.attributes: set[str] = set()
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)


def test_html_report_escapes_file_names_layer_and_method(tmp_path: Path) -> None:
    # File names may hold quotes and angle brackets; the layer name is a module name, which
    # PyTorch lets be any string without a dot.
    names = [Path("x") / '"><img src=x onerror=alert(1)>.png', "a' onmouseover='alert(2)"]
    explanation = dataclasses.replace(
        _explanation(batch=2),
        layer="<script>alert(3)</script>",
        method='gradcam"><iframe src=javascript:alert(4)>',
    )
    path = write_html_report(explanation, tmp_path / "r.html", names=names)
    parsed = _Attributes()
    parsed.feed(path.read_text(encoding="utf-8"))
    assert parsed.attributes <= _ALLOWED_ATTRIBUTES
    assert "iframe" not in parsed.tags
    assert _parse(path).scripts == [FILTER_SCRIPT]
    collected = _parse(path)
    alts = " ".join(image.get("alt") or "" for image in collected.images)
    text = "".join(collected.text)
    for name in names:
        assert os.fspath(name) in alts  # shown verbatim, as text
        assert os.fspath(name) in text
    assert "<script>alert(3)</script>" in text


def _truth_case(tmp_path: Path, **options: object) -> tuple[Path, _Collector]:
    # probabilities 0.1, 0.367, 0.633, 0.9 at threshold 0.5: the last two labels predicted
    truth = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, np.nan, 0.0, 1.0]])
    path = write_html_report(
        _explanation(batch=2), tmp_path / "r.html", truth=truth, names=["a", "b"], **options
    )
    return path, _parse(path)


def test_html_report_shows_the_answer_key_and_outcomes(tmp_path: Path) -> None:
    _, parsed = _truth_case(tmp_path)
    codes = [json.loads(section["data-outcomes"] or "") for section in parsed.sections]
    assert codes == [
        {"Cardiomegaly": "fn", "Edema": "tn", "Pleural Effusion": "tp", "Support Devices": "fp"},
        {"Cardiomegaly": "tn", "Edema": "na", "Pleural Effusion": "fp", "Support Devices": "tp"},
    ]
    text = "".join(parsed.text)
    for words in ("missed finding", "false positive", "true positive", "not scored", "Truth"):
        assert words in text
    # the overlay captions say whether the explained finding is right
    assert "Pleural Effusion (63.3%) · true positive" in text
    assert "Pleural Effusion (63.3%) · false positive" in text
    assert "Outcome" in text  # the outcome filter exists when there is an answer key


def test_html_report_filter_script_is_the_only_one_the_page_allows(tmp_path: Path) -> None:
    path, parsed = _truth_case(tmp_path)
    raw = path.read_text()
    (script,) = parsed.scripts
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', raw)
    assert policy is not None
    assert f"script-src 'sha256-{digest}'" in policy.group(1)
    assert "default-src 'none'" in policy.group(1)
    # the filter form is hidden until the script shows it: no dead controls without scripts
    assert '<form class="filters" id="filters" hidden>' in raw


def test_html_report_draws_boxes_and_the_peak_on_overlays(tmp_path: Path) -> None:
    boxes = [{"Edema": (20, 20, 28, 28)}, None]
    plain = _parse(write_html_report(_explanation(batch=2), tmp_path / "a.html"))
    boxed = _parse(write_html_report(_explanation(batch=2), tmp_path / "b.html", boxes=boxes))

    def picture(parsed: _Collector, number: int) -> np.ndarray:
        source = parsed.images[number]["src"] or ""
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as image:
            return np.asarray(image.convert("RGB"), dtype=np.int16)

    edema = picture(boxed, 1) - picture(plain, 1)  # image 1: input, Edema, Pleural Effusion
    changed = np.abs(edema).sum(axis=2) > 60
    assert changed[20, 20:28].any()  # the box's top edge
    assert changed[27, 20:28].any()  # its bottom edge
    assert changed[0:3, 0:3].any()  # the white cross at the map's peak, pixel (0, 0)
    assert not changed[12, 12]  # nothing else
    np.testing.assert_allclose(picture(boxed, 2), picture(plain, 2), atol=8)  # no box: no change
    text = "".join(boxed.text)
    assert "cyan: ground-truth box" in text
    with pytest.raises(ValueError, match=r"boxes\[0\]\['Edema'\] must be"):
        write_html_report(
            _explanation(batch=2), tmp_path / "c.html", boxes=[{"Edema": (1, 2)}, None]
        )


def test_html_report_summaries_at_the_top(tmp_path: Path) -> None:
    summary = pd.DataFrame(
        {"auroc": [0.91234, np.nan], "majority": [0.8, 0.75]}, index=["Edema", "<b>x</b>"]
    )
    path = write_html_report(
        _explanation(), tmp_path / "r.html", summaries={"Test metrics & baselines": summary}
    )
    raw = path.read_text()
    assert raw.index("Test metrics &amp; baselines") < raw.index('<section class="image"')
    assert "0.912" in raw
    assert "&lt;b&gt;x&lt;/b&gt;" in raw  # table cells are escaped too
    assert "—" in raw  # nan


def test_html_report_checks_its_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"truth must have shape \[2, 4\]"):
        write_html_report(_explanation(batch=2), tmp_path / "r.html", truth=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="boxes has 1 entries but the explanations hold 2"):
        write_html_report(_explanation(batch=2), tmp_path / "r.html", boxes=[None])
    with pytest.raises(ValueError, match="different labels"):
        write_html_report(
            [_explanation(), _explanation(labels=("a", "b", "c", "d"), explained=("a",))],
            tmp_path / "r.html",
        )
    with pytest.raises(ValueError, match="thumbnail"):
        write_html_report(_explanation(), tmp_path / "r.html", thumbnail=4)


def test_html_report_stays_small(tmp_path: Path) -> None:
    """About the demo's size: 96 px images, three explained classes each."""
    generator = torch.Generator().manual_seed(1)
    side, batch = 96, 20
    explained = ("Edema", "Pleural Effusion", "Support Devices")
    heat = torch.rand(len(explained), side, side, generator=generator)
    explanation = dataclasses.replace(
        _explanation(batch=1, explained=explained),
        images=torch.rand(batch, 1, side, side, generator=generator),
        probabilities=torch.rand(batch, len(LABELS), generator=generator),
        classes=tuple(explained for _ in range(batch)),
        heatmaps=tuple({c: heat[k] for k, c in enumerate(explained)} for _ in range(batch)),
        raw_maps=tuple(
            {c: heat[k, ::8, ::8] for k, c in enumerate(explained)} for _ in range(batch)
        ),
        zero_maps=tuple(frozenset() for _ in range(batch)),
    )
    path = write_html_report(explanation, tmp_path / "r.html")
    per_image = path.stat().st_size / batch
    assert per_image < 40_000  # noise compresses worst; the demo's 368 images stay a few MB


_DOM_STUB = """
const codes = JSON.parse(process.argv[1]);
const sections = codes.map((c) => ({
  hidden: false, getAttribute: (name) => (name === "data-outcomes" ? JSON.stringify(c) : null),
}));
const control = () => ({ value: "", on: {}, addEventListener(e, f) { this.on[e] = f; } });
const elements = {
  filters: { hidden: true }, finding: control(), outcome: control(), shown: { textContent: "" },
};
global.document = {
  getElementById: (id) => elements[id],
  querySelectorAll: () => sections,
};
require("vm").runInThisContext(require("fs").readFileSync(0, "utf8"));
const results = [elements.filters.hidden];
for (const [finding, outcome] of JSON.parse(process.argv[2])) {
  elements.finding.value = finding;
  elements.outcome.value = outcome;
  elements.finding.on.change();
  results.push(sections.map((s, i) => (s.hidden ? null : i)).filter((i) => i !== null));
}
results.push(elements.shown.textContent);
console.log(JSON.stringify(results));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the page's script")
def test_html_report_filters_by_finding_and_outcome() -> None:
    codes = [
        {"Edema": "tp", "Effusion": "tn"},
        {"Edema": "fp", "Effusion": "fn"},
        {"Edema": "tn", "Effusion": "tp"},
        {"Edema": "na", "Effusion": "tn"},
    ]
    queries = [
        ["", ""],  # everything
        ["Edema", ""],  # Edema positive in truth or prediction
        ["", "fp"],  # any false positive
        ["Effusion", "fn"],
        ["", "correct"],  # no error on any label
        ["Effusion", "correct"],
        ["Edema", "tp"],
    ]
    done = subprocess.run(
        ["node", "-e", _DOM_STUB, json.dumps(codes), json.dumps(queries)],
        input=FILTER_SCRIPT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    shown_form, *selected, count = json.loads(done.stdout)
    assert shown_form is False  # the script reveals the filter form
    assert selected == [[0, 1, 2, 3], [0, 1], [1], [1], [0, 2, 3], [0, 2, 3], [0]]
    assert count == "1 of 4 images shown"


class _Structure(HTMLParser):
    """What a reader sees of the report: figures, box markers, table headers, paragraphs."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[tuple[str, str]] = []  # (class, caption)
        self.boxes: list[str] = []  # the label of each box marker
        self.header_rows: list[list[str]] = []  # per <thead>: the texts of each row
        self.paragraphs: list[str] = []
        self.policies: list[str] = []
        self.sources: list[str] = []
        self.links = 0
        self._stack: list[tuple[str, dict[str, str | None]]] = []
        self._figure = ""
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self._stack.append((tag, attributes))
        self.sources += [value or "" for name, value in attrs if name in ("src", "href")]
        self.links += tag in ("link", "iframe", "object", "embed")
        if tag == "figure":
            self._figure = attributes.get("class") or ""
        if tag == "thead":
            self.header_rows.append([])
        if tag in ("figcaption", "p", "li", "th") or attributes.get("class") == "box":
            self._text = []
        if tag == "meta" and attributes.get("http-equiv") == "Content-Security-Policy":
            self.policies.append(attributes.get("content") or "")

    def handle_endtag(self, tag: str) -> None:
        opened, attributes = self._stack.pop()
        text = "".join(self._text)
        if opened == "figcaption":
            self.figures.append((self._figure, text))
        elif opened in ("p", "li"):
            self.paragraphs.append(text)
        in_head = any(name == "thead" for name, _ in self._stack)
        if opened == "th" and in_head:
            self.header_rows[-1].append(text)
        elif opened == "tr" and in_head:
            self.header_rows[-1].append("|")  # a row ends
        if attributes.get("class") == "box":
            self.boxes.append(text)

    def handle_data(self, data: str) -> None:
        self._text.append(data)


def _reader_case(tmp_path: Path, batch: int = 1) -> tuple[Path, Explanation]:
    # Cardiomegaly is a missed finding (truth 1, 20% < 50%); Edema is "positive" at 0.9%
    # because its threshold is 0.5%; Support Devices cannot be learned.
    explanation = dataclasses.replace(
        _explanation(batch, explained=("Cardiomegaly", "Pleural Effusion", "Support Devices")),
        probabilities=torch.tensor([[0.2, 0.009, 0.633, 0.9]]).repeat(batch, 1),
        thresholds=torch.tensor([0.5, 0.005, 0.5, 0.5]),
    )
    boxes = {
        "Cardiomegaly": [(4, 4, 20, 20)],
        "Pleural Effusion": [(2, 20, 14, 30), (18, 20, 30, 30)],
    }
    summary = pd.DataFrame(
        {
            "status": ["scored", "too few cases"],
            "hit_rate": [0.5, np.nan],
            "prior_iou": [0.4, np.nan],
        },
        index=pd.Index(["Cardiomegaly", "Edema"], name="label"),
    )
    path = write_html_report(
        explanation,
        tmp_path / "r.html",
        truth=np.tile([1.0, 0.0, 1.0, 0.0], (batch, 1)),
        boxes=[boxes] * batch,
        summaries={"Localisation": summary},
        notes=["The test images come from a patient split of train.csv."],
        verdict=["does not beat anatomical prior on: IoU (0.1 against 0.4)"],
        not_learnable=["Support Devices"],
    )
    return path, explanation


def test_html_report_answers_a_readers_questions(tmp_path: Path) -> None:
    path, _ = _reader_case(tmp_path)
    parsed = _Structure()
    parsed.feed(path.read_text(encoding="utf-8"))
    # the missed finding has its map, framed and captioned as missed
    missed = [caption for kind, caption in parsed.figures if kind == "missed"]
    assert missed == ["missed: the model's map for Cardiomegaly (20.0% < threshold 50.0%)"]
    # every ground-truth box is an element on the input, labelled
    assert sorted(parsed.boxes) == ["Cardiomegaly", "Pleural Effusion", "Pleural Effusion"]
    assert "Input · ground truth: Cardiomegaly, Pleural Effusion" in [c for _, c in parsed.figures]
    # headers are words in a single row: no underscores, no empty index row
    summary_header = next(rows for rows in parsed.header_rows if "status" in rows)
    assert summary_header.count("|") == 1
    assert summary_header[0] == "Finding"
    assert "pointing game (hit rate)" in summary_header
    assert "IoU, anatomical prior" in summary_header
    assert not any("_" in text for rows in parsed.header_rows for text in rows)
    # notes, verdict and the flagged low threshold at the top
    text = " ".join(parsed.paragraphs)
    assert "patient split of train.csv" in text
    assert "does not beat anatomical prior on: IoU (0.1 against 0.4)" in parsed.paragraphs
    assert "Thresholds below 5%: Edema 0.5%" in text
    raw = path.read_text(encoding="utf-8")
    assert "(threshold below 5%)" in raw  # the Edema row's false positive says why
    assert raw.count('<span class="tag">not learnable</span>') == 1
    # one self-contained file under its policy
    assert len(parsed.policies) == 1
    assert "default-src 'none'" in parsed.policies[0]
    assert all(source.startswith("data:image/jpeg;base64,") for source in parsed.sources)
    assert parsed.links == 0
    assert re.search(r"https?://|url\(", raw) is None


def test_html_report_of_the_demo_size_stays_under_5_mb(tmp_path: Path, caplog) -> None:
    """The default demo's test split: 368 images of 96 px, about four maps each."""
    generator = torch.Generator().manual_seed(2)
    side, batch, labels = 96, 368, tuple(f"Finding {k}" for k in range(14))
    explained = labels[:4]
    # Grad-CAM maps are upsampled from a coarse grid; X-rays are smooth, not noise
    coarse = torch.rand(batch, len(explained), 1, 12, 12, generator=generator)
    heat = torch.nn.functional.interpolate(coarse.flatten(0, 1), size=side, mode="bilinear")
    heat = heat.view(batch, len(explained), side, side)
    images = torch.nn.functional.interpolate(
        torch.rand(batch, 1, 24, 24, generator=generator), size=side, mode="bilinear"
    )
    explanation = Explanation(
        images=images,
        labels=labels,
        probabilities=torch.rand(batch, len(labels), generator=generator),
        thresholds=torch.full((len(labels),), 0.5),
        classes=tuple(explained for _ in range(batch)),
        heatmaps=tuple({c: heat[b, k] for k, c in enumerate(explained)} for b in range(batch)),
        raw_maps=tuple({c: coarse[b, k, 0] for k, c in enumerate(explained)} for b in range(batch)),
        zero_maps=tuple(frozenset() for _ in range(batch)),
        layer="backbone.features",
        method="gradcam",
    )
    truth = (torch.rand(batch, len(labels), generator=generator) < 0.2).double().numpy()
    boxes = [{label: [(10, 20, 40, 60)] for label in explained[:2]}] * batch
    names = [f"train/p{b}" for b in range(batch)]
    unlimited = write_html_report(
        explanation, tmp_path / "u.html", truth=truth, boxes=boxes, names=names, max_bytes=None
    )
    assert unlimited.stat().st_size > 5_000_000  # 7.7 MB at quality 80: the limit has work
    with caplog.at_level(logging.INFO, logger="chexviz.explain.report"):
        path = write_html_report(
            explanation, tmp_path / "r.html", truth=truth, boxes=boxes, names=names
        )
    assert path.stat().st_size <= 5_000_000
    assert "encoding again" in caplog.text
    # Every picture is still there, only encoded at a lower quality.
    assert path.read_text().count("data:image/jpeg") == unlimited.read_text().count(
        "data:image/jpeg"
    )
