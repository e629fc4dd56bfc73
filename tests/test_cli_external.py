"""``chexviz evaluate --dataset mimic|nih|chexpert``: external validation from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chexviz.cli import main
from chexviz.data.labels import CHEXPERT_LABELS
from chexviz.data.nih import read_nih_boxes
from chexviz.data.synthetic import make_synthetic_chexpert
from chexviz.data.synthetic_external import make_synthetic_mimic, make_synthetic_nih
from chexviz.evaluate.external import internal_metrics_metadata
from chexviz.evaluate.localization import chance_pointing_rate
from chexviz.models.classifier import MultiLabelClassifier
from chexviz.training.metrics import compute_metrics


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-external")
    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", image_size=32)
    internal = compute_metrics(
        np.tile(np.linspace(0.1, 0.9, 6)[:, None], (1, 14)),
        np.tile(np.array([[0], [0], [0], [1], [1], [1]], dtype=float), (1, 14)),
        0.5,
        CHEXPERT_LABELS,
    )
    return {
        "model": model.save(
            root / "model.safetensors", extra_metadata=internal_metrics_metadata(internal)
        ),
        "plain": model.save(root / "plain.safetensors"),
        "nih": make_synthetic_nih(root / "nih", patients=20, image_size=64),
        "mimic": make_synthetic_mimic(root / "mimic", patients=10),
        "chexpert": make_synthetic_chexpert(root / "chexpert", n_patients=6, seed=1),
    }


def _evaluate(folders: dict[str, Path], *args: str, model: str = "model") -> int:
    return main(
        ["evaluate", "--model", str(folders[model]), "--bootstrap", "20", "--no-progress", *args]
    )


def test_nih_prints_and_saves_shared_labels(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _evaluate(
        folders, "--dataset", "nih", "--data", str(folders["nih"]), "--split", "all",
        "--out", str(tmp_path), "--min-positives", "2", "--min-negatives", "2",
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "NIH ChestX-ray14, split all:" in printed
    assert "bootstrap replicates over patients" in printed
    assert "Mass | Nodule (union)" in printed
    assert "NIH labels never compared" in printed
    table = pd.read_csv(tmp_path / "external_metrics.csv", index_col="label")
    assert table.loc["Fracture", "source"] == "(not annotated)"
    assert np.isnan(table.loc["Fracture", "auroc"])
    assert (table["chance"] == 0.5).all()
    # The model file's internal AUROC (1.0 for the perfectly ordered scores) sits beside.
    assert table.loc["Pleural Effusion", "internal_auroc"] == 1.0
    summary = json.loads((tmp_path / "external_metrics.json").read_text())
    assert summary["dataset"] == "NIH ChestX-ray14, split all"
    assert summary["replicates"] <= 20
    shared = summary["shared_labels"]
    assert shared
    assert table.index[-1] == f"mean ({len(shared)} shared)"
    assert summary["internal_mean_auroc"] == 1.0


def test_mimic_official_test_split(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _evaluate(folders, "--dataset", "mimic", "--data", str(folders["mimic"])) == 0
    printed = capsys.readouterr().out
    assert "MIMIC-CXR-JPG, split test:" in printed
    assert "internal_auroc" in printed


def test_too_few_cases_are_named_with_their_counts(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ten patients: no label reaches the default 10 positive and 10 negative patients.
    code = _evaluate(
        folders, "--dataset", "mimic", "--data", str(folders["mimic"]), "--split", "all",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "too few cases, not scored and left out of the mean" in printed
    assert "at least 10 positive and 10 negative cases" in printed
    table = pd.read_csv(tmp_path / "external_metrics.csv", index_col="label")
    assert {"positives", "negatives", "patients", "status"} <= set(table.columns)
    edema = table.loc["Edema"]
    assert edema["status"] == "too few cases"
    assert np.isnan(edema["auroc"])
    assert edema["positives"] + edema["negatives"] == edema["images"]
    assert f"Edema ({edema['positives']} positive images of " in printed
    assert 0 < edema["patients"] <= 10
    summary = json.loads((tmp_path / "external_metrics.json").read_text())
    assert summary["too_few_cases"] == list(CHEXPERT_LABELS)
    assert summary["mean_auroc"] is None


def test_chexpert_and_a_model_without_internal_figures(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = _evaluate(
        folders, "--dataset", "chexpert", "--data", str(folders["chexpert"]), model="plain"
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "CheXpert valid.csv:" in printed
    assert "internal test AUROC: not in the model file" in printed


def test_errors_are_one_line(folders: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = _evaluate(
        folders, "--dataset", "chexpert", "--data", str(folders["chexpert"]), "--split", "test"
    )
    assert code == 1
    assert "--split for chexpert must be one of ['train', 'valid']" in capsys.readouterr().err
    code = _evaluate(folders, "--dataset", "nih", "--data", str(folders["mimic"]))
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("chexviz evaluate: error: ")
    assert "no NIH label table" in err
    assert len(err.strip().splitlines()) == 1
    code = _evaluate(folders, "--data", str(folders["chexpert"]), "--split", "valid")
    assert code == 1
    assert "--split needs --dataset" in capsys.readouterr().err


def test_explain_takes_dicom_files(folders: dict[str, Path], tmp_path: Path) -> None:
    from chexviz.data.dicom import write_dicom

    pixels = (np.add.outer(np.arange(40), np.arange(48)) * 40).astype(np.uint16)
    image = write_dicom(tmp_path / "chest.dcm", pixels, bits_stored=12, photometric="MONOCHROME1")
    out = tmp_path / "explained"
    code = main(
        ["explain", str(image), "--model", str(folders["model"]), "--out", str(out),
         "--classes", "Edema", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    assert (out / "000_chest.png").stat().st_size > 0
    assert "chest.dcm" in (out / "report.html").read_text()


def test_localize_scores_gradcam_on_nih_boxes_beside_chance_and_a_cross_fitted_prior(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nih = folders["nih"]
    # The default frame, 1024: the synthetic boxes are drawn on it, as NIH's are, and each is
    # scaled to its 64-pixel image read from the file.
    code = main(
        [
            "localize", "--model", str(folders["model"]), "--data", str(nih),
            "--nih-boxes", str(nih / "BBox_List_2017.csv"),
            "--out", str(tmp_path / "loc"), "--no-progress", "--min-positives", "1",
        ]
    )  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "4 boxes drawn on 1024x1024 images, scaled to the images' own sizes: 64x64" in (
        printed.out
    )
    assert "left out 1 of 4 boxes (no CheXpert counterpart): Infiltration 1" in printed.out
    # Each finding's chance is the share of the model's 32x32 image its box covers there.
    boxes = read_nih_boxes(nih / "BBox_List_2017.csv", root=nih)
    scored = pd.read_csv(tmp_path / "loc" / "localization.csv")
    assert len(scored) == 3
    for row in scored.itertuples():
        box = boxes[(boxes["Path"] == row.Path) & (boxes["label"] == row.label)]
        assert row.chance == pytest.approx(chance_pointing_rate(box, 32)), row.Path
    summary = pd.read_csv(tmp_path / "loc" / "localization_summary.csv", index_col=0)
    overall = summary.loc["overall"]
    assert overall["findings"] > 0
    for column in ("hit_rate", "chance", "iou"):
        assert 0.0 <= overall[column] <= 1.0, column
    # The prior of a label exists only where the other half has boxes of it (NaN otherwise).
    for column in ("prior_hit_rate", "prior_iou"):
        assert summary[column].dropna().between(0.0, 1.0).all(), column
    scores = pd.read_csv(tmp_path / "loc" / "localization.csv")
    assert set(scores["fold"]) == {0, 1}  # each half scored with the other half's prior
    assert "prior_hit_rate" in printed.out
    assert {"status", "patients"} <= set(summary.columns)
    assert (summary.drop(index="overall")["status"] == "scored").all()
    assert (summary["patients"] <= summary["findings"]).all()
    # Twenty patients: boxed findings per label are fewer than the default minimum of ten.
    code = main(
        [
            "localize", "--model", str(folders["model"]), "--data", str(nih),
            "--nih-boxes", str(nih / "BBox_List_2017.csv"),
            "--out", str(tmp_path / "few"), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    few = pd.read_csv(tmp_path / "few" / "localization_summary.csv", index_col=0)
    assert (few.drop(index="overall")["status"] == "too few cases").all()
    assert few["hit_rate"].isna().all()
    assert "too few cases, not scored and left out of the mean" in printed
    assert "at least 10 positive cases" in printed
    assert "explained of" in printed
