"""The demo pipeline at toy size: every output is written and the figures are sane."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from chexviz.data.synthetic import SIGN_LABELS
from chexviz.demo import run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("demo")
    result = run_demo(
        out / "out",
        images=80,
        epochs=1,
        image_size=32,
        figures=2,
        data_dir=out / "data",
        progress=False,
    )
    return out / "out", result


def test_demo_writes_every_output(demo: tuple[Path, object]) -> None:
    out, _ = demo
    for name in (
        "metrics.csv",
        "history.csv",
        "history.json",
        "curves.png",
        "report.html",
        "localization.csv",
        "localization_summary.csv",
        "model.safetensors",
        "summary.json",
    ):
        assert (out / name).stat().st_size > 0, name
    metrics = pd.read_csv(out / "metrics.csv", index_col=0)
    assert {"auroc", "accuracy", "f1", "all_negative_accuracy"} <= set(metrics.columns)
    assert metrics.index[-1] == "macro"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_images"] > 0


def test_demo_figures_are_in_range(demo: tuple[Path, object]) -> None:
    out, result = demo
    from chexviz.demo import DemoResult

    assert isinstance(result, DemoResult)
    assert result.images >= result.test_images > 0
    for value in (result.macro_accuracy, result.all_negative_accuracy, result.pointing_chance):
        assert 0.0 <= value <= 1.0
    assert math.isnan(result.sign_macro_auroc) or 0.0 <= result.sign_macro_auroc <= 1.0
    scores = pd.read_csv(out / "localization.csv")
    assert set(scores["label"]) <= set(SIGN_LABELS)


def test_demo_reuses_the_synthetic_data(demo: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = demo
    data = out.parent / "data"
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*.csv")}
    run_demo(tmp_path, images=80, epochs=1, image_size=32, figures=0, data_dir=data, progress=False)
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*.csv")} == before


@pytest.mark.parametrize(
    ("argument", "value"), [("images", 10), ("epochs", 0), ("image_size", 8), ("figures", -1)]
)
def test_demo_rejects_bad_arguments(tmp_path: Path, argument: str, value: int) -> None:
    with pytest.raises(ValueError, match=argument):
        run_demo(tmp_path, **{argument: value})  # type: ignore[arg-type]


def test_demo_scores_the_chexlocalize_protocol(demo: tuple[Path, object]) -> None:
    out, result = demo
    summary = pd.read_csv(out / "chexlocalize" / "summary.csv", index_col="label")
    assert summary.index[-1] == "mean"
    located = result.chexlocalize  # type: ignore[attr-defined]
    assert located["prior_miou"] == pytest.approx(summary.loc["mean", "prior_miou"])
    for value in located.values():
        assert math.isnan(value) or 0.0 <= value <= 1.0
    assert (out / "chexlocalize" / "localization.png").is_file()
