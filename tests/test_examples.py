"""The examples run end to end (the study reproduction at toy size, on synthetic data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, cwd: Path, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(cwd / "cache")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_reproduce_study_at_toy_size(tmp_path: Path) -> None:
    out = tmp_path / "study"
    printed = _run(
        "reproduce_study.py",
        tmp_path,
        "--synthetic",
        "--train",
        "40",
        "--val",
        "12",
        "--test",
        "24",
        "--epochs",
        "1",
        "--image-size",
        "80",
        "--batch-size",
        "16",
        "--workers",
        "0",
        "--attention",
        "--out",
        str(out),
    )
    table = pd.read_csv(out / "comparison.csv", index_col="model")
    assert list(table.index) == [
        "densenet121",
        "mobilenet_v2",
        "inception_v3",
        "vgg16",
        "vgg16+attention",
    ]
    assert table.loc["vgg16", "published accuracy (%)"] == 86.42
    assert table["accuracy @0.5 (%)"].between(0, 100).all()
    assert "macro AUROC" in printed
    assert (out / "comparison.png").stat().st_size > 0
    assert len(list(out.glob("gradcam_*.png"))) == 1


def test_quickstart(tmp_path: Path) -> None:
    printed = _run("quickstart.py", tmp_path)
    assert "auroc" in printed
    assert (tmp_path / "quickstart-out" / "figure.png").is_file()
    assert (tmp_path / "quickstart-out" / "model.safetensors").is_file()


def test_explain_torchvision(tmp_path: Path) -> None:
    printed = _run("explain_torchvision.py", tmp_path)
    assert "target layer: layer4" in printed
    assert (tmp_path / "torchvision-out" / "overlay_class3.png").is_file()


def test_external_validation(tmp_path: Path) -> None:
    out = tmp_path / "external"
    printed = _run(
        "external_validation.py",
        tmp_path,
        "--out",
        str(out),
        "--patients",
        "40",
        "--external-patients",
        "16",
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--bootstrap",
        "20",
        "--min-cases",
        "1",
    )
    assert "MIMIC-CXR-JPG:" in printed
    assert "NIH ChestX-ray14:" in printed
    assert "Grad-CAM on NIH boxes" in printed
    summary = json.loads((out / "external_summary.json").read_text())
    nih = summary["NIH ChestX-ray14"]
    # Only the outputs NIH annotates are scored; MIMIC shares CheXpert's labeler.
    assert "Fracture" not in nih["shared_labels"]
    assert nih["labels"]["Pleural Effusion"]["source"] == "Effusion"
    assert nih["chance_auroc"] == 0.5
    assert len(summary["MIMIC-CXR-JPG"]["shared_labels"]) > len(nih["shared_labels"])
    assert 0.0 < summary["nih_localization"]["chance"] < 1.0
    assert (out / "model.safetensors").is_file()
