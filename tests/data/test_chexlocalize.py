"""CheXlocalize ground truth: both JSON kinds, the writer, names, ids and every bad input."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask
from scipy import ndimage

from chexviz import read_chexlocalize, write_chexlocalize
from chexviz.data.chexlocalize import (
    CHEXLOCALIZE_LABELS,
    LOCALIZATION_LABELS,
    chexlocalize_name,
    chexpert_name,
    cxr_id,
    decode_mask,
    encode_mask,
    mask_to_polygons,
    polygons_to_mask,
)
from chexviz.data.dataset import CheXpertDataset
from chexviz.data.synthetic import SIGN_LABELS, make_synthetic_chexpert
from conftest import write_chexpert

CXR = "patient64541_study1_view1_frontal"

# pycocotools 2.0.x warns about NumPy 2's copy protocol on each decode the tests make directly.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

EXAMPLES = int(os.environ.get("CHEXVIZ_FUZZ_EXAMPLES", "50"))
"""Examples per fuzz target, as in tests/test_fuzz.py; ``CHEXVIZ_FUZZ_EXAMPLES=5000`` for long."""


def _coco(mask: np.ndarray) -> dict[str, Any]:
    """RLE made by pycocotools itself, independently of chexviz's encoder."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def _segmentations(masks: dict[str, np.ndarray], shape: tuple[int, int]) -> dict[str, Any]:
    empty = np.zeros(shape, dtype=bool)
    return {name: _coco(masks.get(name, empty)) for name in CHEXLOCALIZE_LABELS}


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def _disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return np.asarray((rows - cy) ** 2 + (cols - cx) ** 2 <= r * r)


# -- names and ids -------------------------------------------------------------------------------


def test_airspace_opacity_is_chexperts_lung_opacity() -> None:
    assert chexpert_name("Airspace Opacity") == "Lung Opacity"
    assert chexpert_name("Lung Opacity") == "Lung Opacity"
    assert chexlocalize_name("Lung Opacity") == "Airspace Opacity"
    assert chexlocalize_name("Airspace Opacity") == "Airspace Opacity"
    assert LOCALIZATION_LABELS == SIGN_LABELS
    assert [chexpert_name(name) for name in CHEXLOCALIZE_LABELS] == list(LOCALIZATION_LABELS)
    with pytest.raises(ValueError, match="unknown pathology 'Pneumonia'"):
        chexpert_name("Pneumonia")


def test_cxr_ids_from_release_paths() -> None:
    assert cxr_id("CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg") == CXR
    assert cxr_id("test/patient64741/study2/view2_lateral.jpg") == (
        "patient64741_study2_view2_lateral"
    )
    assert cxr_id(Path("/data/CheXpert-v1.0/valid/patient1/study1/view1_frontal.jpg")) == (
        "patient1_study1_view1_frontal"
    )
    with pytest.raises(ValueError, match="not a CheXpert image path"):
        cxr_id("images/chest.png")


# -- the two readers against masks drawn independently ------------------------------------------


def test_rle_file_reads_back_the_masks_it_encodes(tmp_path: Path) -> None:
    shape = (37, 53)
    disc = _disc(shape, 18, 20, 9)
    band = np.zeros(shape, dtype=bool)
    band[30:34, 5:50] = True
    data = {CXR: _segmentations({"Cardiomegaly": disc, "Airspace Opacity": band}, shape)}
    truth = read_chexlocalize(_write(tmp_path / "gt.json", data))
    assert truth.format == "segmentations"
    assert list(truth) == [CXR]
    assert truth.size(CXR) == shape
    masks = truth[CXR]
    assert list(masks) == list(LOCALIZATION_LABELS)
    assert np.array_equal(masks["Cardiomegaly"], disc)
    assert np.array_equal(masks["Lung Opacity"], band)
    assert np.array_equal(masks["Airspace Opacity"], band)  # either spelling answers
    assert not masks["Edema"].any()
    assert masks["Edema"].shape == shape
    assert masks["Edema"].dtype == np.bool_
    assert truth.is_empty(CXR, "Edema")
    assert not truth.is_empty(CXR, "Cardiomegaly")


def test_uncompressed_rle_counts_are_read(tmp_path: Path) -> None:
    shape = (3, 4)
    expected = np.zeros(shape, dtype=bool)
    expected[1, 0] = expected[2, 0] = expected[0, 1] = True  # column-major runs 1, 3, 8
    entry = {name: {"size": [3, 4], "counts": [12]} for name in CHEXLOCALIZE_LABELS}
    entry["Edema"] = {"size": [3, 4], "counts": [1, 3, 8]}
    truth = read_chexlocalize(_write(tmp_path / "gt.json", {CXR: entry}))
    assert np.array_equal(truth[CXR]["Edema"], expected)


def test_polygons_fill_with_their_outline(tmp_path: Path) -> None:
    # A rectangle with integer corners covers its corner pixels inclusively.
    data = {
        CXR: {
            "img_size": [20, 30],
            "Support Devices": [[[2, 3], [10, 3], [10, 7], [2, 7]]],
            "Airspace Opacity": [[[20, 10], [25, 10], [25.2, 13], [20, 13]], [[0, 0], [0, 0]]],
        }
    }
    truth = read_chexlocalize(_write(tmp_path / "gt.json", data))
    assert truth.format == "annotations"
    expected = np.zeros((20, 30), dtype=bool)
    expected[3:8, 2:11] = True
    assert np.array_equal(truth[CXR]["Support Devices"], expected)
    opacity = np.zeros((20, 30), dtype=bool)
    opacity[10:14, 20:26] = True
    opacity[0, 0] = True  # a degenerate polygon still marks its point
    assert np.array_equal(truth[CXR]["Lung Opacity"], opacity)
    assert truth.is_empty(CXR, "Edema")
    assert not truth[CXR]["Edema"].any()


def test_both_synthetic_files_hold_the_same_masks_of_the_drawn_signs(tmp_path: Path) -> None:
    folder = make_synthetic_chexpert(tmp_path, n_patients=1, valid_patients=12)
    segmentations = read_chexlocalize(folder / "gt_segmentations_val.json")
    annotations = read_chexlocalize(folder / "gt_annotations_val.json")
    assert list(segmentations) == list(annotations)
    with open(folder / "valid.csv", newline="") as handle:
        rows = {cxr_id(row["Path"]): row for row in csv.DictReader(handle)}
    positives = 0
    for cxr in segmentations:
        assert segmentations.size(cxr) == annotations.size(cxr)
        for label in LOCALIZATION_LABELS:
            mask = segmentations[cxr][label]
            assert np.array_equal(mask, annotations[cxr][label])
            assert mask.any() == (rows[cxr][label] == "1.0"), (cxr, label)
            positives += bool(mask.any())
    assert positives > 10
    # Images without a drawn sign have no entry, as in the CheXlocalize files.
    for cxr, row in rows.items():
        has_sign = any(row[label] == "1.0" for label in SIGN_LABELS) and "frontal" in cxr
        assert (cxr in segmentations) == has_sign


def test_masks_are_decoded_on_each_access_not_kept(tmp_path: Path) -> None:
    shape = (8, 8)
    disc = _disc(shape, 4, 4, 2)
    truth = read_chexlocalize(
        _write(tmp_path / "gt.json", {CXR: _segmentations({"Edema": disc}, shape)})
    )
    first = truth[CXR]["Edema"]
    first[:] = False
    assert np.array_equal(truth[CXR]["Edema"], disc)
    assert not hasattr(truth, "__dict__") or all(
        not isinstance(value, np.ndarray) for value in vars(truth).values()
    )


# -- the writer ----------------------------------------------------------------------------------


def test_written_segmentations_decode_with_pycocotools(tmp_path: Path) -> None:
    shape = (41, 29)
    disc = _disc(shape, 20, 14, 8)
    other = np.zeros((5, 6), dtype=bool)
    other[1:3, 2:5] = True
    path = write_chexlocalize(
        tmp_path / "out.json",
        {CXR: {"Lung Opacity": disc, "Edema": disc.astype(np.uint8)}, "x_y_z": {"Edema": other}},
    )
    raw = json.loads(path.read_text())
    assert set(raw) == {CXR, "x_y_z"}
    assert list(raw[CXR]) == list(CHEXLOCALIZE_LABELS)
    assert "Lung Opacity" not in raw[CXR]
    decoded = {name: coco_mask.decode(rle).astype(bool) for name, rle in raw[CXR].items()}
    assert np.array_equal(decoded["Airspace Opacity"], disc)
    assert np.array_equal(decoded["Edema"], disc)
    assert not decoded["Cardiomegaly"].any()
    assert decoded["Cardiomegaly"].shape == shape
    assert np.array_equal(coco_mask.decode(raw["x_y_z"]["Edema"]).astype(bool), other)


def test_writer_takes_a_generator_and_annotations_read_back(tmp_path: Path) -> None:
    shape = (30, 30)
    ring = _disc(shape, 15, 15, 10) & ~_disc(shape, 15, 15, 4)
    blob = _disc(shape, 3, 27, 2)

    def masks() -> Any:
        yield CXR, {"Pleural Effusion": ring | blob}

    path = write_chexlocalize(tmp_path / "ann.json", masks(), format="annotations")
    raw = json.loads(path.read_text())
    assert raw[CXR]["img_size"] == [30, 30]
    assert set(raw[CXR]) == {"img_size", "Pleural Effusion"}  # positives only
    assert len(raw[CXR]["Pleural Effusion"]) == 2
    read = read_chexlocalize(path)[CXR]["Pleural Effusion"]
    assert np.array_equal(read, ndimage.binary_fill_holes(ring | blob))


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.bool_, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24)))
def test_rle_round_trip(mask: np.ndarray) -> None:
    assert np.array_equal(decode_mask(encode_mask(mask)), mask)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.bool_, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24)))
def test_traced_polygons_fill_back_to_the_mask_with_holes_filled(mask: np.ndarray) -> None:
    filled = polygons_to_mask(mask_to_polygons(mask), mask.shape)
    assert np.array_equal(filled, ndimage.binary_fill_holes(mask))


def test_writer_refuses_bad_masks(tmp_path: Path) -> None:
    square = np.ones((4, 4), dtype=bool)
    with pytest.raises(ValueError, match="unknown pathology 'Pneumonia'"):
        write_chexlocalize(tmp_path / "a.json", {CXR: {"Pneumonia": square}})
    with pytest.raises(ValueError, match="given twice"):
        write_chexlocalize(
            tmp_path / "a.json", {CXR: {"Lung Opacity": square, "Airspace Opacity": square}}
        )
    with pytest.raises(ValueError, match="share one shape"):
        write_chexlocalize(tmp_path / "a.json", {CXR: {"Edema": square, "Atelectasis": square[1:]}})
    with pytest.raises(ValueError, match="no masks"):
        write_chexlocalize(tmp_path / "a.json", {CXR: {}})
    with pytest.raises(ValueError, match="given twice"):
        write_chexlocalize(tmp_path / "a.json", iter([(CXR, {"Edema": square})] * 2))
    with pytest.raises(ValueError, match="format"):
        write_chexlocalize(tmp_path / "a.json", {CXR: {"Edema": square}}, format="masks")  # type: ignore[arg-type]
    assert not (tmp_path / "a.json").exists()


# -- the full-resolution release -----------------------------------------------------------------


def test_dataset_reads_the_full_resolution_release_and_test_csv(tmp_path: Path) -> None:
    release = write_chexpert(
        tmp_path, folder="CheXpert-v1.0", split="valid", csv_name="valid.csv", size=(90, 70)
    )
    write_chexpert(
        tmp_path, folder="CheXpert-v1.0", split="test", csv_name="full.csv", size=(90, 70), seed=1
    )
    with open(release / "full.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    # The test labels as CheXlocalize releases them: paths from test/, only label columns.
    with open(tmp_path / "test_labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Path", *rows[0][5:]])
        for row in rows[1:]:
            writer.writerow([row[0].removeprefix("CheXpert-v1.0/"), *[c or "0.0" for c in row[5:]]])
    for name, split in (("valid.csv", "valid"), ("test_labels.csv", "test")):
        data = CheXpertDataset(tmp_path, name, image_size=32, frontal_only=False)
        assert len(data) == 16
        assert all(path.parts[-5:-3] == ("CheXpert-v1.0", split) for path in data.paths)
        assert {cxr_id(path) for path in data.paths} >= {"patient00001_study1_view2_lateral"}
        assert data[0][0].shape == (1, 32, 32)


# -- bad input -----------------------------------------------------------------------------------


def _valid_segmentations() -> dict[str, Any]:
    return {CXR: _segmentations({}, (6, 5))}


def _cases() -> list[tuple[str, Any, str]]:
    good = _valid_segmentations()
    rle = good[CXR]["Edema"]
    long_runs = _coco(np.ones((10, 10), dtype=bool))["counts"]
    short_runs = _coco(np.ones((1, 1), dtype=bool))["counts"]
    entry = good[CXR]
    return [
        ("a list", [1, 2], "non-empty JSON object"),
        ("empty", {}, "empty object"),
        ("neither", {CXR: {"Edema": [1, 2]}}, "neither CheXlocalize format"),
        (
            "mixed",
            {CXR: entry, "patient2_study1_view1_frontal": {"img_size": [6, 5]}},
            "in the annotations format but CXR",
        ),
        ("unknown pathology", {CXR: {**entry, "Pneumonia": rle}}, "unknown pathology 'Pneumonia'"),
        (
            "both spellings",
            {CXR: {**entry, "Lung Opacity": rle}},
            "'Airspace Opacity' and 'Lung Opacity' are the same pathology",
        ),
        (
            "missing pathology",
            {CXR: {k: v for k, v in entry.items() if k != "Edema"}},
            r"no entry for \['Edema'\]",
        ),
        (
            "sizes disagree",
            {CXR: {**entry, "Edema": _coco(np.zeros((5, 6), dtype=bool))}},
            r"'Edema': 'size' \[5, 6\] differs",
        ),
        (
            "runs too long",
            {CXR: {**entry, "Edema": {"size": [6, 5], "counts": long_runs}}},
            r"'Edema', 'counts': the runs cover 100 pixels but 'size' \[6, 5\] has 30",
        ),
        (
            "runs too short",
            {CXR: {**entry, "Edema": {"size": [6, 5], "counts": short_runs}}},
            "the runs cover 1 pixels",
        ),
        (
            "bad character",
            {CXR: {**entry, "Edema": {"size": [6, 5], "counts": "0~"}}},
            "invalid character",
        ),
        (
            "size not ints",
            {CXR: {**entry, "Edema": {"size": [6.0, 5], "counts": "0"}}},
            "two positive integers",
        ),
        (
            "size of booleans",
            {CXR: {**entry, "Edema": {"size": [True, 5], "counts": "0"}}},
            "two positive integers",
        ),
        (
            "huge size",
            {CXR: {**entry, "Edema": {"size": [100000, 100000], "counts": "0"}}},
            "more than the",
        ),
        (
            "extra rle key",
            {CXR: {**entry, "Edema": {**rle, "area": 3}}},
            r"expected \{'size'",
        ),
        ("counts type", {CXR: {**entry, "Edema": {"size": [6, 5], "counts": 7}}}, "got int"),
        (
            "vertex far outside",
            {CXR: {"img_size": [20, 30], "Edema": [[[1, 1], [3e7, 2], [5, 5]]]}},
            r"'Edema', polygon 0, vertex 1: \[3e\+07, 2\] is not a pixel coordinate",
        ),
        (
            "negative vertex far outside",
            {CXR: {"img_size": [20, 30], "Edema": [[[1, -1e30], [3, 2]]]}},
            "is not a pixel coordinate",
        ),
        (
            "one vertex",
            {CXR: {"img_size": [20, 30], "Edema": [[[1, 1]]]}},
            "at least two vertices",
        ),
        (
            "vertex not numbers",
            {CXR: {"img_size": [20, 30], "Edema": [[[1, "2"], [3, 4]]]}},
            "expected \\[x, y\\] numbers",
        ),
        (
            "polygons not a list",
            {CXR: {"img_size": [20, 30], "Edema": {"a": 1}}},
            "expected a list of polygons",
        ),
        ("bad img_size", {CXR: {"img_size": [20], "Edema": []}}, "'img_size' must be"),
        (
            "annotation unknown pathology",
            {CXR: {"img_size": [20, 30], "Fracture": []}},
            "unknown pathology 'Fracture'",
        ),
    ]


@pytest.mark.parametrize(("name", "data", "match"), _cases(), ids=[c[0] for c in _cases()])
def test_bad_files_name_file_id_and_field(tmp_path: Path, name: str, data: Any, match: str) -> None:
    path = _write(tmp_path / "gt.json", data)
    with pytest.raises(ValueError, match=match) as caught:
        read_chexlocalize(path)
    assert str(path) in str(caught.value)
    if isinstance(data, dict) and data and name not in ("mixed",):
        assert CXR in str(caught.value)


def test_nan_vertex_and_duplicate_keys_and_non_json(tmp_path: Path) -> None:
    nan = tmp_path / "nan.json"
    nan.write_text(f'{{"{CXR}": {{"img_size": [4, 4], "Edema": [[[1, NaN], [2, 2]]]}}}}')
    with pytest.raises(ValueError, match="vertex 0"):
        read_chexlocalize(nan)
    twice = tmp_path / "twice.json"
    twice.write_text(f'{{"{CXR}": {{"img_size": [4, 4]}}, "{CXR}": {{"img_size": [4, 4]}}}}')
    with pytest.raises(ValueError, match=f"key '{CXR}' appears twice"):
        read_chexlocalize(twice)
    broken = tmp_path / "broken.json"
    broken.write_text('{"a": ')
    with pytest.raises(ValueError, match="not a JSON file"):
        read_chexlocalize(broken)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not a JSON file"):
        read_chexlocalize(binary)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_chexlocalize(tmp_path / "missing.json")


def test_unknown_ids_and_labels_are_key_errors(tmp_path: Path) -> None:
    truth = read_chexlocalize(_write(tmp_path / "gt.json", _valid_segmentations()))
    with pytest.raises(KeyError, match="no CXR 'nope'"):
        truth["nope"]
    with pytest.raises(KeyError, match="unknown pathology"):
        truth[CXR]["Fracture"]
    with pytest.raises(KeyError):
        truth.size("nope")


def test_decode_mask_refuses_rles_pycocotools_would_misread() -> None:
    with pytest.raises(ValueError, match=r"rle, 'counts': the runs cover 1 pixels"):
        decode_mask({"size": [10, 10], "counts": _coco(np.ones((1, 1), dtype=bool))["counts"]})
    with pytest.raises(ValueError, match="ends in the middle of a run"):
        decode_mask({"size": [1, 1], "counts": "o"})
    with pytest.raises(ValueError, match="not a pixel coordinate"):
        polygons_to_mask([[[0, 0], [2**25, 0]]], (3, 4))


def _reference_create_mask(polygons: list[Any], img_dims: list[int]) -> np.ndarray:
    """annotation_to_segmentation.py's create_mask, written out: PIL, no check of vertices."""
    poly = Image.new("1", (img_dims[1], img_dims[0]))
    for polygon in polygons:
        coords = [(point[0], point[1]) for point in polygon]
        ImageDraw.Draw(poly).polygon(coords, outline=1, fill=1)
    return np.array(poly, dtype="int")


def test_polygons_reaching_outside_the_image_are_drawn_clipped_as_the_reference(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    size = [20, 30]  # height, width
    polygons = {
        "Edema": [[[-5, -4], [12, -3], [14, 9], [-2, 11]]],  # over the top-left corner
        "Cardiomegaly": [[[25, 15], [34.5, 16], [33, 26], [22, 24.5]], [[2, 2], [6, 2], [4, 6]]],
        "Atelectasis": [[[31, 1], [40, 1], [40, 9]]],  # wholly to the right of the image
        "Pneumothorax": [[[30, 5], [30, 15]]],  # along the edge x = width: no pixel
    }
    path = tmp_path / "gt_annotations_val.json"
    path.write_text(json.dumps({CXR: {"img_size": size, **polygons}}))
    with caplog.at_level(logging.WARNING):
        truth = read_chexlocalize(path)
    assert "3 polygons reach outside their image" in caplog.text  # the edge one does not
    assert "'Edema', polygon 0" in caplog.text
    for label, shapes in polygons.items():
        expected = _reference_create_mask(shapes, size).astype(bool)
        np.testing.assert_array_equal(truth[CXR][label], expected, err_msg=label)
        assert truth.is_empty(CXR, label) == (not expected.any()), label
    assert truth[CXR]["Edema"].any()
    assert not truth[CXR]["Atelectasis"].any()
    assert not truth[CXR]["Pneumothorax"].any()
    # Clipping is drawing on a larger canvas and cutting the image out of it.
    pad = 12
    shifted = [[[x + pad, y + pad] for x, y in polygon] for polygon in polygons["Cardiomegaly"]]
    canvas = polygons_to_mask(shifted, (size[0] + 2 * pad, size[1] + 2 * pad))
    np.testing.assert_array_equal(
        truth[CXR]["Cardiomegaly"], canvas[pad : pad + size[0], pad : pad + size[1]]
    )


# -- fuzz: any file either reads or fails with a ValueError naming it ----------------------------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["size", "counts", "img_size", "Edema", "Airspace Opacity", "x", CXR]),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


def _read_or_refuse(path: Path) -> None:
    try:
        truth = read_chexlocalize(path)
    except ValueError as error:
        message = str(error)
    else:
        message = ""
    if message:
        assert str(path) in message
        return
    for cxr in truth:  # whatever was accepted decodes to masks of the stated size
        for label in LOCALIZATION_LABELS:
            assert truth[cxr][label].shape == truth.size(cxr)


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.dictionaries(st.sampled_from([CXR, "b"]), _JSON, max_size=2))
def test_fuzz_structures(tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any]) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "gt.json"
    path.write_text(json.dumps(data))
    _read_or_refuse(path)


@settings(max_examples=EXAMPLES, deadline=None)
@given(position=st.integers(0, 10_000), byte=st.integers(0, 255), annotations=st.booleans())
def test_fuzz_damaged_bytes(
    tmp_path_factory: pytest.TempPathFactory, position: int, byte: int, annotations: bool
) -> None:
    mask = _disc((12, 10), 6, 5, 3)
    work = tmp_path_factory.mktemp("damaged")
    good = write_chexlocalize(
        work / "gt.json",
        {CXR: {"Edema": mask}},
        format="annotations" if annotations else "segmentations",
    )
    content = bytearray(good.read_bytes())
    content[position % len(content)] = byte
    good.write_bytes(bytes(content))
    _read_or_refuse(good)
