"""MIMICCXRDataset: the release's tables and layout, study-level labels, bad input."""

from __future__ import annotations

import csv
import gzip
import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from chexviz.data.labels import CHEXPERT_LABELS, LabelValueError, MissingColumnsError
from chexviz.data.mimic import MIMICCXRDataset
from chexviz.data.splits import split_by_patient
from chexviz.data.synthetic_external import make_synthetic_mimic

SIZE = 8
ALPHABETICAL = sorted(CHEXPERT_LABELS)
# (dicom_id, subject_id, study_id, ViewPosition, split)
IMAGES = [
    ("aaaa0001-00000001", "10000032", "50414267", "PA", "train"),
    ("aaaa0002-00000002", "10000032", "50414267", "LATERAL", "train"),
    ("aaaa0003-00000003", "10000032", "53189527", "AP", "train"),
    ("aaaa0004-00000004", "11000011", "56699142", "", "test"),
    ("aaaa0005-00000005", "11000011", "56699142", "AP", "test"),
    ("aaaa0006-00000006", "12000099", "57375967", "PA", "validate"),
    ("aaaa0007-00000007", "12000099", "59000001", "PA", "validate"),
]
# Study-level cells, CheXpert column order; the last study has no label row.
STUDIES = {
    ("10000032", "50414267"): {"Cardiomegaly": "1.0", "Edema": "-1.0"},
    ("10000032", "53189527"): {"No Finding": "1.0"},
    ("11000011", "56699142"): {"Pleural Effusion": "1.0", "Edema": "0.0"},
    ("12000099", "57375967"): {"Atelectasis": "-1.0"},
}


def _gz(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        handle.write(buffer.getvalue())


def _write(root: Path, *, suffix: str = ".jpg", plain: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    end = "" if plain else ".gz"
    metadata = [[d, s, t, "CHEST", v, "3056", "2544"] for d, s, t, v, _ in IMAGES]
    header = ["dicom_id", "subject_id", "study_id", "Procedure", "ViewPosition", "Rows", "Columns"]
    labels = [
        [s, t, *(cells.get(label, "") for label in ALPHABETICAL)]
        for (s, t), cells in STUDIES.items()
    ]
    split = [[d, t, s, p] for d, s, t, _, p in IMAGES]
    tables = {
        "metadata": (header, metadata),
        "chexpert": (["subject_id", "study_id", *ALPHABETICAL], labels),
        "negbio": (["subject_id", "study_id", *ALPHABETICAL], [r[:2] + [""] * 14 for r in labels]),
        "split": (["dicom_id", "study_id", "subject_id", "split"], split),
    }
    for role, (columns, rows) in tables.items():
        path = root / f"mimic-cxr-2.0.0-{role}.csv{end}"
        if plain:
            with path.open("w", newline="") as handle:
                csv.writer(handle, lineterminator="\n").writerows([columns, *rows])
        else:
            _gz(path, columns, rows)
    for number, (dicom, subject, study, _, _) in enumerate(IMAGES):
        image = root / f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}{suffix}"
        image.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.full((10, 12), 30 * number, dtype=np.uint8)
        if suffix == ".jpg":
            Image.fromarray(pixels).save(image, quality=95)
        else:
            from chexviz.data.dicom import write_dicom

            write_dicom(image, pixels)
    return root


def _rewrite(path: Path, edit: object) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = edit(frame)  # type: ignore[operator]
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        handle.write(frame.to_csv(index=False, lineterminator="\n"))


def test_frontal_images_with_their_study_labels(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        data = MIMICCXRDataset(_write(tmp_path), image_size=SIZE, uncertainty="ignore")
    # PA/AP only: the lateral and the blank view are out; the last study has no label row.
    assert data.frame["dicom_id"].tolist() == [IMAGES[i][0] for i in (0, 2, 4, 5)]
    assert data.frame.index.tolist() == [0, 2, 4, 5]  # metadata lines - 2
    assert data.unlabeled["dicom_id"].tolist() == [IMAGES[6][0]]
    assert "1 of 5 images belong to studies without a row" in caplog.text
    assert data.labels == CHEXPERT_LABELS
    assert data.patient_ids == ["p10000032", "p10000032", "p11000011", "p12000099"]
    assert data.frame["Path"].iloc[0] == f"files/p10/p10000032/s50414267/{IMAGES[0][0]}.jpg"
    assert data.paths[0] == (tmp_path / data.frame["Path"].iloc[0]).resolve()
    column = {label: j for j, label in enumerate(CHEXPERT_LABELS)}
    assert data.targets[0, column["Cardiomegaly"]] == 1.0
    assert np.isnan(data.targets[0, column["Edema"]])  # uncertain, ignored
    assert data.targets[0, column["Atelectasis"]] == 0.0  # blank -> zeros
    assert data.targets[1, column["No Finding"]] == 1.0
    image, target = data[2]
    assert image.shape == (1, SIZE, SIZE)
    assert target[column["Pleural Effusion"]] == 1.0


def test_study_labels_reach_every_image_of_the_study(tmp_path: Path) -> None:
    data = MIMICCXRDataset(_write(tmp_path), image_size=SIZE, views=None)
    # Views None: lateral and blank views too; images of one study share their targets.
    same_study = data.frame.groupby("study_id").indices
    for positions in same_study.values():
        for position in positions[1:]:
            np.testing.assert_array_equal(data.targets[position], data.targets[positions[0]])
    assert set(data.frame["ViewPosition"].fillna("")) == {"PA", "LATERAL", "AP", ""}


def test_policies_labeler_and_split(tmp_path: Path) -> None:
    root = _write(tmp_path)
    ones = MIMICCXRDataset(root, image_size=SIZE, uncertainty={"Edema": "ones"}, blank="ignore")
    column = {label: j for j, label in enumerate(CHEXPERT_LABELS)}
    assert ones.targets[0, column["Edema"]] == 1.0
    assert np.isnan(ones.targets[0, column["Atelectasis"]])
    negbio = MIMICCXRDataset(root, image_size=SIZE, labeler="negbio", blank="ignore")
    assert negbio.labels_path.name == "mimic-cxr-2.0.0-negbio.csv.gz"
    assert np.isnan(negbio.targets).all()
    test = MIMICCXRDataset(root, image_size=SIZE, split="test")
    assert test.frame["dicom_id"].tolist() == [IMAGES[4][0]]
    assert test.frame["split"].tolist() == ["test"]
    subset = MIMICCXRDataset(root, image_size=SIZE, labels=("Pleural Effusion", "Edema"))
    assert subset.targets.shape == (4, 2)


def test_uncompressed_tables_and_dicom_files(tmp_path: Path) -> None:
    data = MIMICCXRDataset(
        _write(tmp_path, suffix=".dcm", plain=True), image_size=SIZE, image_suffix=".dcm"
    )
    assert data.csv_path.name == "mimic-cxr-2.0.0-metadata.csv"
    assert data.paths[0].suffix == ".dcm"
    assert data[0][0].shape == (1, SIZE, SIZE)


def test_cache_and_patient_split(tmp_path: Path) -> None:
    root = _write(tmp_path)
    lazy = MIMICCXRDataset(root, image_size=SIZE)
    cached = MIMICCXRDataset(root, image_size=SIZE, cache_dir=tmp_path / "cache")
    for index in range(len(lazy)):
        assert torch.equal(lazy[index][0], cached[index][0])
    first, second = split_by_patient(lazy, (0.5, 0.5), seed=0)
    assert not {lazy.patient_ids[i] for i in first.indices} & {
        lazy.patient_ids[i] for i in second.indices
    }


@pytest.mark.parametrize(
    ("table", "edit", "error", "message"),
    [
        (
            "metadata",
            lambda f: f.assign(subject_id=f["subject_id"].where(f.index != 2, "x1")),
            ValueError,
            r"metadata\.csv\.gz line 4, column 'subject_id': 'x1'",
        ),
        (
            "metadata",
            lambda f: f.assign(dicom_id=f["dicom_id"].where(f.index != 0, "../../x")),
            ValueError,
            r"line 2, column 'dicom_id': '../../x' is not a plain file name",
        ),
        (
            "metadata",
            lambda f: f.drop(columns=["ViewPosition"]),
            MissingColumnsError,
            r"\['ViewPosition'\]",
        ),
        (
            "chexpert",
            lambda f: f.assign(Edema=f["Edema"].where(f.index != 1, "2.0")),
            LabelValueError,
            r"chexpert\.csv\.gz line 3, column 'Edema': invalid label value '2.0'",
        ),
        (
            "chexpert",
            lambda f: pd.concat([f, f.iloc[[0]]]),
            ValueError,
            r"chexpert\.csv\.gz line 6: study '10000032/50414267' .* labelled twice",
        ),
        (
            "chexpert",
            lambda f: f.drop(columns=["Fracture"]),
            MissingColumnsError,
            r"\['Fracture'\]",
        ),
    ],
)
def test_bad_tables_name_the_file_line_and_column(
    tmp_path: Path, table: str, edit: object, error: type[Exception], message: str
) -> None:
    root = _write(tmp_path)
    _rewrite(root / f"mimic-cxr-2.0.0-{table}.csv.gz", edit)
    with pytest.raises(error, match=message):
        MIMICCXRDataset(root, image_size=SIZE)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda f: f.assign(split=f["split"].where(f.index != 3, "valid")),
            r"split\.csv\.gz line 5, column 'split': 'valid'",
        ),
        (
            lambda f: f[f.index != 4],
            r"metadata\.csv\.gz line 6: image 'aaaa0005-00000005' has no row in",
        ),
        (
            lambda f: pd.concat([f, f.iloc[[0]]]),
            r"split\.csv\.gz line 9, column 'dicom_id'.*has a split row already",
        ),
        (
            lambda f: f.assign(subject_id=f["subject_id"].where(f.index != 0, "19999999")),
            r"belongs to subject '10000032' but .* names subject '19999999'",
        ),
    ],
)
def test_bad_split_tables(tmp_path: Path, edit: object, message: str) -> None:
    root = _write(tmp_path)
    _rewrite(root / "mimic-cxr-2.0.0-split.csv.gz", edit)
    with pytest.raises(ValueError, match=message):
        MIMICCXRDataset(root, image_size=SIZE, split="test")


def test_missing_tables_images_and_bad_arguments(tmp_path: Path) -> None:
    root = _write(tmp_path)
    with pytest.raises(ValueError, match="image_suffix"):
        MIMICCXRDataset(root, image_suffix=".png")
    with pytest.raises(ValueError, match="split must be one of"):
        MIMICCXRDataset(root, split="valid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labeler"):
        MIMICCXRDataset(root, labeler="chexbert")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"no image with a ViewPosition in \['LL'\]"):
        MIMICCXRDataset(root, views=("LL",))
    next(root.glob("files/**/aaaa0003-00000003.jpg")).unlink()
    with pytest.raises(FileNotFoundError, match=r"metadata\.csv\.gz line 4"):
        MIMICCXRDataset(root, image_size=SIZE)
    assert len(MIMICCXRDataset(root, image_size=SIZE, on_error="skip")) == 3
    (root / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match="metadata table"):
        MIMICCXRDataset(root)
    (root / "mimic-cxr-2.0.0-metadata.csv.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(ValueError, match="gzip"):
        MIMICCXRDataset(root)


def test_synthetic_layout_reads(tmp_path: Path) -> None:
    root = make_synthetic_mimic(tmp_path / "mimic", patients=6, seed=2)
    everything = MIMICCXRDataset(root, image_size=SIZE, views=None)
    frontal = MIMICCXRDataset(root, image_size=SIZE)
    assert 0 < len(frontal) < len(everything)
    assert len(everything.unlabeled) > 0
    by_split = [
        len(MIMICCXRDataset(root, image_size=SIZE, split=s, views=None))
        for s in ("train", "validate", "test")
    ]
    assert sum(by_split) == len(everything)
