"""The synthetic MIMIC-CXR-JPG and NIH ChestX-ray14 layouts carry the real quirks."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from PIL import Image

from chexviz.data.labels import CHEXPERT_LABELS
from chexviz.data.mimic import MIMICCXRDataset
from chexviz.data.nih import NIHChestXray14Dataset, read_nih_boxes
from chexviz.data.synthetic_external import make_synthetic_mimic, make_synthetic_nih


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_mimic_layout_and_quirks(tmp_path: Path) -> None:
    root = make_synthetic_mimic(tmp_path / "a", patients=8, seed=4)
    assert _digest(root) == _digest(make_synthetic_mimic(tmp_path / "b", patients=8, seed=4))
    with gzip.open(root / "mimic-cxr-2.0.0-chexpert.csv.gz", "rt") as handle:
        header = handle.readline().strip().split(",")
    # subject_id, study_id, then the 14 observations in alphabetical order.
    assert header == ["subject_id", "study_id", *sorted(CHEXPERT_LABELS)]
    metadata = pd.read_csv(
        root / "mimic-cxr-2.0.0-metadata.csv.gz", dtype=str, keep_default_na=False
    )
    views = set(metadata["ViewPosition"])
    assert {"LATERAL", ""} <= views
    assert views <= {"PA", "AP", "LATERAL", "LL", ""}
    labels = pd.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", dtype=str)
    # One study has images but no label row.
    studies = set(metadata["study_id"])
    assert len(studies - set(labels["study_id"])) == 1
    for row in metadata.itertuples():
        path = (
            root
            / f"files/p{row.subject_id[:2]}/p{row.subject_id}/s{row.study_id}/{row.dicom_id}.jpg"
        )
        assert path.is_file()
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz", dtype=str)
    assert set(split["split"]) == {"train", "validate", "test"}
    # The split is by patient.
    assert split.groupby("subject_id")["split"].nunique().max() == 1
    with pytest.raises(FileExistsError):
        make_synthetic_mimic(root)


def test_mimic_dicom_files_cover_the_hospital_cases(tmp_path: Path) -> None:
    root = make_synthetic_mimic(tmp_path / "d", patients=5, seed=1, image_format="dcm")
    files = sorted(root.glob("files/**/*.dcm"))
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    assert {h.PhotometricInterpretation for h in headers} == {"MONOCHROME1", "MONOCHROME2"}
    assert {int(h.BitsStored) for h in headers} == {8, 12}
    assert {str(h.file_meta.TransferSyntaxUID) for h in headers} == {
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.90",
    }
    assert any("WindowCenter" in h for h in headers)
    data = MIMICCXRDataset(root, image_size=16, image_suffix=".dcm", views=None)
    # Whatever the storage, images look alike: dark air at the edges, a bright body.
    for index in range(len(data)):
        image = data[index][0][0]
        assert float(image[:, :2].mean()) < float(image[6:10, 6:10].mean())


@pytest.mark.parametrize(("layout", "entry_file"), [("nih", "v2020"), ("kaggle", "2017")])
def test_nih_layout_and_quirks(tmp_path: Path, layout: str, entry_file: str) -> None:
    root = make_synthetic_nih(
        tmp_path / "n",
        patients=12,
        seed=3,
        image_size=64,
        layout=layout,
        entry_file=entry_file,  # type: ignore[arg-type]
    )
    name = "Data_Entry_2017_v2020.csv" if entry_file == "v2020" else "Data_Entry_2017.csv"
    lines = (root / name).read_text().splitlines()
    assert lines[0].startswith("Image Index,Finding Labels,Follow-up #,Patient ID")
    assert "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]" in lines[0]
    # 9 names over 11 cells; the 2017 file ends every line with a comma.
    cells = 12 if entry_file == "2017" else 11
    assert {line.count(",") + 1 for line in lines} == {cells}
    assert all(line.endswith(",") == (entry_file == "2017") for line in lines)
    images = sorted(root.glob("images/*.png" if layout == "nih" else "images_*/images/*.png"))
    assert len(images) == len(lines) - 1
    assert {Image.open(path).mode for path in images} == {"L", "RGBA"}
    box_lines = (root / "BBox_List_2017.csv").read_text().splitlines()
    assert box_lines[0] == "Image Index,Finding Label,Bbox [x,y,w,h],,,"
    test = set((root / "test_list.txt").read_text().split())
    train = set((root / "train_val_list.txt").read_text().split())
    assert not test & train
    assert len(test | train) == len(images)
    data = NIHChestXray14Dataset(root, image_size=16)
    counts = pd.Series(data.patient_ids).value_counts()
    assert counts.iloc[0] >= 2 * counts.median()  # heavy-tailed follow-ups


def test_nih_boxes_sit_on_drawn_signs(tmp_path: Path) -> None:
    root = make_synthetic_nih(tmp_path / "n", patients=30, seed=0, image_size=128)
    # As in the release, the file's boxes are in the 1024x1024 frame whatever the PNGs' size.
    drawn = read_nih_boxes(root / "BBox_List_2017.csv")
    assert drawn["x1"].max() > 128
    assert (drawn[["x1", "y1"]] <= 1024).all().all()
    boxes = read_nih_boxes(root / "BBox_List_2017.csv", root=root)
    test = set((root / "test_list.txt").read_text().split())
    assert set(boxes["Path"]) <= test
    boxed = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule"]
    assert boxes["nih_label"].isin([*boxed, "Pneumonia", "Pneumothorax"]).all()
    assert (boxes["width"] == 128).all()
    assert boxes[["x0", "y0", "x1", "y1"]].to_numpy() == pytest.approx(
        drawn[["x0", "y0", "x1", "y1"]].to_numpy() / 8
    )
    table = NIHChestXray14Dataset(root, image_size=16, split="test").frame.set_index("Path")
    for row in boxes.itertuples():
        # A box only where the table says the finding is present.
        assert row.nih_label in table.loc[row.Path, "Finding Labels"].split("|")
        assert 0 <= row.x0 < row.x1 <= 128
        assert 0 <= row.y0 < row.y1 <= 128


def test_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="patients"):
        make_synthetic_nih(tmp_path / "x", patients=2)
    with pytest.raises(ValueError, match="layout"):
        make_synthetic_nih(tmp_path / "x", layout="flat")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image_format"):
        make_synthetic_mimic(tmp_path / "x", image_format="png")  # type: ignore[arg-type]
