"""The command line at toy size: train, evaluate, explain, demo, help and one-line errors."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from chexviz.cli import main
from chexviz.data.synthetic import make_synthetic_chexpert


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_chexpert(tmp_path_factory.mktemp("cli-data"), n_patients=12, seed=3)


@pytest.fixture(scope="module")
def trained(release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-train")
    code = main(
        [
            "train",
            "--data",
            str(release.parent),
            "--backbone",
            "simple_cnn",
            "--out",
            str(out),
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--uncertainty",
            "Atelectasis=ones,Edema=ones",
            "--no-progress",
        ]
    )
    assert code == 0
    return out


def test_train_writes_model_history_and_metrics(trained: Path) -> None:
    for name in ("model.safetensors", "history.csv", "metrics.csv", "last.safetensors"):
        assert (trained / name).is_file(), name


def test_evaluate_prints_the_metrics_table(
    trained: Path, release: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(
        [
            "evaluate",
            "--model",
            str(trained / "model.safetensors"),
            "--data",
            str(release),
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "auroc" in printed
    assert "all_negative_accuracy" in printed
    assert "majority_accuracy" in printed
    assert "binary_accuracy" in printed
    assert "uncertain labels counted as negative" in printed
    assert "uncertain labels left out" in printed
    assert "competition labels with enough cases" in printed
    # A toy valid.csv: most labels are too few for the default minimum, named with counts.
    assert "too few cases, not scored and left out of the mean" in printed
    frame = pd.read_csv(tmp_path / "metrics.csv", index_col="label")
    assert {"negatives", "patients", "status"} <= set(frame.columns)
    labels = frame.drop(index="macro")
    few = labels["status"] == "too few cases"
    assert few.any()
    assert labels.loc[few, "auroc"].isna().all()
    assert labels.loc[~few, "auroc"].notna().all()
    assert frame.loc["macro", "auroc"] == pytest.approx(labels.loc[~few, "auroc"].mean())
    assert (frame["negatives"] == frame["support"] - frame["positives"]).all()
    assert (labels["patients"] <= labels["support"]).all()
    assert (tmp_path / "metrics.csv").is_file()
    assert (tmp_path / "metrics_uncertain_excluded.csv").is_file()


def test_explain_writes_figures_and_report(trained: Path, release: Path, tmp_path: Path) -> None:
    images = sorted(release.glob("train/*/study1/view1_frontal.jpg"))[:2]
    code = main(
        [
            "explain",
            *map(str, images),
            "--model",
            str(trained / "model.safetensors"),
            "--classes",
            "Cardiomegaly,Support Devices",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert len(list(tmp_path.glob("*.png"))) == 2
    html = (tmp_path / "report.html").read_text()
    assert "Cardiomegaly" in html
    assert images[0].name in html


def test_errors_are_one_line_and_exit_nonzero(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.jpg"
    code = main(
        [
            "explain",
            str(missing),
            "--model",
            str(trained / "model.safetensors"),
            "--out",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1
    assert "nope.jpg" in err
    assert "Traceback" not in err


def test_unknown_class_names_the_labels(
    trained: Path, release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = next(release.glob("train/*/study1/view1_frontal.jpg"))
    code = main(
        [
            "explain",
            str(image),
            "--model",
            str(trained / "model.safetensors"),
            "--out",
            str(tmp_path),
            "--classes",
            "Broken Heart",
        ]
    )
    assert code == 1
    assert "Cardiomegaly" in capsys.readouterr().err


def test_bad_uncertainty_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", ".", "--backbone", "x", "--out", ".", "--uncertainty", "maybe"])
    assert exit_info.value.code == 2
    assert "LABEL=POLICY" in capsys.readouterr().err


def _commands() -> list[str]:
    """Every subcommand the parser has, so that a new one is covered without editing tests."""
    from chexviz.cli import _parser

    (commands,) = (
        action for action in _parser()._actions if isinstance(action, argparse._SubParsersAction)
    )
    return sorted(commands.choices)


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_complete_help(command: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "chexviz.cli", command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("usage: chexviz")
    assert "--out" in out
    flat = " ".join(out.split())
    # no default a user cannot use: flags, "none given", or one stated twice
    assert "(default: True)" not in flat
    assert "(default: False)" not in flat
    assert "(default: None)" not in flat
    for line in flat.split(" -"):
        assert line.count("default") <= 1, line


def test_the_parser_lists_the_five_commands() -> None:
    assert _commands() == ["demo", "evaluate", "explain", "localize", "train"]


@pytest.mark.parametrize("command", [None, *_commands()])
def test_no_help_text_shows_an_escaped_percent(
    command: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    # argparse %-formats help= strings but prints description= and epilog= as written, so a
    # "%%" there reaches the user verbatim (``evaluate --help`` showed "95%%").
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"] if command else ["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: chexviz")
    assert "%%" not in out


def test_demo_command_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "demo",
            "--out",
            str(tmp_path / "out"),
            "--images",
            "60",
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--data-dir",
            str(tmp_path / "data"),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    # not a terminal (pytest captures the streams): no bars (the progress lines:
    # tests/test_cli_progress.py)
    assert "%|" not in captured.err
    printed = captured.out
    for words in (
        "pointing game",
        "random point",
        "anatomical prior",
        "accuracy at 0.5 (the study's metric)",
        "accuracy at the tuned thresholds",
        "majority class",
        "all-negative",
        "5 CheXpert competition labels",
    ):
        assert words in printed
    assert (tmp_path / "out" / "report.html").is_file()
