"""The demo pipeline at toy size: every output is written and the figures are sane."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from chexviz.data.synthetic import SIGN_LABELS
from chexviz.demo import DemoResult, Figure, demo_figures, format_summary, run_demo, verdict
from conftest import trainers_on_device


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("demo")
    # The model's buffers and outputs behave as on a GPU: the whole pipeline must move them to
    # the CPU before NumPy, pandas or matplotlib sees them (see tests/test_device.py).
    with pytest.MonkeyPatch.context() as patch:
        trainers = trainers_on_device(patch)
        result = run_demo(
            out / "out",
            images=80,
            epochs=1,
            image_size=32,
            figures=2,
            data_dir=out / "data",
            progress=False,
        )
    assert len(trainers) == 1
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
    assert {
        "auroc",
        "accuracy",
        "binary_accuracy",
        "f1",
        "all_negative_accuracy",
        "majority_accuracy",
    } <= set(metrics.columns)
    assert metrics.index[-1] == "macro"
    excluded = pd.read_csv(out / "metrics_uncertain_excluded.csv", index_col=0)
    assert (excluded["support"] <= metrics["support"]).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_images"] > 0
    for key in (
        "accuracy_at_half",
        "accuracy_tuned",
        "all_negative_accuracy",
        "majority_accuracy",
        "competition_auroc",
        "sign_macro_auroc_uncertain_excluded",
        "pointing_game",
        "pointing_chance",
        "pointing_prior",
        "iou_prior",
        "energy_prior",
    ):
        assert key in summary, key
    localisation = pd.read_csv(out / "localization_summary.csv", index_col=0)
    assert {"hit_rate", "chance", "prior_hit_rate", "prior_iou", "prior_energy"} <= set(
        localisation.columns
    )
    assert {"torch", "machine", "date"} <= set(summary["environment"])
    assert len(summary["stages"]) == 8
    report = (out / "report.html").read_text()
    assert "anatomical prior" in report
    assert "Every headline figure against every baseline" in report
    assert "majority class" in report
    # Counts beside every score: positives, negatives and patients per label.
    assert "<th>negatives</th>" in report
    assert "<th>patients</th>" in report
    assert {"status", "patients"} <= set(localisation.columns)
    assert "data-outcomes" in report


def test_demo_figures_are_in_range(demo: tuple[Path, object]) -> None:
    out, result = demo
    from chexviz.demo import DemoResult

    assert isinstance(result, DemoResult)
    assert result.images >= result.test_images > 0
    for value in (
        result.accuracy_at_half,
        result.accuracy_tuned,
        result.all_negative_accuracy,
        result.majority_accuracy,
        result.pointing_chance,
        result.pointing_prior,
    ):
        assert 0.0 <= value <= 1.0
    # the majority class is the best constant: never below all-negative
    assert result.majority_accuracy >= result.all_negative_accuracy
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


def _run_on_a_terminal(argv: list[str], cwd: Path) -> str:
    """Runs a command in a pseudo-terminal (80 columns) and returns everything it wrote."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import sys
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin, stdout and stderr are the terminal
        os.chdir(cwd)
        os.execv(sys.executable, [sys.executable, *argv])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], 120)
        if not ready:
            os.kill(pid, 9)
            break
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_demo_shows_its_stages_and_progress_on_a_terminal(tmp_path: Path) -> None:
    argv = ["-m", "chexviz.cli", "demo", "--images", "60", "--epochs", "2", "--image-size", "32"]
    argv += ["--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data")]
    shown = _run_on_a_terminal(argv, tmp_path)
    summary = shown.index("chexviz demo: ")
    before = shown[:summary]
    for stage in range(1, 9):
        assert f"chexviz demo [{stage}/8]" in before
    for bar in ("synthetic CheXpert", "caching", "epoch 1/2", "epoch 2/2", "explaining"):
        assert bar in before, bar
    assert "%|" in before  # tqdm bars, drawn as they go
    assert "anatomical prior" in shown[summary:]
    assert "CheXlocalize" in shown[summary:]
    assert "best method by mean mIoU" in shown[summary:]


def _result(**changes: object) -> DemoResult:
    """A demo result that beats every baseline, with `changes` applied."""
    located = {
        "miou": 0.4,
        "miou_lower": 0.35,
        "miou_upper": 0.45,
        "hit_rate": 0.7,
        "hit_rate_lower": 0.6,
        "hit_rate_upper": 0.8,
        "prior_miou": 0.3,
        "prior_hit_rate": 0.5,
        "chance_miou": 0.05,
        "chance_hit_rate": 0.05,
    }
    fields: dict[str, object] = {
        "out_dir": Path("demo-out"),
        "images": 100,
        "test_images": 20,
        "macro_auroc": 0.8,
        "sign_macro_auroc": 0.9,
        "sign_macro_auroc_uncertain_excluded": 0.9,
        "competition_auroc": 0.85,
        "accuracy_at_half": 0.95,
        "accuracy_tuned": 0.93,
        "all_negative_accuracy": 0.857,
        "majority_accuracy": 0.86,
        "boxed_findings": 30,
        "pointing_game": 0.8,
        "pointing_chance": 0.127,
        "pointing_prior": 0.6,
        "iou": 0.5,
        "iou_prior": 0.4,
        "energy": 0.5,
        "energy_prior": 0.45,
        "chexlocalize": located,
        "seconds": 1.0,
        "report": Path("demo-out/report.html"),
        "model": Path("demo-out/model.safetensors"),
        "data": Path("data"),
        "cache": Path("cache"),
    }
    if "chexlocalize" in changes:
        located.update(changes.pop("chexlocalize"))  # type: ignore[call-overload]
    fields.update(changes)
    return DemoResult(**fields)  # type: ignore[arg-type]


def test_verdict_names_a_figure_that_beats_every_baseline_as_a_win() -> None:
    lines = verdict([Figure("AUROC", 0.9, {"chance": 0.5})])
    assert lines == ["beats every baseline on: AUROC"]


def test_verdict_names_each_baseline_a_figure_does_not_beat() -> None:
    figures = [
        Figure("accuracy", 0.691, {"all-negative": 0.857, "majority class": 0.857}),
        Figure("energy", 0.125, {"flat map": 0.127, "anatomical prior": 0.1}),
        Figure("IoU", 0.4, {"anatomical prior": 0.4}),  # a tie is not a win
        Figure("AUROC", 0.9, {"chance": 0.5}),
    ]
    assert verdict(figures) == [
        "does not beat all-negative on: accuracy (0.691 against 0.857)",
        "does not beat majority class on: accuracy (0.691 against 0.857)",
        "does not beat flat map on: energy (0.125 against 0.127)",
        "does not beat anatomical prior on: IoU (0.400 against 0.400)",
        "beats every baseline on: AUROC",
    ]


def test_verdict_names_an_undefined_figure() -> None:
    lines = verdict([Figure("AUROC", math.nan, {"chance": 0.5})])
    assert lines == ["undefined, so not compared: AUROC"]


def test_verdict_says_why_a_localisation_figure_is_undefined() -> None:
    # A small demo has fewer than ten boxed findings of every label: the pooled scores are NaN
    # by the too-few-cases rule, and the verdict says so instead of printing a bare "nan".
    figures = demo_figures(_result(pointing_game=math.nan, iou=math.nan, energy=math.nan))
    undefined = [line for line in verdict(figures) if line.startswith("undefined")]
    assert len(undefined) == 1
    assert undefined[0].count("(too few cases: no label has 10 findings to score") == 3
    for name in ("pointing game", "IoU with the boxes (", "energy in the boxes ("):
        assert name in undefined[0]


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"accuracy_tuned": 0.691}, "does not beat all-negative on: accuracy at the tuned"),
        ({"accuracy_at_half": 0.858}, "does not beat majority class on: accuracy at 0.5"),
        ({"competition_auroc": 0.45}, "does not beat chance on: mean AUROC"),
        ({"pointing_game": 0.1}, "does not beat random point on: pointing game"),
        ({"pointing_game": 0.5}, "does not beat anatomical prior on: pointing game"),
        ({"iou": 0.3}, "does not beat anatomical prior on: IoU"),
        ({"energy": 0.125}, "does not beat flat map on: energy in the boxes (0.125 against 0.127)"),
        ({"chexlocalize": {"miou": 0.04}}, "does not beat whole image on: CheXlocalize mIoU"),
        ({"chexlocalize": {"hit_rate": 0.04}}, "does not beat random point on: CheXlocalize hit"),
    ],
)
def test_demo_summary_names_every_loss_to_a_baseline(
    changes: dict[str, object], named: str
) -> None:
    text = format_summary(_result(**changes), backbone="simple_cnn", epochs=1)
    assert named in text


def test_demo_summary_names_the_wins_when_nothing_is_lost() -> None:
    text = format_summary(_result(), backbone="simple_cnn", epochs=1)
    assert "does not beat" not in text
    assert "beats every baseline on: macro-AUROC, the drawn signs;" in text
    assert "CheXlocalize hit rate" in text.splitlines()[-2]


def test_every_demo_figure_has_a_baseline() -> None:
    assert all(figure.baselines for figure in demo_figures(_result()))
