"""NIHChestXray14Dataset and read_nih_boxes: the release's quirks, bad input, the scorer."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from chexviz.data.boxes import BOX_COLUMNS, scale_boxes
from chexviz.data.images import ImageDecodeError
from chexviz.data.label_mapping import NIH_LABELS
from chexviz.data.labels import CHEXPERT_LABELS, MissingColumnsError
from chexviz.data.nih import NIHChestXray14Dataset, read_nih_boxes, read_nih_table
from chexviz.data.splits import split_by_patient
from chexviz.data.synthetic_external import make_synthetic_nih

SIZE = 8
# The real header: two names hold a comma, so they span two cells each.
HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
ROWS = [
    ("00000001_000.png", "Cardiomegaly", 0, 1, "PA"),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 1, "PA"),
    ("00000001_002.png", "Cardiomegaly|Effusion", 2, 1, "AP"),
    ("00000002_000.png", "No Finding", 0, 2, "PA"),
    ("00000003_000.png", "Mass|Nodule|Infiltration", 0, 3, "AP"),
    ("00000004_000.png", "Pleural_Thickening", 0, 4, "PA"),
]


def _line(row: tuple[str, str, int, int, str], end: str = "") -> str:
    name, findings, follow_up, patient, view = row
    return f"{name},{findings},{follow_up},{patient},58,M,{view},2682,2749,0.143,0.143{end}"


def _write(
    root: Path,
    rows: list[tuple[str, str, int, int, str]] = ROWS,
    *,
    version: str = "v2020",
    folder: str = "images",
    lines: list[str] | None = None,
) -> Path:
    """A tiny NIH folder: the label table as written by NIH, and one PNG per row."""
    root.mkdir(parents=True, exist_ok=True)
    end = "," if version == "2017" else ""
    text = [HEADER + end, *(lines if lines is not None else [_line(r, end) for r in rows])]
    name = "Data_Entry_2017.csv" if version == "2017" else "Data_Entry_2017_v2020.csv"
    (root / name).write_text("\n".join(text) + "\n")
    for number, row in enumerate(rows):
        path = root / folder / row[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((12, 12), 20 * number, dtype=np.uint8)).save(path)
    return root


@pytest.mark.parametrize("version", ["v2020", "2017"])
def test_both_table_versions_read_with_their_spanning_columns(tmp_path: Path, version: str) -> None:
    data = NIHChestXray14Dataset(_write(tmp_path, version=version), image_size=SIZE)
    assert len(data) == len(ROWS)
    assert data.csv_path.name.startswith("Data_Entry_2017")
    for column in (
        "OriginalImage[Width]",
        "OriginalImage[Height]",
        "OriginalImagePixelSpacing[x]",
        "OriginalImagePixelSpacing[y]",
    ):
        assert column in data.frame.columns
    assert data.frame["OriginalImage[Height]"].iloc[0] == "2749"
    assert not any(column.startswith("Unnamed") for column in data.frame.columns)
    assert data.frame["Path"].tolist() == [row[0] for row in ROWS]
    assert data.patient_ids == ["00000001"] * 3 + ["00000002", "00000003", "00000004"]
    assert data.labels == NIH_LABELS
    image, target = data[2]
    assert image.shape == (1, SIZE, SIZE)
    expected = np.zeros(14, dtype=np.float32)
    expected[[NIH_LABELS.index("Cardiomegaly"), NIH_LABELS.index("Effusion")]] = 1
    np.testing.assert_array_equal(target.numpy(), expected)
    assert float(data.targets[3].sum()) == 0.0  # No Finding


def test_newest_table_is_preferred_and_any_can_be_named(tmp_path: Path) -> None:
    _write(tmp_path, version="2017")
    _write(tmp_path, ROWS[:2], version="v2020")
    assert len(NIHChestXray14Dataset(tmp_path, image_size=SIZE)) == 2
    assert len(NIHChestXray14Dataset(tmp_path, "Data_Entry_2017.csv", image_size=SIZE)) == 6


def test_quoted_spanning_header_is_expanded_too(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text('a,"Span[x,y]",b\n1,2,3,4\n')
    frame = read_nih_table(table, ["a", "Span[x]", "Span[y]", "b"])
    assert frame.iloc[0].tolist() == ["1", "2", "3", "4"]


def test_kaggle_layout_and_rgba_images(tmp_path: Path) -> None:
    root = _write(tmp_path, folder="images_001/images")
    rgba = root / "images_001/images" / ROWS[0][0]
    Image.fromarray(np.full((12, 12, 4), 200, dtype=np.uint8), mode="RGBA").save(rgba)
    data = NIHChestXray14Dataset(root, image_size=SIZE)
    assert data.paths[0] == (root / "images_001/images" / ROWS[0][0]).resolve()
    # RGBA with opaque alpha reads as its grey level, like an L image.
    assert torch.allclose(data[0][0], torch.full((1, SIZE, SIZE), 200 / 255))


def test_an_image_in_two_folders_is_ambiguous(tmp_path: Path) -> None:
    root = _write(tmp_path)
    (root / "images_002/images").mkdir(parents=True)
    (root / "images_002/images" / ROWS[1][0]).write_bytes(
        (root / "images" / ROWS[1][0]).read_bytes()
    )
    with pytest.raises(ValueError, match=r"00000001_001\.png is in two folders"):
        NIHChestXray14Dataset(root, image_size=SIZE)


def test_chexpert_labels_are_mapped_and_unannotated_ones_nan(tmp_path: Path) -> None:
    data = NIHChestXray14Dataset(_write(tmp_path), image_size=SIZE, labels=CHEXPERT_LABELS)
    assert data.unannotated == (
        "No Finding",
        "Enlarged Cardiomediastinum",
        "Lung Opacity",
        "Pleural Other",
        "Fracture",
        "Support Devices",
    )
    column = {label: j for j, label in enumerate(CHEXPERT_LABELS)}
    for label in data.unannotated:
        assert np.isnan(data.targets[:, column[label]]).all()
    assert data.targets[2, column["Pleural Effusion"]] == 1.0
    assert data.targets[4, column["Lung Lesion"]] == 1.0  # Mass | Nodule
    assert data.targets[3, column["Cardiomegaly"]] == 0.0
    assert data.label_sources["Pleural Effusion"] == "Effusion"
    assert data.label_sources["Lung Lesion"] == "Mass | Nodule (union)"
    assert data.label_sources["Fracture"] == ""
    mixed = NIHChestXray14Dataset(tmp_path, image_size=SIZE, labels=("Effusion", "Pleural Other"))
    np.testing.assert_array_equal(mixed.targets[:, 0], [0, 0, 1, 0, 0, 0])


def test_official_split_and_views(tmp_path: Path) -> None:
    root = _write(tmp_path)
    (root / "train_val_list.txt").write_text("\n".join(row[0] for row in ROWS[:4]) + "\n")
    (root / "test_list.txt").write_text("\n".join(row[0] for row in ROWS[4:]) + "\n\n")
    test = NIHChestXray14Dataset(root, image_size=SIZE, split="test")
    assert test.frame["Path"].tolist() == [ROWS[4][0], ROWS[5][0]]
    train = NIHChestXray14Dataset(root, image_size=SIZE, split="train_val", views=("PA",))
    assert train.frame["View Position"].tolist() == ["PA", "PA", "PA"]
    # The index keeps the table line: row i is on line i + 2.
    assert train.frame.index.tolist() == [0, 1, 3]
    with pytest.raises(ValueError, match="split must be one of"):
        NIHChestXray14Dataset(root, image_size=SIZE, split="validation")  # type: ignore[arg-type]
    (root / "test_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="split list for 'test'"):
        NIHChestXray14Dataset(root, image_size=SIZE, split="test")
    with pytest.raises(ValueError, match=r"views \['LATERAL'\] are not NIH view positions"):
        NIHChestXray14Dataset(root, image_size=SIZE, views=("LATERAL",))


@pytest.mark.parametrize(
    ("line", "error", "message"),
    [
        (
            _line(("00000005_000.png", "Efusion", 0, 5, "PA")),
            ValueError,
            r"line 8, column 'Finding Labels': unknown finding 'Efusion'",
        ),
        (
            _line(("00000005_000.png", "No Finding|Mass", 0, 5, "PA")),
            ValueError,
            r"'No Finding' stands alone",
        ),
        (
            _line(("00000005_000.png", "", 0, 5, "PA")),
            ValueError,
            r"line 8, column 'Finding Labels'",
        ),
        (
            _line(("00000005_000.png", "Mass", 0, 5, "LL")),
            ValueError,
            r"line 8, column 'View Position': 'LL'",
        ),
        (
            _line(("../../etc/passwd", "Mass", 0, 5, "PA")),
            ValueError,
            r"line 8, column 'Image Index'.*not a plain image file name",
        ),
        (_line(("images/x.png", "Mass", 0, 5, "PA")), ValueError, r"column 'Image Index'"),
        (
            _line(("00000005_000.png", "Mass", 0, "P5", "PA")),
            ValueError,
            r"line 8, column 'Patient ID': 'P5'",
        ),
        (
            "00000005_000.png,Mass,0,5,58,M,PA,2682",
            ValueError,
            r"line 8: 8 cells but the header has 11",
        ),
        (
            _line(("00000005_000.png", "Mass", 0, 5, "PA"), ",surplus"),
            ValueError,
            r"line 8: 12 cells",
        ),
        (HEADER, ValueError, r"line 8: the header row appears again"),
    ],
)
def test_bad_rows_name_the_line_and_column(
    tmp_path: Path, line: str, error: type[Exception], message: str
) -> None:
    root = _write(tmp_path, lines=[*(_line(r) for r in ROWS), line])
    with pytest.raises(error, match=message):
        NIHChestXray14Dataset(root, image_size=SIZE)


def test_missing_columns_and_tables(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no NIH label table"):
        NIHChestXray14Dataset(tmp_path, image_size=SIZE)
    (tmp_path / "Data_Entry_2017.csv").write_text("Image Index,Labels\nx.png,Mass\n")
    with pytest.raises(
        MissingColumnsError, match=r"\['Finding Labels', 'Patient ID', 'View Position'\]"
    ):
        NIHChestXray14Dataset(tmp_path, image_size=SIZE)
    (tmp_path / "Data_Entry_2017.csv").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        NIHChestXray14Dataset(tmp_path, image_size=SIZE)
    (tmp_path / "Data_Entry_2017.csv").write_text("A[x,y\n1,2\n")
    with pytest.raises(ValueError, match="never closed"):
        NIHChestXray14Dataset(tmp_path, image_size=SIZE)


def test_unknown_label_asked_for(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown label 'Nodules'"):
        NIHChestXray14Dataset(_write(tmp_path), image_size=SIZE, labels=("Nodules",))


def test_missing_and_corrupt_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _write(tmp_path)
    (root / "images" / ROWS[1][0]).unlink()
    (root / "images" / ROWS[3][0]).write_bytes(b"not a png")
    with pytest.raises(FileNotFoundError, match=r"Data_Entry_2017_v2020\.csv line 3") as caught:
        NIHChestXray14Dataset(root, image_size=SIZE)
    assert caught.value.filename == str((root / "images" / ROWS[1][0]).resolve())
    with caplog.at_level(logging.WARNING):
        data = NIHChestXray14Dataset(root, image_size=SIZE, on_error="skip")
    assert data.num_skipped == 2
    assert len(data) == 4
    assert "skipped 2 of 6 rows" in caplog.text
    Image.fromarray(np.zeros((12, 12), dtype=np.uint8)).save(root / "images" / ROWS[1][0])
    with pytest.raises(ImageDecodeError, match="line 5"):
        NIHChestXray14Dataset(root, image_size=SIZE, cache_dir=tmp_path / "cache", on_error="raise")


def test_cache_matches_lazy_reading(tmp_path: Path) -> None:
    root = _write(tmp_path)
    lazy = NIHChestXray14Dataset(root, image_size=SIZE)
    cached = NIHChestXray14Dataset(root, image_size=SIZE, cache_dir=tmp_path / "cache")
    assert cached.cache is not None
    for index in range(len(lazy)):
        assert torch.equal(lazy[index][0], cached[index][0])
        assert torch.equal(lazy[index][1], cached[index][1])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_nih(tmp_path_factory.mktemp("nih") / "root", patients=24, image_size=96)


def test_patient_split_on_heavy_tailed_follow_ups(synthetic: Path) -> None:
    data = NIHChestXray14Dataset(synthetic, image_size=SIZE)
    counts = pd.Series(data.patient_ids).value_counts()
    assert counts.iloc[0] >= len(data) // 10  # a patient with many follow-up images
    splits = split_by_patient(data, (0.6, 0.2, 0.2), seed=1)
    patients = [{data.patient_ids[i] for i in split.indices} for split in splits]
    assert all(patients)
    assert not patients[0] & patients[1]
    assert not patients[0] & patients[2]
    assert not patients[1] & patients[2]
    assert sum(splits.sizes) == len(data)


# The real BBox_List_2017.csv: one header name spans x, y, w, h, then three empty header
# cells; rows hold six cells (some copies end them with the three empty cells too).
BOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
# One box of each of the eight boxed findings, as the release spells them.
BOX_ROWS = [
    "00000003_000.png,Mass,100.5,200.25,50,60",
    "00000003_000.png,Nodule,10,20,30,40",
    "00000001_002.png,Effusion,700,500,300,400,,,",
    "00000003_000.png,Infiltrate,1,2,3,4",
    "00000001_000.png,Atelectasis,225.084745762712,547.019216763771,86.7796610169491,79.18",
    "00000001_001.png,Cardiomegaly,300,400,500,300",
    "00000002_000.png,Pneumonia,600,100,200,300",
    "00000004_000.png,Pneumothorax,0,0,1024,1024",
]


def test_every_box_is_read_with_its_finding_and_chexpert_label(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "BBox_List_2017.csv"
    path.write_text(BOX_HEADER + "\n" + "\n".join(BOX_ROWS) + "\n")
    with caplog.at_level(logging.INFO):
        boxes = read_nih_boxes(path)
    assert len(boxes) == len(BOX_ROWS)  # the Infiltrate box too
    assert "1 of 8 boxes are of findings with no CheXpert counterpart" in caplog.text
    assert list(boxes.columns) == [*BOX_COLUMNS, "nih_label"]
    assert boxes["nih_label"].tolist() == [
        "Mass", "Nodule", "Effusion", "Infiltration", "Atelectasis", "Cardiomegaly",
        "Pneumonia", "Pneumothorax",
    ]  # fmt: skip
    assert boxes["label"].tolist() == [
        "Lung Lesion", "Lung Lesion", "Pleural Effusion", "", "Atelectasis", "Cardiomegaly",
        "Pneumonia", "Pneumothorax",
    ]  # fmt: skip
    first = boxes.iloc[0]
    assert (first["x0"], first["y0"], first["x1"], first["y1"]) == (100.5, 200.25, 150.5, 260.25)
    assert (boxes["width"] == 1024).all()
    assert (boxes["height"] == 1024).all()
    scaled = scale_boxes(boxes[boxes["label"] != ""], 128)
    assert scaled["x1"].iloc[2] == pytest.approx(1000 / 8)


def test_boxes_are_scaled_to_each_image_files_size(tmp_path: Path) -> None:
    # A downsampled copy of the release: 12-pixel PNGs (one 256x128), boxes drawn on 1024.
    _write(tmp_path, ROWS)
    side = 12
    Image.new("L", (256, 128)).save(tmp_path / "images" / "00000001_002.png")
    path = tmp_path / "BBox_List_2017.csv"
    path.write_text(BOX_HEADER + "\n" + "\n".join(BOX_ROWS) + "\n")
    boxes = read_nih_boxes(path, root=tmp_path).set_index("nih_label")
    mass = boxes.loc["Mass"]
    assert (mass["width"], mass["height"]) == (side, side)
    assert (mass["x0"], mass["y0"], mass["x1"], mass["y1"]) == pytest.approx(
        (100.5 * side / 1024, 200.25 * side / 1024, 150.5 * side / 1024, 260.25 * side / 1024)
    )
    effusion = boxes.loc["Effusion"]
    assert (effusion["width"], effusion["height"]) == (256, 128)
    assert (effusion["x0"], effusion["y0"], effusion["x1"], effusion["y1"]) == (
        175.0, 62.5, 250.0, 112.5
    )  # fmt: skip
    # Boxes drawn on another frame are read with drawn_on=.
    small = tmp_path / "small.csv"
    small.write_text(BOX_HEADER + "\n00000002_000.png,Pneumonia,2,2,4,4\n")
    box = read_nih_boxes(small, drawn_on=(6, 6), root=tmp_path).iloc[0]
    assert (box["x0"], box["x1"], box["width"]) == (4, 12, side)


def test_a_box_outside_the_frame_it_is_drawn_on_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "BBox_List_2017.csv"
    path.write_text(BOX_HEADER + "\n00000001_000.png,Mass,1,2,3,4\nx.png,Mass,200,10,100,20\n")
    with pytest.raises(ValueError, match=rf"{path.name} line 3, column 'Bbox\[w\]'.*256x256"):
        read_nih_boxes(path, drawn_on=(256, 256))
    with pytest.raises(ValueError, match="drawn_on must be"):
        read_nih_boxes(path, drawn_on=(0, 256))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("x.png,Mass,a,2,3,4", r"line 2, column 'Bbox\[x\]': expected a number, got 'a'"),
        ("x.png,Mass,1,2,0,4", r"line 2, column 'Bbox\[w\]': the box is empty"),
        ("x.png,Mass,1000,2,30,4", r"line 2, column 'Bbox\[w\]': x \+ w reaches outside"),
        ("x.png,Mass,-1,2,3,4", r"line 2, column 'Bbox\[x\]': x must be at least 0"),
        ("x.png,Tumour,1,2,3,4", r"line 2, column 'Finding Label': 'Tumour' is not an NIH"),
        ("../x.png,Mass,1,2,3,4", r"line 2, column 'Image Index'"),
        ("x.png,Mass,1,2,3", r"line 2: 5 cells but the header has 6"),
    ],
)
def test_bad_boxes_name_the_line(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "BBox_List_2017.csv"
    path.write_text(f"Image Index,Finding Label,Bbox [x,y,w,h],,,\n{row}\n")
    with pytest.raises(ValueError, match=message):
        read_nih_boxes(path)


def test_localisation_scorer_takes_nih_data_and_boxes(
    synthetic: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from chexviz.evaluate.localization import (
        score_localization,
        summarize_localization,
        unscored_boxes,
    )
    from chexviz.explain.gradcam import GradCAM
    from chexviz.models.classifier import MultiLabelClassifier

    data = NIHChestXray14Dataset(synthetic, image_size=32, labels=CHEXPERT_LABELS, split="test")
    boxes = read_nih_boxes(synthetic / "BBox_List_2017.csv", root=synthetic)
    assert len(boxes) > 0
    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", image_size=32)
    with caplog.at_level(logging.WARNING):
        scores = score_localization(GradCAM(model), data, boxes, classes="true", progress=False)
    left = unscored_boxes(boxes, model.labels)
    assert len(left) > 0
    assert (left["nih_label"] == "Infiltration").all()
    assert (left["reason"] == "no CheXpert counterpart").all()
    message = f"left out {len(left)} of {len(boxes)} boxes (no CheXpert counterpart)"
    assert message in caplog.text
    assert set(scores["label"]) <= set(boxes["label"]) - {""}
    assert scores["explained"].all()
    assert scores["Path"].isin(data.frame["Path"]).all()
    # Each finding's chance is the share of the 32 x 32 map its box covers.
    expected = scale_boxes(boxes[boxes["label"] != ""], 32)
    first = scores.iloc[0]
    box = expected[(expected["Path"] == first["Path"]) & (expected["label"] == first["label"])]
    assert first["chance"] > 0
    assert first["n_boxes"] == len(box)
    summary = summarize_localization(scores, min_findings=1)
    assert summary.loc["overall", "findings"] == len(scores)
