"""The human benchmark, pixel precision/sensitivity/specificity, and the salient-point files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chexviz import (
    precision_sensitivity_specificity,
    read_salient_points,
    score_chexlocalize,
    score_human_benchmark,
    write_chexlocalize,
)
from chexviz.data.synthetic import make_synthetic_chexpert

A = "patient1_study1_view1_frontal"
B = "patient2_study1_view1_frontal"
EXAMPLES = int(os.environ.get("CHEXVIZ_FUZZ_EXAMPLES", "50"))

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _box(y0: int, y1: int, x0: int, x1: int, shape: tuple[int, int] = (10, 10)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture
def truth() -> dict[str, dict[str, np.ndarray]]:
    return {
        A: {"Edema": _box(0, 4, 0, 4), "Cardiomegaly": _box(0, 0, 0, 0)},
        B: {"Edema": _box(5, 10, 5, 10), "Cardiomegaly": _box(2, 4, 2, 4)},
    }


@pytest.fixture
def human() -> dict[str, dict[str, np.ndarray]]:
    return {
        # Edema: 4x4 truth, 4x2 drawn inside it -> IoU 8/16
        A: {"Edema": _box(0, 4, 0, 2), "Cardiomegaly": _box(0, 2, 0, 2)},
        # Edema: missed; Cardiomegaly: 2x2 truth, 3x3 drawn around it -> IoU 4/9
        B: {"Edema": _box(0, 0, 0, 0), "Cardiomegaly": _box(2, 5, 2, 5)},
    }


def test_human_benchmark_matches_a_hand_computation(
    truth: dict[str, Any], human: dict[str, Any]
) -> None:
    points = {A: {"Edema": [[5.0, 5.0], [1.9, 3.9]]}, B: {"Edema": [[0.0, 0.0]]}}
    table = score_human_benchmark(
        truth, human, salient_points=points, labels=["Edema", "Cardiomegaly"]
    )
    assert list(table.columns) == ["cxr_id", "label", "gt_pixels", "pred_pixels", "iou", "hit"]
    got = table.set_index(["cxr_id", "label"])
    assert got.loc[(A, "Edema"), "iou"] == 8 / 16
    assert got.loc[(A, "Edema"), "hit"] == 1.0  # the second point, (1, 3) after int()
    assert got.loc[(A, "Edema"), "pred_pixels"] == 8
    assert math.isnan(got.loc[(A, "Cardiomegaly"), "iou"])  # no finding: true-positive slice
    assert math.isnan(got.loc[(A, "Cardiomegaly"), "hit"])
    assert pd.isna(got.loc[(A, "Cardiomegaly"), "pred_pixels"])
    assert math.isnan(got.loc[(B, "Edema"), "iou"])  # missed: undefined on the slice
    assert got.loc[(B, "Edema"), "hit"] == 0.0  # a point off the finding
    assert got.loc[(B, "Cardiomegaly"), "iou"] == pytest.approx(4 / 9)
    assert got.loc[(B, "Cardiomegaly"), "hit"] == 0.0  # a finding without a point is a miss
    full = score_human_benchmark(truth, human, true_positive_only=False, labels=["Edema"])
    assert full.set_index("cxr_id").loc[B, "iou"] == 0.0
    assert full["hit"].isna().all()  # no salient points: hit is undefined


def test_human_table_has_the_per_image_format_of_the_methods(
    truth: dict[str, Any], human: dict[str, Any]
) -> None:
    maps = {
        (cxr, label): mask.astype(np.float32) for cxr in human for label, mask in human[cxr].items()
    }
    scores = score_chexlocalize(
        maps,
        truth,
        thresholds={"Edema": 0.5, "Cardiomegaly": 0.5},
        baselines=False,
        n_bootstrap=2,
        min_cases=1,
    )
    table = score_human_benchmark(truth, human, labels=["Edema", "Cardiomegaly"])
    method = scores.per_image
    assert list(method.columns) == list(table.columns)
    assert (method.dtypes == table.dtypes).all()
    pd.testing.assert_frame_equal(
        method[["cxr_id", "label", "gt_pixels", "pred_pixels", "iou"]],
        table[["cxr_id", "label", "gt_pixels", "pred_pixels", "iou"]],
    )


def test_mismatched_cxrs_are_refused_naming_file_and_cxrs(
    tmp_path: Path, truth: dict[str, Any], human: dict[str, Any]
) -> None:
    gt = write_chexlocalize(tmp_path / "gt.json", truth)
    hb = write_chexlocalize(tmp_path / "hb.json", {A: human[A]})
    with pytest.raises(ValueError, match=rf"gt\.json has 1 CXRs \('{B}'\) that .*hb\.json lacks"):
        score_human_benchmark(gt, hb)
    extra = write_chexlocalize(tmp_path / "extra.json", {**human, "patient9_x": human[A]})
    with pytest.raises(ValueError, match=r"extra\.json covers 1 CXRs \('patient9_x'\)"):
        score_human_benchmark(gt, extra)
    with pytest.raises(ValueError, match=r"salient points of 1 CXRs \('patient9_x'"):
        score_human_benchmark(gt, human, salient_points={"patient9_x": {"Edema": [[1, 1]]}})
    with pytest.raises(ValueError, match=rf"CXR '{A}', 'Edema', point 0: \(10, 1\) lies off"):
        score_human_benchmark(gt, human, salient_points={A: {"Edema": [[10, 1]]}})
    small = {A: {"Edema": np.zeros((5, 5))}, B: human[B]}
    with pytest.raises(ValueError, match=rf"CXR '{A}', 'Edema': the mask has shape \(5, 5\)"):
        score_human_benchmark(gt, small)


def test_pixel_precision_sensitivity_specificity_match_a_hand_computation(
    truth: dict[str, Any], human: dict[str, Any]
) -> None:
    keyed = {(cxr, label): mask for cxr in human for label, mask in human[cxr].items()}
    keyed[("patient9_without_truth", "Edema")] = np.ones((10, 10))  # not counted
    table = precision_sensitivity_specificity(keyed, truth, labels=["Edema"])
    # Edema pooled over A and B: TP 8 + 0, FP 0, FN 8 + 25, TN (100 - 16) + (100 - 25)
    row = table.loc["Edema"]
    assert (row["tp"], row["fp"], row["fn"], row["tn"]) == (8, 0, 33, 159)
    assert row["precision"] == 1.0
    assert row["sensitivity"] == pytest.approx(8 / 41)
    assert row["specificity"] == 1.0
    cardio = precision_sensitivity_specificity(human, truth).loc["Cardiomegaly"]
    # A: FP 4 (no truth); B: TP 4, FP 5
    assert (cardio["tp"], cardio["fp"], cardio["fn"]) == (4, 9, 0)
    assert cardio["precision"] == pytest.approx(4 / 13)
    assert cardio["specificity"] == pytest.approx((200 - 4 - 9) / (200 - 4))
    assert math.isnan(
        precision_sensitivity_specificity(human, truth).loc["Pneumothorax", "precision"]
    )
    with pytest.raises(ValueError, match=rf"segmentations has no segmentations of 1 CXRs \('{B}'"):
        precision_sensitivity_specificity({A: human[A]}, truth)


def test_salient_point_file_reads_and_refuses_bad_entries(tmp_path: Path) -> None:
    path = tmp_path / "hb_salient_pt_test.json"
    path.write_text(json.dumps({A: {"img_size": [10, 10], "Airspace Opacity": [[1, 2.5]]}}))
    assert read_salient_points(path) == {A: {"Lung Opacity": ((1.0, 2.5),)}}
    for data, match in (
        ({A: {"Edema": [[1, "x"]]}}, rf"{A}'.*'Edema', point 0: expected \[x, y\]"),
        ({A: {"Edema": [[1, float("nan")]]}}, "point 0: expected"),
        ({A: {"Edema": 3}}, "expected a list of points"),
        ({A: {"Fracture": []}}, "Fracture"),
        ({A: {"Edema": [[1, 1]] * 1001}}, "1001 points, more than 1000"),
        ({A: {"img_size": [0, 3]}}, "img_size"),
        ([], "expected a non-empty JSON object"),
    ):
        path.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=match) as error:
            read_salient_points(path)
        assert str(path) in str(error.value)


@settings(max_examples=EXAMPLES, deadline=None)
@given(position=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_fuzz_damaged_salient_points(
    tmp_path_factory: pytest.TempPathFactory, position: int, byte: int
) -> None:
    path = tmp_path_factory.mktemp("points") / "hb_salient_pt_test.json"
    content = bytearray(json.dumps({A: {"Edema": [[1.5, 2]], "Cardiomegaly": [[3, 4]]}}).encode())
    content[position % len(content)] = byte
    path.write_bytes(bytes(content))
    try:
        points = read_salient_points(path)
    except ValueError as error:
        message = str(error)
        assert str(path) in message, message
    else:
        for labelled in points.values():
            for listed in labelled.values():
                assert all(len(p) == 2 and all(map(math.isfinite, p)) for p in listed)


def test_synthetic_human_benchmark_is_deterministic_and_scores(tmp_path: Path) -> None:
    folders = [
        make_synthetic_chexpert(tmp_path / name, n_patients=1, valid_patients=6, workers=1)
        for name in ("a", "b")
    ]
    names = ("hb_segmentations_val.json", "hb_salient_pt_val.json")
    for name in names:
        assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes()
    table = score_human_benchmark(
        folders[0] / "gt_segmentations_val.json",
        folders[0] / names[0],
        salient_points=folders[0] / names[1],
    )
    found = table[table["gt_pixels"] > 0]
    assert len(found) > 0
    assert found["hit"].notna().all()
    assert 0.0 < found["iou"].mean() < 1.0  # a second reader agrees, but not exactly
