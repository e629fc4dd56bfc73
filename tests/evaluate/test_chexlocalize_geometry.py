"""Geometric features of findings and their Spearman correlations with the scores."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from chexviz import feature_correlations, geometric_features, write_chexlocalize
from chexviz.evaluate.chexlocalize.geometry import FEATURES, shape_features

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_two_disjoint_squares_are_two_instances() -> None:
    mask = np.zeros((100, 100), dtype=bool)
    mask[10:20, 10:20] = mask[50:60, 50:60] = True
    features = shape_features(mask)
    assert features["instances"] == 2
    assert features["relative_size"] == 200 / 10_000
    # The reference measures the longest contour only: one square, so a square rectangle.
    assert features["elongation"] == 1.0
    assert features["irrectangularity"] == 0.0


def test_rectangle_elongation_through_pixel_centres() -> None:
    # cv2 contours pass through the boundary pixels' centres: 11x41 pixels span 10x40.
    mask = np.zeros((60, 80), dtype=bool)
    mask[5:16, 20:61] = True
    features = shape_features(mask)
    assert features["elongation"] == pytest.approx(4.0)
    assert features["irrectangularity"] == pytest.approx(0.0)
    # ... so a 10x40 pixel block measures 9x39, as the reference computes it.
    block = np.zeros((60, 80), dtype=bool)
    block[5:15, 20:60] = True
    assert shape_features(block)["elongation"] == pytest.approx(39 / 9)


def test_disc_irrectangularity_is_one_minus_pi_over_four() -> None:
    rows, cols = np.ogrid[-300:301, -300:301]
    disc = np.hypot(rows, cols) <= 250
    features = shape_features(disc)
    assert features["instances"] == 1
    assert features["elongation"] == pytest.approx(1.0, abs=0.01)
    assert features["irrectangularity"] == pytest.approx(1 - math.pi / 4, abs=0.002)


def test_degenerate_and_empty_masks() -> None:
    line = np.zeros((10, 10), dtype=bool)
    line[5, 2:8] = True  # no area: the reference divides by zero
    features = shape_features(line)
    assert math.isnan(features["elongation"])
    assert math.isnan(features["irrectangularity"])
    with pytest.raises(ValueError, match="empty mask"):
        shape_features(np.zeros((4, 4)))


def test_instances_count_polygons_when_annotations_are_given(tmp_path: Path) -> None:
    mask = np.zeros((40, 40), dtype=bool)
    mask[5:15, 5:15] = mask[20:30, 20:35] = True
    truth = {"patient1_study1_view1_frontal": {"Edema": mask}}
    gt = write_chexlocalize(tmp_path / "gt.json", truth)
    annotations = write_chexlocalize(tmp_path / "ann.json", truth, format="annotations")
    features = geometric_features(gt)
    assert list(features.columns) == ["cxr_id", "label", *FEATURES]
    assert features[["label", "instances"]].values.tolist() == [["Edema", 2.0]]
    assert geometric_features(gt, annotations=annotations)["instances"].tolist() == [2.0]
    with pytest.raises(ValueError, match="needs a polygon"):
        geometric_features(gt, annotations=gt)


def test_correlations_are_pooled_spearman_with_the_reference_interval() -> None:
    rng = np.random.default_rng(0)
    n = 30
    features = pd.DataFrame(
        {
            "cxr_id": [f"p{i}" for i in range(n)],
            "label": ["Edema"] * 15 + ["Cardiomegaly"] * 15,
            **{name: rng.random(n) for name in FEATURES},
        }
    )
    method = features[["cxr_id", "label"]].assign(
        iou=features["relative_size"] + 0.1 * rng.random(n), hit=rng.integers(0, 2, n) * 1.0
    )
    method.loc[3, "iou"] = np.nan  # omitted, as spearmanr(nan_policy="omit")
    human = method.assign(iou=0.9, hit=1.0)
    table = feature_correlations(features, {"gradcam": method}, human=human)
    assert set(table["outcome"]) == {"iou", "hit", "iou_gap", "hit_gap"}
    row = table.set_index(["outcome", "feature"]).loc[("iou", "relative_size")]
    kept = method["iou"].notna()
    expected = stats.spearmanr(features.loc[kept, "relative_size"], method.loc[kept, "iou"])
    assert row["n"] == n - 1
    assert row["rho"] == pytest.approx(expected.statistic)
    assert row["p_value"] == pytest.approx(expected.pvalue)
    delta = 1.96 / math.sqrt(n - 1 - 3)
    assert row["rho_lower"] == pytest.approx(math.tanh(math.atanh(row["rho"]) - delta))
    gap = table.set_index(["outcome", "feature"]).loc[("iou_gap", "relative_size")]
    assert gap["rho"] == pytest.approx(-row["rho"])  # human constant: the gap reverses the ranks
    with pytest.raises(ValueError, match=r"gradcam.*no scores for 1 findings.*'p0'"):
        feature_correlations(features, {"gradcam": method.iloc[1:]})
