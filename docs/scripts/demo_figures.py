"""Writes every demo figure that the README and the guides quote from one recorded demo run.

The figures live in ``docs/recorded/demo-summary.json``: the ``summary.json`` of one
``chexviz demo`` run with its per-label tables (``metrics.csv``, ``localization_summary.csv``,
``chexlocalize/summary.csv``), the report's size and the list of outputs. The docs quote them
only inside marked regions, which this script rewrites::

    <!-- figures:NAME -->
    ...generated, do not edit...
    <!-- /figures -->

Usage (from the repository root)::

    python docs/scripts/demo_figures.py                        # rewrite the regions
    python docs/scripts/demo_figures.py --check                # exit 1 if a region is stale
    python docs/scripts/demo_figures.py --record demo-out      # record a finished run, rewrite
    python docs/scripts/demo_figures.py --record demo-out --run   # run the demo first

``--record`` also copies the run's figures into ``docs/images``. ``tests/test_doc_figures.py``
checks that the docs match the recorded file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from chexviz.data.synthetic import SIGN_LABELS
from chexviz.demo import DemoResult, demo_figures, format_summary, verdict

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "docs" / "recorded" / "demo-summary.json"
DOCS = ("README.md", "docs/guide/cli.md", "docs/guide/localization-radiologists.md")
OUT = "demo-out"
"""How the docs name the demo's output folder (``make demo`` writes there)."""

_REGION = re.compile(
    r"(?P<open><!-- figures:(?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(?P<close><!-- /figures -->)",
    re.DOTALL,
)
_IMAGES = {
    "curves.png": "docs/images/demo/curves.png",
    "figures/test_00.png": "docs/images/demo/figure.png",
    "chexlocalize/localization.png": "docs/images/chexlocalize_synthetic.png",
}
_NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def record(out: Path, commit: str | None = None) -> dict[str, Any]:
    """Gathers what the docs quote from a finished demo run.

    Args:
        out: The run's ``--out`` folder.
        commit: The commit it ran (default: ``git rev-parse HEAD`` of this checkout).

    Returns:
        The recorded run, as written to ``docs/recorded/demo-summary.json``.
    """
    summary = json.loads((out / "summary.json").read_text())
    for key in ("stages", "environment"):
        if key not in summary:
            raise ValueError(f"{out / 'summary.json'} has no {key!r}: rerun the demo")
    local = str(summary["out_dir"])
    for key in ("out_dir", "report", "model"):
        summary[key] = str(summary[key]).replace(local, OUT, 1)
    data_root = str(Path(summary["cache"]).parent)
    summary["stages"] = [text.replace(data_root, "~/.cache/chexviz") for text in summary["stages"]]
    for key in ("data", "cache"):
        summary[key] = str(summary[key]).replace(data_root, "~/.cache/chexviz", 1)
    if commit is None:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    outputs = sorted(f"{path.name}/" if path.is_dir() else path.name for path in out.iterdir())
    return {
        "commit": commit,
        "summary": summary,
        "metrics": _table(out / "metrics.csv"),
        "localization": _table(out / "localization_summary.csv"),
        "chexlocalize": _table(out / "chexlocalize" / "summary.csv"),
        "report_bytes": (out / "report.html").stat().st_size,
        "outputs": outputs,
    }


def _table(path: Path) -> dict[str, dict[str, Any]]:
    frame = pd.read_csv(path, index_col=0)
    records: dict[str, dict[str, Any]] = json.loads(frame.to_json(orient="index"))
    return records


def _result(recorded: dict[str, Any]) -> DemoResult:
    summary = recorded["summary"]
    names = [field.name for field in dataclasses.fields(DemoResult)]
    missing = [name for name in names if name not in summary]
    if missing:
        raise ValueError(
            f"{RECORDED.relative_to(ROOT)} lacks {missing}: record a run of this version "
            "(python docs/scripts/demo_figures.py --record demo-out --run)"
        )
    return DemoResult(**{name: summary[name] for name in names})


def _f(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"


def _provenance(recorded: dict[str, Any]) -> str:
    summary, env = recorded["summary"], recorded["summary"]["environment"]
    gpu = f", {env['gpu']}" if env.get("gpu") else ""
    return (
        f"`chexviz demo` with its defaults, recorded on {env['date'][:10]} (commit "
        f"`{recorded['commit']}`, torch {env['torch']}, Python {env['python']}, "
        f"{env['machine']} with {env['cpus']} CPUs{gpu}; {summary['seconds']:.0f} s). "
        "The figures vary a little across torch versions and machines; every one below comes "
        "from `docs/recorded/demo-summary.json`."
    )


def _readme_table(recorded: dict[str, Any]) -> str:
    result = _result(recorded)
    lines = [
        _provenance(recorded),
        "",
        f"It generated {result.images:,} synthetic CheXpert-format frontal images, split them "
        f"70/10/20 by patient, trained `simple_cnn` at 96 px and explained the "
        f"{result.test_images} test images. Each figure sits beside every trivial baseline it "
        "has to beat:",
        "",
        "| on the test patients (CheXlocalize: validation patients) | chexviz | baselines |",
        "|---|---|---|",
    ]
    for figure in demo_figures(result):
        value = _f(figure.value)
        if figure.interval is not None:
            value += f" [{_f(figure.interval[0])}, {_f(figure.interval[1])}]"
        baselines = ", ".join(
            f"**{_f(v)}**" + f" ({name})" if not figure.value > v else f"{_f(v)} ({name})"
            for name, v in figure.baselines.items()
        )
        lines.append(f"| {figure.name} | {value} | {baselines} |")
    lines += ["", "In bold: a baseline the figure does not beat. The verdict the demo prints:", ""]
    lines += [f"- {line}" for line in verdict(demo_figures(result))]
    return "\n".join(lines)


def _prior_wins(recorded: dict[str, Any]) -> str:
    """Per label, where the anatomical prior is at least as good as Grad-CAM."""
    rows = recorded["localization"]
    parts = []
    for score, prior, name in (
        ("hit_rate", "prior_hit_rate", "pointing"),
        ("iou", "prior_iou", "IoU"),
        ("energy", "prior_energy", "energy"),
    ):
        lost = [
            f"{label} {_f(row[score])} against {_f(row[prior])}"
            for label, row in rows.items()
            if label != "overall" and row[prior] is not None and not row[score] > row[prior]
        ]
        if lost:
            parts.append(f"{name}: {'; '.join(lost)}")
    if not parts:
        return "Per label, Grad-CAM beats the anatomical prior on every box score."
    return (
        "Per label, the anatomical prior is at least as good as Grad-CAM on "
        + " — ".join(parts)
        + "."
    )


def _outputs(recorded: dict[str, Any]) -> str:
    names = ", ".join(f"`{name}`" for name in recorded["outputs"])
    return (
        f"Outputs land in `{OUT}/`: {names}. `report.html` holds every test image with its "
        f"answer key ({recorded['report_bytes'] / 1e6:.1f} MB in the recorded run)."
    )


def _printed(recorded: dict[str, Any]) -> str:
    result = _result(recorded)
    stages = recorded["summary"]["stages"]
    count = _NUMBERS[len(stages) - 1] if len(stages) <= len(_NUMBERS) else str(len(stages))
    listed = "\n".join(f"{n}. {text}" for n, text in enumerate(stages, start=1))
    return (
        f"It announces its {count} stages on standard error (`chexviz demo [2/{len(stages)}] "
        f"{stages[1]}`), and a line per training epoch (loss, validation macro-AUROC, images "
        "per second, time left): on a terminal between the progress bars, piped into a log or "
        "run in CI as timestamped lines; `--quiet` hides them. The stages of the recorded "
        f"run:\n\n{listed}\n\n{_provenance(recorded)} "
        f"It printed:\n\n```text\n"
        f"{format_summary(result, backbone='simple_cnn', epochs=_epochs(recorded))}\n```"
    )


def _epochs(recorded: dict[str, Any]) -> int:
    match = re.search(r"for (\d+) epochs", recorded["summary"]["stages"][1])
    if match is None:
        raise ValueError("the recorded training stage does not name its epochs")
    return int(match.group(1))


def _metrics(recorded: dict[str, Any]) -> str:
    result, rows = _result(recorded), recorded["metrics"]
    common = max(
        (label for label in rows if label != "macro"),
        key=lambda label: rows[label]["positives"] / rows[label]["support"],
    )
    share = rows[common]["positives"] / rows[common]["support"]
    signs = [rows[label]["auroc"] for label in SIGN_LABELS if rows[label]["auroc"] is not None]
    undrawn = [label for label in rows if label not in (*SIGN_LABELS, "macro", "No Finding")]
    higher = "higher" if result.accuracy_at_half > result.accuracy_tuned else "lower"
    return (
        f"In the recorded run the mean accuracy is {_f(result.all_negative_accuracy)} for a "
        f'model that says "nothing" to everything and {_f(result.majority_accuracy)} for one '
        f"that always answers each label's majority ({common} is positive in "
        f"{100 * share:.0f} % of the test images). The accuracy at 0.5 is "
        f"{_f(result.accuracy_at_half)}, {higher} than at the tuned thresholds "
        f"({_f(result.accuracy_tuned)}). The drawn signs reach AUROC {_f(min(signs))}-"
        f"{_f(max(signs))}; the undrawn labels: "
        + ", ".join(
            f"{label} {_f(rows[label]['auroc'])} ({rows[label]['positives']:.0f} positives)"
            for label in undrawn
        )
        + "."
    )


def _localization(recorded: dict[str, Any]) -> str:
    lines = [
        "| label | findings | pointing game | random point | prior | IoU | prior IoU | energy "
        "| prior energy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in recorded["localization"].items():
        keys = ("hit_rate", "chance", "prior_hit_rate", "iou", "prior_iou", "energy")
        cells = [f"{row['explained']:.0f}", *(_f(row[key]) for key in (*keys, "prior_energy"))]
        if label == "overall":
            lines.append(f"| **{label}** | " + " | ".join(f"**{c}**" for c in cells) + " |")
        else:
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + _prior_wins(recorded)


def _chexlocalize(recorded: dict[str, Any]) -> str:
    result = _result(recorded)
    figures = [f for f in demo_figures(result) if f.name.startswith("CheXlocalize")]
    lines = [
        line
        for line in format_summary(result, backbone="simple_cnn", epochs=0).splitlines()
        if "CheXlocalize" in line and "does not beat" not in line and "beats" not in line
    ]
    rows = recorded["chexlocalize"]
    better = [
        f"{label} {_f(row['miou'])} against {_f(row['prior_miou'])}"
        for label, row in rows.items()
        if label != "mean" and row.get("prior_miou") is not None and row["miou"] > row["prior_miou"]
    ]
    return (
        "```text\n"
        + "\n".join([*lines, *(f"  {line}" for line in verdict(figures))])
        + "\n```\n\n"
        + _provenance(recorded)
        + " Per pathology, Grad-CAM's mIoU beats the anatomical prior's on "
        + ("; ".join(better) if better else "none")
        + "."
    )


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "demo-table": _readme_table,
    "demo-localization-words": _prior_wins,
    "demo-outputs": _outputs,
    "demo-printed": _printed,
    "demo-metrics": _metrics,
    "demo-localization": _localization,
    "demo-chexlocalize": _chexlocalize,
}


def rewrite(text: str, recorded: dict[str, Any], where: str = "") -> str:
    """Fills every marked region of ``text`` from the recorded run.

    Args:
        text: A Markdown file's text.
        recorded: The recorded run.
        where: The file's name, for errors.

    Returns:
        The text with each region's body regenerated.

    Raises:
        ValueError: A region names no known renderer.
    """

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in RENDERERS:
            raise ValueError(f"{where}: unknown figures region {name!r}; known: {list(RENDERERS)}")
        return f"{match['open']}{RENDERERS[name](recorded)}\n{match['close']}"

    return _REGION.sub(fill, text)


def stale(recorded: dict[str, Any]) -> list[str]:
    """The docs whose regions differ from what the recorded run gives."""
    return [
        name
        for name in DOCS
        if rewrite((ROOT / name).read_text(), recorded, name) != (ROOT / name).read_text()
    ]


def main() -> int:
    """Records a run if asked, then rewrites (or with ``--check`` checks) the docs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", type=Path, help="a finished demo's --out folder to record")
    parser.add_argument("--run", action="store_true", help="run chexviz demo into --record first")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if stale")
    args = parser.parse_args()
    if args.run:
        if args.record is None:
            parser.error("--run needs --record DIR")
        command = [sys.executable, "-m", "chexviz.cli", "demo", "--out", str(args.record)]
        subprocess.run([*command, "--no-progress"], check=True)
    if args.record is not None:
        RECORDED.parent.mkdir(parents=True, exist_ok=True)
        RECORDED.write_text(json.dumps(record(args.record), indent=2) + "\n")
        for source, target in _IMAGES.items():
            if (args.record / source).is_file():
                shutil.copyfile(args.record / source, ROOT / target)
    recorded = json.loads(RECORDED.read_text())
    if args.check:
        behind = stale(recorded)
        for name in behind:
            print(f"{name}: figures differ from {RECORDED.relative_to(ROOT)}", file=sys.stderr)
        return 1 if behind else 0
    for name in DOCS:
        path = ROOT / name
        path.write_text(rewrite(path.read_text(), recorded, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
