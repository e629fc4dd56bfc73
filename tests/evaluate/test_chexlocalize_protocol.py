"""The CheXlocalize protocol: Otsu segmentation, IoU, hit, bootstrap, tuning, baselines, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from scipy import ndimage

from chexviz import (
    read_chexlocalize,
    read_tuning_csv,
    score_chexlocalize,
    segment_heatmap,
    tune_chexlocalize,
    write_chexlocalize,
)
from chexviz.cli import main
from chexviz.data.chexlocalize import LOCALIZATION_LABELS
from chexviz.evaluate.chexlocalize import DEFAULT_THRESHOLDS, ground_truth_overlay

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


# -- the reference, written out as heatmap_to_segmentation.py does it -----------------------------


def _reference_segmentation(heatmap: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """cam_to_segmentation of the reference: Otsu, all contours (RETR_TREE) filled with PIL."""
    resized = F.interpolate(heatmap[None, None], size=size, mode="bilinear", align_corners=False)
    mask = resized.squeeze() - resized.min()
    mask = mask.div(mask.max()).numpy()
    grey = np.uint8(255 * mask)
    binary = cv2.threshold(grey, 0, int(np.max(grey)), cv2.THRESH_OTSU)[1]
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    image = Image.new("1", (size[1], size[0]))
    for contour in contours:
        if len(contour) > 1:
            points = [(int(p[0][0]), int(p[0][1])) for p in contour]
            ImageDraw.Draw(image).polygon(points, outline=1, fill=1)
    return np.array(image, dtype=bool)


def _otsu_threshold(grey: np.ndarray) -> int:
    """Otsu's threshold by its definition: the split maximising the between-class variance."""
    histogram = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    best, best_t = -1.0, 0
    levels = np.arange(256)
    for t in range(256):
        low, high = histogram[: t + 1], histogram[t + 1 :]
        if low.sum() == 0 or high.sum() == 0:
            continue
        mean_low = (levels[: t + 1] * low).sum() / low.sum()
        mean_high = (levels[t + 1 :] * high).sum() / high.sum()
        between = low.sum() * high.sum() * (mean_low - mean_high) ** 2
        if between > best:
            best, best_t = between, t
    return best_t


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    small=st.tuples(st.integers(2, 12), st.integers(2, 12)),
    size=st.tuples(st.integers(8, 160), st.integers(8, 160)),
    noisy=st.booleans(),
)
def test_otsu_segmentation_matches_the_reference(
    seed: int, small: tuple[int, int], size: tuple[int, int], noisy: bool
) -> None:
    rng = np.random.default_rng(seed)
    heatmap = torch.from_numpy(rng.random(small if not noisy else size, dtype=np.float32))
    ours = segment_heatmap(heatmap, size)
    assert ours.dtype == np.bool_
    assert ours.shape == size
    assert np.array_equal(ours, _reference_segmentation(heatmap, size))


def test_otsu_threshold_and_outer_contour_filling() -> None:
    # A ring-shaped hot region: Otsu keeps the ring, filling its outer contour adds the hole.
    rows, cols = np.ogrid[:64, :64]
    radius = np.hypot(rows - 32, cols - 32)
    heatmap = np.where((radius > 10) & (radius < 20), 1.0, 0.1).astype(np.float32)
    heatmap += 0.05 * np.random.default_rng(0).random((64, 64), dtype=np.float32)
    segmentation = segment_heatmap(heatmap, (64, 64))
    normalised = (heatmap - heatmap.min()) / (heatmap - heatmap.min()).max()
    grey = (normalised * 255).astype(np.uint8)
    threshold = _otsu_threshold(grey)
    assert threshold == cv2.threshold(grey, 0, 255, cv2.THRESH_OTSU)[0]
    above = grey > threshold
    ring = (radius > 10) & (radius < 20)
    assert np.array_equal(above, ring)
    assert np.array_equal(segmentation, ndimage.binary_fill_holes(ring))
    assert segmentation[32, 32]  # the hole is filled


def test_thresholds_keep_the_pixels_above_them() -> None:
    heatmap = np.array([[0.0, 1.0], [2.0, 4.0]])
    assert np.array_equal(
        segment_heatmap(heatmap, (2, 2), threshold=0.25), [[False, False], [True, True]]
    )
    # A constant map highlights nothing; a (1, 1, h, w) map is read as [h, w].
    assert not segment_heatmap(np.zeros((3, 3)), (5, 5)).any()
    assert segment_heatmap(torch.rand(1, 1, 4, 4), (9, 7)).shape == (9, 7)


@pytest.mark.parametrize(
    ("heatmap", "size", "threshold", "error", "match"),
    [
        (np.full((2, 2), np.nan), (4, 4), None, ValueError, "NaN"),
        (np.zeros((2, 2, 2)), (4, 4), None, ValueError, "2-D"),
        (np.zeros((0, 3)), (4, 4), None, ValueError, "2-D"),
        ([[1.0]], (4, 4), None, TypeError, "torch.Tensor or numpy.ndarray"),
        (np.ones((2, 2)), (0, 4), None, ValueError, "size"),
        (np.ones((2, 2)), (4.0, 4), None, ValueError, "size"),
        (np.ones((2, 2)), (4, 4), math.inf, ValueError, "finite"),
    ],
)
def test_segment_heatmap_bad_input(
    heatmap: Any, size: Any, threshold: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        segment_heatmap(heatmap, size, threshold=threshold)


# -- IoU, hit and the bootstrap on hand-computed cases ---------------------------------------------


def _truth(**masks: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    return {cxr: {"Edema": mask} for cxr, mask in masks.items()}


def test_iou_and_hit_on_hand_computed_cases() -> None:
    square = np.zeros((4, 4), dtype=bool)
    square[:2, :2] = True  # 4 pixels
    empty = np.zeros((4, 4), dtype=bool)
    ground_truth = _truth(a=square, b=square, c=empty, d=square)
    top_row = np.zeros((4, 4))
    top_row[0] = [4, 3, 2, 1]  # > 0.5 after normalising: columns 0 and 1 of row 0
    outside = np.zeros((4, 4))
    outside[3, 3] = 1.0
    heatmaps = {
        ("a", "Edema"): top_row,  # segmentation {(0,0), (0,1)}: IoU 2/4; max at (0,0): hit
        ("b", "Edema"): outside,  # segmentation {(3,3)}: IoU 0/5; miss
        ("c", "Edema"): top_row,  # no finding: undefined on the true-positive slice
        ("d", "Edema"): np.zeros((4, 4)),  # constant map: empty segmentation, never a hit
    }
    thresholds = {"Edema": 0.5}
    scores = score_chexlocalize(
        heatmaps, ground_truth, thresholds=thresholds, baselines=False, min_cases=1
    )
    table = scores.per_image.set_index("cxr_id")
    assert table.loc["a", "iou"] == pytest.approx(0.5)
    assert table.loc["b", "iou"] == 0.0
    assert math.isnan(table.loc["c", "iou"])
    assert math.isnan(table.loc["d", "iou"])
    assert list(table["hit"].fillna(-1)) == [1.0, 0.0, -1.0, 0.0]
    assert list(table["gt_pixels"]) == [4, 4, 0, 4]
    summary = scores.summary
    assert summary.loc["Edema", "miou"] == pytest.approx(0.25)
    assert summary.loc["Edema", "miou_n"] == 2
    assert summary.loc["Edema", "hit_rate"] == pytest.approx(1 / 3)
    assert summary.loc["Edema", "hit_rate_n"] == 3

    full = score_chexlocalize(
        heatmaps, ground_truth, thresholds=thresholds, true_positive_only=False, baselines=False
    ).per_image.set_index("cxr_id")
    assert full.loc["c", "iou"] == 0.0  # a segmentation where there is nothing
    assert full.loc["d", "iou"] == 0.0  # nothing segmented where there is something
    assert full.loc["a", "iou"] == pytest.approx(0.5)


def test_probability_cutoffs_empty_the_segmentation_but_not_the_hit() -> None:
    square = np.zeros((4, 4), dtype=bool)
    square[:2, :2] = True
    heatmap = np.zeros((4, 4))
    heatmap[:2, :2] = 1.0
    probabilities = {("a", "Edema"): 0.3, ("b", "Edema"): 0.7}
    scores = score_chexlocalize(
        {("a", "Edema"): heatmap, ("b", "Edema"): heatmap},
        _truth(a=square, b=square),
        probabilities=probabilities,
        cutoffs={"Edema": 0.5},
        true_positive_only=False,
        baselines=False,
    ).per_image.set_index("cxr_id")
    assert scores.loc["a", "iou"] == 0.0
    assert scores.loc["b", "iou"] == 1.0
    assert scores.loc["a", "hit"] == 1.0
    assert scores.loc["a", "probability"] == 0.3
    with pytest.raises(ValueError, match="probabilities"):
        score_chexlocalize({("a", "Edema"): heatmap}, _truth(a=square), cutoffs={"Edema": 0.5})


def _reference_bootstrap(frame: pd.DataFrame, seed: int, replicates: int) -> pd.DataFrame:
    """eval.py's bootstrap_metric and compute_cis, written out."""
    performances = _reference_replicates(frame, seed, replicates)
    out = {}
    for task in performances.columns:
        ordered = performances[task].sort_values()
        lower = ordered.iloc[int(0.05 / 2 * len(ordered)) - 1]
        upper = ordered.iloc[int((1 - 0.05 / 2) * len(ordered)) - 1]
        out[task] = (lower, upper)
    return pd.DataFrame(out, index=["lower", "upper"])


def test_bootstrap_intervals_are_the_references() -> None:
    rng = np.random.default_rng(3)
    shape = (12, 12)
    ground_truth: dict[str, dict[str, np.ndarray]] = {}
    heatmaps: dict[tuple[str, str], np.ndarray] = {}
    for index in range(30):
        cxr = f"patient{index:05d}_study1_view1_frontal"
        ground_truth[cxr] = {}
        for label in ("Edema", "Cardiomegaly"):
            mask = np.zeros(shape, dtype=bool)
            top, left = rng.integers(0, 6, 2)
            mask[top : top + 6, left : left + 6] = True
            ground_truth[cxr][label] = mask
            heatmaps[(cxr, label)] = rng.random((3, 3))
    scores = score_chexlocalize(heatmaps, ground_truth, seed=7, baselines=False)
    for metric, column in (("iou", "miou"), ("hit", "hit_rate")):
        wide = scores.per_image.pivot(index="cxr_id", columns="label", values=metric)
        reference = _reference_bootstrap(wide.sort_index(), seed=7, replicates=1000)
        for label in ("Edema", "Cardiomegaly"):
            # The same resamples; sums in another order differ in the last bit.
            lower, upper = reference.loc["lower", label], reference.loc["upper", label]
            assert scores.summary.loc[label, f"{column}_lower"] == pytest.approx(lower, rel=1e-12)
            assert scores.summary.loc[label, f"{column}_upper"] == pytest.approx(upper, rel=1e-12)
            assert scores.summary.loc[label, column] == pytest.approx(wide[label].mean())
    again = score_chexlocalize(heatmaps, ground_truth, seed=7, baselines=False)
    pd.testing.assert_frame_equal(scores.summary, again.summary)
    other = score_chexlocalize(heatmaps, ground_truth, seed=8, baselines=False)
    assert not scores.summary.equals(other.summary)
    mean = scores.summary.loc["mean"]
    assert mean["miou"] == pytest.approx(
        scores.summary.loc[["Edema", "Cardiomegaly"], "miou"].mean()
    )
    assert mean["miou_lower"] <= mean["miou"] <= mean["miou_upper"]


def _two_pathologies(cardiomegaly: int) -> tuple[dict[tuple[str, str], np.ndarray], dict]:
    """30 CXRs with Edema, the first ``cardiomegaly`` of them also with Cardiomegaly."""
    rng = np.random.default_rng(5)
    ground_truth: dict[str, dict[str, np.ndarray]] = {}
    heatmaps: dict[tuple[str, str], np.ndarray] = {}
    for index in range(30):
        cxr = f"patient{index // 2:05d}_study{index % 2 + 1}_view1_frontal"
        ground_truth[cxr] = {}
        for label in ("Edema", "Cardiomegaly"):
            mask = np.zeros((12, 12), dtype=bool)
            if label == "Edema" or index < cardiomegaly:
                top, left = rng.integers(0, 6, 2)
                mask[top : top + 6, left : left + 6] = True
            ground_truth[cxr][label] = mask
            heatmaps[(cxr, label)] = rng.random((3, 3))
    return heatmaps, ground_truth


def test_a_pathology_with_two_cxrs_is_too_few_and_out_of_the_mean() -> None:
    heatmaps, ground_truth = _two_pathologies(cardiomegaly=2)
    scores = score_chexlocalize(heatmaps, ground_truth, n_bootstrap=200, baselines=False)
    summary = scores.summary
    cardio = summary.loc["Cardiomegaly"]
    assert cardio["status"] == "too few cases"
    assert (cardio["positives"], cardio["patients"]) == (2, 1)
    assert np.isnan(cardio["hit_rate"])
    assert np.isnan(cardio["hit_rate_lower"])
    assert summary.loc["Edema", "status"] == "scored"
    assert (summary.loc["Edema", "positives"], summary.loc["Edema", "patients"]) == (30, 15)
    for column in ("miou", "hit_rate"):
        assert summary.loc["mean", column] == summary.loc["Edema", column]
        assert len(scores.mean_bootstrap[column]) == 200
    with pytest.raises(ValueError, match="min_positives"):
        score_chexlocalize(heatmaps, ground_truth, min_cases=0)


def test_the_means_interval_has_every_pathology_in_every_replicate() -> None:
    # One CXR of 30 has Cardiomegaly, a hit; every Edema map peaks outside its mask, a miss.
    # About a third of the replicates miss the Cardiomegaly CXR: the mean over both
    # pathologies is 0.5 in every replicate only if each keeps both (misses redrawn).
    heatmaps, ground_truth = _two_pathologies(cardiomegaly=1)
    for cxr, label in list(heatmaps):
        peak = np.zeros((12, 12))
        if label == "Edema":
            peak[11, 11] = 1.0  # masks span rows and columns 0 to 10
        else:
            rows, columns = np.nonzero(ground_truth[cxr][label])
            if rows.size:
                peak[rows[0], columns[0]] = 1.0
        heatmaps[(cxr, label)] = peak
    scores = score_chexlocalize(
        heatmaps, ground_truth, n_bootstrap=300, baselines=False, min_cases=1
    )
    assert scores.summary.loc["Cardiomegaly", "hit_rate"] == 1.0
    assert scores.summary.loc["Edema", "hit_rate"] == 0.0
    hit = scores.mean_bootstrap["hit_rate"]
    assert len(hit) == 300
    np.testing.assert_array_equal(hit, 0.5)
    summary = scores.summary
    assert (summary.loc["mean", "hit_rate_lower"], summary.loc["mean", "hit_rate_upper"]) == (
        0.5,
        0.5,
    )


def test_chance_and_leave_one_patient_out_prior() -> None:
    shape = (40, 40)
    left = np.zeros(shape, dtype=bool)
    left[10:30, 2:14] = True
    right = np.zeros(shape, dtype=bool)
    right[10:30, 26:38] = True
    ground_truth = {
        "patient1_study1_view1_frontal": {"Edema": left},
        "patient1_study2_view1_frontal": {"Edema": right},  # same patient: never its own prior
        "patient2_study1_view1_frontal": {"Edema": left},
        "patient3_study1_view1_frontal": {"Edema": left},
    }
    heatmaps = {(cxr, "Edema"): np.ones((2, 2)) for cxr in ground_truth}
    per_image = score_chexlocalize(heatmaps, ground_truth).per_image.set_index("cxr_id")
    assert (per_image["chance_hit"] == 240 / 1600).all()
    assert (per_image["chance_iou"] == 240 / 1600).all()
    # Patients 2 and 3 see the other two patients' masks: left, plus patient 1's left and right.
    assert per_image.loc["patient2_study1_view1_frontal", "prior_hit"] == 1.0
    # Patient 1 sees only the left masks of patients 2 and 3: its right mask is missed.
    assert per_image.loc["patient1_study2_view1_frontal", "prior_hit"] == 0.0
    assert per_image.loc["patient1_study1_view1_frontal", "prior_iou"] > 0.8
    assert per_image.loc["patient1_study2_view1_frontal", "prior_iou"] < 0.1


def test_prior_is_undefined_with_a_single_patient() -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:5, 2:5] = True
    per_image = score_chexlocalize(
        {("patient1_study1_view1_frontal", "Edema"): np.eye(3)},
        {"patient1_study1_view1_frontal": {"Edema": mask}},
    ).per_image
    assert math.isnan(per_image["prior_iou"].iloc[0])
    assert per_image["prior_hit"].iloc[0] == 0.0


def test_scoring_bad_input() -> None:
    mask = np.ones((4, 4), dtype=bool)
    truth = _truth(a=mask)
    with pytest.raises(ValueError, match="no heatmap for CXR 'a', 'Cardiomegaly'"):
        score_chexlocalize(
            {("a", "Edema"): np.eye(2), ("b", "Cardiomegaly"): np.eye(2)},
            {"a": {"Edema": mask, "Cardiomegaly": mask}},
        )
    with pytest.raises(ValueError, match="unknown pathology 'Fracture'"):
        score_chexlocalize({("a", "Fracture"): np.eye(2)}, truth)
    with pytest.raises(ValueError, match="the same map"):
        score_chexlocalize(
            {("a", "Lung Opacity"): np.eye(2), ("a", "Airspace Opacity"): np.eye(2)}, truth
        )
    with pytest.raises(TypeError, match="keyed by"):
        score_chexlocalize({"a": np.eye(2)}, truth)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="sizes="):
        score_chexlocalize(
            {("a", "Edema"): np.eye(2), ("z", "Edema"): np.eye(2)}, truth, true_positive_only=False
        )
    with pytest.raises(ValueError, match="n_bootstrap"):
        score_chexlocalize({("a", "Edema"): np.eye(2)}, truth, n_bootstrap=0)
    with pytest.raises(ValueError, match="finite"):
        score_chexlocalize({("a", "Edema"): np.eye(2)}, truth, thresholds={"Edema": math.nan})
    with pytest.raises(ValueError, match="heatmaps is empty"):
        score_chexlocalize({}, truth)


# -- tuning ------------------------------------------------------------------------------------


def _loop_tuning(
    heatmaps: dict[tuple[str, str], np.ndarray],
    ground_truth: dict[str, dict[str, np.ndarray]],
    probabilities: dict[tuple[str, str], float],
    cutoffs: list[float],
) -> tuple[dict[str, float], dict[str, float]]:
    """The reference scripts' loops: every image segmented again for every candidate."""
    thresholds: dict[str, float] = {}
    best_cutoffs: dict[str, float] = {}
    for label in ("Edema", "Cardiomegaly"):
        mious = []
        for threshold in DEFAULT_THRESHOLDS:
            ious = []
            for cxr, masks in ground_truth.items():
                truth = masks[label]
                pred = segment_heatmap(heatmaps[(cxr, label)], truth.shape, threshold=threshold)
                ok = pred.sum() and truth.sum()
                ious.append((pred & truth).sum() / (pred | truth).sum() if ok else np.nan)
            mious.append(np.nanmean(ious))
        thresholds[label] = DEFAULT_THRESHOLDS[mious.index(max(mious))]
        mious = []
        for cutoff in cutoffs:
            ious = []
            for cxr, masks in ground_truth.items():
                truth = masks[label]
                pred = segment_heatmap(heatmaps[(cxr, label)], truth.shape)
                if probabilities[(cxr, label)] < cutoff:
                    pred = np.zeros_like(pred)
                union = (pred | truth).sum()
                ious.append((pred & truth).sum() / union if union else np.nan)
            mious.append(np.nanmean(ious))
        best_cutoffs[label] = cutoffs[mious.index(max(mious))]
    return thresholds, best_cutoffs


def test_one_pass_tuning_equals_the_per_candidate_loop() -> None:
    rng = np.random.default_rng(11)
    ground_truth: dict[str, dict[str, np.ndarray]] = {}
    heatmaps: dict[tuple[str, str], np.ndarray] = {}
    probabilities: dict[tuple[str, str], float] = {}
    for index in range(16):
        cxr = f"patient{index:05d}_study1_view1_frontal"
        shape = (int(rng.integers(30, 50)), int(rng.integers(30, 50)))
        ground_truth[cxr] = {}
        for label in ("Edema", "Cardiomegaly"):
            mask = np.zeros(shape, dtype=bool)
            if rng.random() < 0.7:
                top, left = rng.integers(0, 15, 2)
                mask[top : top + 15, left : left + int(rng.integers(5, 20))] = True
            ground_truth[cxr][label] = mask
            small = rng.random((5, 5))
            small[top // 8, left // 8] += 1.5 * rng.random()
            heatmaps[(cxr, label)] = small
            probabilities[(cxr, label)] = float(rng.random())
    cutoffs = [0.0, 0.2, 0.4, 0.6, 0.8]
    tuning = tune_chexlocalize(heatmaps, ground_truth, probabilities=probabilities, cutoffs=cutoffs)
    expected_thresholds, expected_cutoffs = _loop_tuning(
        heatmaps, ground_truth, probabilities, cutoffs
    )
    assert tuning.thresholds == pytest.approx(expected_thresholds)
    assert tuning.cutoffs == pytest.approx(expected_cutoffs)
    curves = tuning.curves
    assert set(curves["parameter"]) == {"threshold", "cutoff"}
    assert len(curves) == 2 * (len(DEFAULT_THRESHOLDS) + len(cutoffs))
    # The tuned thresholds score at least as well as Otsu and every other candidate.
    best = score_chexlocalize(
        heatmaps, ground_truth, thresholds=tuning.thresholds, baselines=False, min_cases=1
    )
    for label, value in tuning.thresholds.items():
        rows = curves[(curves["label"] == label) & (curves["parameter"] == "threshold")]
        assert rows["miou"].max() == pytest.approx(best.summary.loc[label, "miou"])
        assert rows.loc[rows["miou"].idxmax(), "value"] == pytest.approx(value)


def test_tuning_files_round_trip_through_the_reference_formats(tmp_path: Path) -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[1:4, 1:4] = True
    heatmap = np.zeros((6, 6))
    heatmap[1:4, 1:4] = 1.0
    tuning = tune_chexlocalize(
        {("a", "Lung Opacity"): heatmap},
        {"a": {"Lung Opacity": mask}},
        probabilities={("a", "Lung Opacity"): 0.5},
    )
    written = tuning.to_csv(tmp_path)
    assert [path.name for path in written] == [
        "tuning_results.csv",
        "probability_tuning_results.csv",
    ]
    assert "Airspace Opacity" in (tmp_path / "tuning_results.csv").read_text()
    assert read_tuning_csv(tmp_path / "tuning_results.csv") == tuning.thresholds
    assert read_tuning_csv(tmp_path / "probability_tuning_results.csv") == tuning.cutoffs


def test_reading_the_reference_tuning_files(tmp_path: Path) -> None:
    thresholds = tmp_path / "tuning_results.csv"
    thresholds.write_text("threshold,task\n0.4,Airspace Opacity\n0.2,Cardiomegaly\n")
    assert read_tuning_csv(thresholds) == {"Lung Opacity": 0.4, "Cardiomegaly": 0.2}
    cutoffs = tmp_path / "probability_tuning_results.csv"
    cutoffs.write_text(
        "prob_threshold,mIoU,task\n0.0,0.1,Edema\n0.1,0.3,Edema\n0.2,0.3,Edema\n0.0,0.2,Atelectasis\n"
    )
    assert read_tuning_csv(cutoffs) == {"Edema": 0.1, "Atelectasis": 0.0}
    for text, match in [
        ("a,b\n1,2\n", "expected columns"),
        ("threshold,task\n0.4,Pneumonia\n", "line 2, column 'task'"),
        ("threshold,task\nhigh,Edema\n", r"line 2, column 'threshold': 'high'"),
        ("threshold,task\n0.4,Edema\n0.5,Edema\n", "appears 2 times"),
        ("threshold,task\n", "no rows"),
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(ValueError, match=match):
            read_tuning_csv(bad)


# -- the whole pipeline on the synthetic set ------------------------------------------------------


def test_localize_command_writes_tables_figure_and_overlays(
    chexlocalize_set: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, model = chexlocalize_set
    truth = root / "data" / "CheXpert-v1.0-small" / "gt_segmentations_val.json"
    out = root / "out"
    arguments = ["localize", "--model", str(model), "--data", str(root / "data")]
    arguments += ["--ground-truth", str(truth), "--out", str(out), "--overlays", "2"]
    arguments += ["--bootstrap", "50", "--tune", "--save-segmentations"]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "prior_miou" in printed
    assert "mean" in printed
    summary = pd.read_csv(out / "summary.csv", index_col="label")
    assert list(summary.index)[-1] == "mean"
    assert {"miou", "miou_lower", "hit_rate", "prior_miou", "chance_hit_rate"} <= set(summary)
    # Counts per pathology, printed and saved; those below the minimum are named and why.
    assert {"status", "positives", "patients"} <= set(summary)
    assert "positives" in printed
    assert "patients" in printed
    few = summary.drop(index="mean").query("status == 'too few cases'")
    assert len(few)
    assert few["miou"].isna().all()
    assert "too few cases, not scored and left out of the mean" in printed
    assert f"{few.index[0]} ({few['positives'].iloc[0]} X-rays with a finding of " in printed
    reference = pd.read_csv(out / "iou_summary_results.csv")
    assert list(reference.columns) == ["name", "lower", "mean", "upper"]
    assert "Airspace Opacity" in set(reference["name"])
    assert len(pd.read_csv(out / "iou_bootstrap_results_per_cxr.csv")) == 50
    assert (out / "localization.png").stat().st_size > 10_000
    assert len(list((out / "overlays").glob("*.png"))) == 2
    assert read_tuning_csv(out / "tuning_results.csv")
    exported = read_chexlocalize(out / "saliency_segmentations.json")
    ground_truth = read_chexlocalize(truth)
    assert set(ground_truth) <= set(exported)
    cxr = next(iter(ground_truth))
    assert exported.size(cxr) == ground_truth.size(cxr)
    # Scoring the exported segmentations as masks gives the same IoUs as the heatmaps did.
    per_image = pd.read_csv(out / "per_image.csv")
    row = per_image.dropna(subset=["iou"]).iloc[0]
    predicted = exported[row["cxr_id"]][row["label"]]
    truth_mask = ground_truth[row["cxr_id"]][row["label"]]
    iou = (predicted & truth_mask).sum() / (predicted | truth_mask).sum()
    assert iou == pytest.approx(row["iou"])


def test_localize_refuses_ground_truth_of_other_images(
    chexlocalize_set: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, model = chexlocalize_set
    truth = root / "data" / "CheXpert-v1.0-small" / "gt_segmentations_val.json"
    data = json.loads(truth.read_text())
    cxr = next(iter(data))
    stranger = tmp_path / "stranger.json"
    stranger.write_text(json.dumps({"patient99999_study1_view1_frontal": data[cxr]}))
    resized = tmp_path / "resized.json"
    write_chexlocalize(resized, {cxr: {"Edema": np.zeros((7, 9), dtype=bool)}})
    base = ["localize", "--model", str(model), "--data", str(root / "data"), "--out"]
    base += [str(tmp_path / "out"), "--ground-truth"]
    assert main([*base, str(stranger)]) == 1
    assert "CXR 'patient99999_study1_view1_frontal' has no image" in capsys.readouterr().err
    assert main([*base, str(resized)]) == 1
    error = capsys.readouterr().err
    assert f"CXR '{cxr}', field 'size': [7, 9]" in error
    assert str(resized) in error


def test_ground_truth_overlay_draws_the_contour() -> None:
    image = np.full((60, 80), 100, dtype=np.uint8)
    mask = np.zeros((60, 80), dtype=bool)
    mask[20:40, 30:50] = True
    picture = np.asarray(ground_truth_overlay(image, np.eye(4), mask, size=80))
    assert picture.shape == (60, 80, 3)
    cyan = (picture[..., 0] == 0) & (picture[..., 1] == 255) & (picture[..., 2] == 255)
    assert cyan[20, 30:50].all()
    assert not cyan[30, 40]
    with pytest.raises(ValueError, match="truth has shape"):
        ground_truth_overlay(image, np.eye(4), mask[1:])


def test_every_label_is_scored_under_its_chexpert_name() -> None:
    mask = np.zeros((5, 5), dtype=bool)
    mask[1:3, 1:3] = True
    heatmaps = {("a", label): np.eye(5) for label in LOCALIZATION_LABELS}
    heatmaps[("a", "Airspace Opacity")] = heatmaps.pop(("a", "Lung Opacity"))
    scores = score_chexlocalize(heatmaps, {"a": dict.fromkeys(LOCALIZATION_LABELS, mask)})
    assert list(scores.summary.index) == [*LOCALIZATION_LABELS, "mean"]


def test_plain_dict_ground_truth_may_spell_airspace_opacity() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[1:4, 1:4] = True
    heatmap = np.zeros((6, 6))
    heatmap[1:3, 1:3] = 1.0
    heatmaps = {("a", "Lung Opacity"): heatmap, ("b", "Lung Opacity"): heatmap}
    empty = np.zeros((6, 6), dtype=bool)
    for full in (False, True):
        chexpert = score_chexlocalize(
            heatmaps,
            {"a": {"Lung Opacity": mask}, "b": {"Lung Opacity": empty}},
            true_positive_only=not full,
        )
        chexlocalize = score_chexlocalize(
            heatmaps,
            {"a": {"Airspace Opacity": mask}, "b": {"Airspace Opacity": empty}},
            true_positive_only=not full,
        )
        pd.testing.assert_frame_equal(chexpert.per_image, chexlocalize.per_image)
        pd.testing.assert_frame_equal(chexpert.summary, chexlocalize.summary)
        assert chexlocalize.per_image["gt_pixels"].tolist() == [9, 0]
    with pytest.raises(ValueError, match="'Lung Opacity' and 'Airspace Opacity'"):
        score_chexlocalize(heatmaps, {"a": {"Lung Opacity": mask, "Airspace Opacity": mask}})


def test_full_set_bootstraps_each_metric_over_the_references_rows() -> None:
    # eval.py's IoU table holds every CXR with a segmentation (on the full set, those without
    # ground truth too); its hit table only the ground-truth file's CXRs. Each is resampled
    # with the same seed over its own rows.
    rng = np.random.default_rng(11)
    shape = (10, 10)
    ground_truth: dict[str, dict[str, np.ndarray]] = {}
    heatmaps: dict[tuple[str, str], np.ndarray] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for index in range(24):
        cxr = f"patient{index:05d}_study1_view1_frontal"
        heatmaps[(cxr, "Edema")] = rng.random((3, 3))
        if index % 3 == 0:  # no ground-truth entry, interleaved with those that have one
            sizes[cxr] = shape
            continue
        mask = np.zeros(shape, dtype=bool)
        if index % 5:
            top, left = rng.integers(0, 5, 2)
            mask[top : top + 5, left : left + 5] = True
        ground_truth[cxr] = {"Edema": mask}
    scores = score_chexlocalize(
        heatmaps, ground_truth, true_positive_only=False, sizes=sizes, seed=4, baselines=False
    )
    wide = {
        metric: scores.per_image.pivot(index="cxr_id", columns="label", values=metric)
        for metric in ("iou", "hit")
    }
    tables = {
        "miou": wide["iou"].sort_index(),  # all 24 CXRs
        "hit_rate": wide["hit"].loc[sorted(ground_truth)],  # the 16 of the ground truth
    }
    assert len(tables["miou"]) == 24
    assert len(tables["hit_rate"]) == 16
    for column, table in tables.items():
        reference = _reference_bootstrap(table, seed=4, replicates=1000)
        lower, upper = reference.loc["lower", "Edema"], reference.loc["upper", "Edema"]
        assert scores.summary.loc["Edema", f"{column}_lower"] == pytest.approx(lower, rel=1e-12)
        assert scores.summary.loc["Edema", f"{column}_upper"] == pytest.approx(upper, rel=1e-12)
        assert scores.summary.loc["Edema", column] == pytest.approx(table["Edema"].mean())
    replicates = scores.bootstrap["hit_rate"]["Edema"].to_numpy()
    reference_means = _reference_replicates(tables["hit_rate"], seed=4, replicates=1000)
    assert replicates == pytest.approx(reference_means["Edema"].to_numpy(), rel=1e-12, nan_ok=True)


def _reference_replicates(frame: pd.DataFrame, seed: int, replicates: int) -> pd.DataFrame:
    """eval.py's bootstrap_metric: the replicate means."""
    np.random.seed(seed)  # noqa: NPY002 - the reference's legacy global generator
    records = []
    for _ in range(replicates):
        rows = np.random.choice(len(frame), size=len(frame), replace=True)  # noqa: NPY002
        records.append(frame.iloc[rows].mean().to_dict())
    return pd.DataFrame.from_records(records)
