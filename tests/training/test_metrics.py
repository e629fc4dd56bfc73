import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from chexviz.data.labels import CHEXPERT_LABELS, COMPETITION_LABELS
from chexviz.training.metrics import Metrics, compute_metrics, evaluation_targets

NAN = math.nan
LABELS = ("A", "B", "C")


@pytest.fixture
def hand_case() -> Metrics:
    # Label A: perfectly ranked. Label B: AUROC 0.5 (2 of 4 pairs ordered), its last row is
    # ignored despite a high score. Label C: negatives only.
    probs = np.array(
        [[0.9, 0.2, 0.1], [0.8, 0.6, 0.2], [0.3, 0.7, 0.6], [0.1, 0.4, 0.3], [0.2, 0.99, 0.1]]
    )
    targets = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0], [0, NAN, 0]])
    return compute_metrics(probs, targets, 0.5, LABELS, loss=0.25)


def test_hand_checked_values(hand_case):
    m = hand_case
    np.testing.assert_allclose(m.auroc, [1.0, 0.5, NAN])
    # A: predictions [1,1,0,0,0] all right; B: [0,1,1,0] vs [0,1,0,1]; C: one false positive.
    np.testing.assert_allclose(m.accuracy, [1.0, 0.5, 0.8])
    np.testing.assert_allclose(m.f1, [1.0, 0.5, 0.0])
    np.testing.assert_allclose(m.all_negative_accuracy, [0.6, 0.5, 1.0])
    np.testing.assert_allclose(m.majority_accuracy, [0.6, 0.5, 1.0])
    np.testing.assert_array_equal(m.support, [5, 4, 5])
    np.testing.assert_array_equal(m.positives, [2, 2, 0])
    assert m.undefined_auroc == ("C",)
    assert m.macro_auroc == pytest.approx(0.75)
    assert m.macro_accuracy == pytest.approx((1.0 + 0.5 + 0.8) / 3)
    assert m.macro_f1 == pytest.approx(0.5)
    assert m.macro_all_negative_accuracy == pytest.approx(0.7)
    assert m.loss == 0.25


def test_f1_undefined_without_positives_or_predictions():
    m = compute_metrics(np.array([[0.1], [0.2]]), np.array([[0.0], [0.0]]), [0.5], ["X"])
    assert math.isnan(m.f1[0])
    assert math.isnan(m.macro_f1)
    assert math.isnan(m.macro_auroc)
    assert m.accuracy[0] == 1.0


def test_fully_ignored_label_is_all_nan():
    m = compute_metrics(
        np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([[NAN, 1], [NAN, 0]]), 0.5, "XY"
    )
    per_label = (
        m.auroc,
        m.accuracy,
        m.binary_accuracy,
        m.f1,
        m.all_negative_accuracy,
        m.majority_accuracy,
    )
    assert all(math.isnan(v[0]) for v in per_label)
    assert m.support[0] == 0
    assert m.macro_accuracy == 1.0


def test_per_label_thresholds_are_applied_with_greater_or_equal():
    probs = np.array([[0.3, 0.3], [0.7, 0.7]])
    m = compute_metrics(probs, np.array([[1, 1], [1, 1]]), [0.3, 0.8], "XY")
    np.testing.assert_allclose(m.accuracy, [1.0, 0.0])
    np.testing.assert_allclose(m.thresholds, [0.3, 0.8])


def test_to_frame_has_label_rows_and_macro(hand_case):
    frame = hand_case.to_frame()
    assert list(frame.index) == [*LABELS, "macro"]
    assert list(frame.columns) == [
        "auroc",
        "accuracy",
        "binary_accuracy",
        "f1",
        "all_negative_accuracy",
        "majority_accuracy",
        "support",
        "positives",
        "threshold",
    ]
    assert frame.loc["macro", "auroc"] == pytest.approx(0.75)
    assert frame.loc["macro", "support"] == 14
    assert math.isnan(frame.loc["C", "auroc"])
    assert list(hand_case.to_frame(macro=False).index) == list(LABELS)


def test_dict_is_strict_json_and_round_trips(hand_case):
    data = json.loads(json.dumps(hand_case.to_dict(), allow_nan=False))
    assert data["auroc"][2] is None
    assert data["undefined_auroc"] == ["C"]
    assert data["macro"]["auroc"] == pytest.approx(0.75)
    back = Metrics.from_dict(data)
    assert back.labels == hand_case.labels
    names = ("auroc", "accuracy", "binary_accuracy", "f1", "all_negative_accuracy")
    for name in (*names, "majority_accuracy", "thresholds"):
        np.testing.assert_array_equal(getattr(back, name), getattr(hand_case, name))
    np.testing.assert_array_equal(back.support, hand_case.support)
    assert back.loss == hand_case.loss


@pytest.mark.parametrize(
    ("probs", "targets", "labels", "match"),
    [
        (np.zeros((2, 2)), np.zeros((3, 2)), "XY", "shape"),
        (np.zeros((2, 2)), np.zeros((2, 2)), "XYZ", "3 labels"),
        (np.array([[0.5, 1.5]]), np.zeros((1, 2)), "XY", "label 'Y'.*within"),
        (np.array([[0.5, NAN]]), np.zeros((1, 2)), "XY", "label 'Y'"),
        (np.zeros((2, 2)), np.array([[0, 0], [0, -1]]), "XY", "label 'Y' at row 1"),
        (np.zeros(2), np.zeros(2), "XY", r"\[N, L\]"),
    ],
)
def test_bad_input_is_named(probs, targets, labels, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(probs, targets, 0.5, labels)


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float64, (12, 2), elements=st.floats(0, 1)),
    arrays(np.int8, (12, 2), elements=st.integers(-1, 1)),
    st.floats(0.05, 0.95),
)
def test_agrees_with_scikit_learn(probs, codes, threshold):
    targets = np.where(codes < 0, np.nan, codes)
    m = compute_metrics(probs, targets, threshold, "XY")
    for j in range(2):
        keep = codes[:, j] >= 0
        truth, score = codes[keep, j], probs[keep, j]
        if not keep.any():
            assert math.isnan(m.accuracy[j])
            continue
        predicted = (score >= threshold).astype(int)
        assert m.accuracy[j] == pytest.approx(accuracy_score(truth, predicted))
        expected_f1 = f1_score(truth, predicted, zero_division=np.nan)
        assert m.f1[j] == pytest.approx(expected_f1, nan_ok=True)
        assert m.all_negative_accuracy[j] == pytest.approx(np.mean(truth == 0))
        # the best constant predictor: no constant answer scores more on these entries
        constant = max(accuracy_score(truth, np.full_like(truth, c)) for c in (0, 1))
        assert m.majority_accuracy[j] == pytest.approx(constant)
        assert m.binary_accuracy[j] == pytest.approx(accuracy_score(truth, score > 0.5))
        if len(set(truth.tolist())) == 2:
            assert m.auroc[j] == pytest.approx(roc_auc_score(truth, score))
        else:
            assert math.isnan(m.auroc[j])


def test_study_accuracy_is_keras_binary_accuracy_at_one_half():
    # Keras: mean(y_true == (y_pred > 0.5)); a probability of exactly 0.5 is a negative there,
    # while the threshold rule (p >= t) calls it positive.
    probs = np.array([[0.5], [0.51], [0.2], [0.9]])
    targets = np.array([[1.0], [1.0], [0.0], [0.0]])
    m = compute_metrics(probs, targets, 0.5, ["X"])
    assert m.binary_accuracy[0] == pytest.approx(0.5)  # 0.5 -> negative (miss), 0.9 wrong
    assert m.accuracy[0] == pytest.approx(0.75)  # 0.5 >= 0.5 -> positive (hit)
    tuned = compute_metrics(probs, targets, 0.95, ["X"])
    assert tuned.binary_accuracy[0] == m.binary_accuracy[0]  # independent of the thresholds
    assert tuned.macro_binary_accuracy == pytest.approx(0.5)


def test_majority_class_beats_all_negative_where_positives_dominate():
    # "Support Devices" is positive in more than half of CheXpert's training images
    targets = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    m = compute_metrics(np.full((4, 2), 0.1), targets, 0.5, ["Support Devices", "Edema"])
    np.testing.assert_allclose(m.all_negative_accuracy, [0.25, 0.75])
    np.testing.assert_allclose(m.majority_accuracy, [0.75, 0.75])
    assert m.macro_majority_accuracy == pytest.approx(0.75)
    assert m.macro_all_negative_accuracy == pytest.approx(0.5)


def test_competition_auroc_is_the_mean_over_the_five_labels():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, size=(40, 14)).astype(float)
    probs = np.clip(targets * 0.3 + rng.random((40, 14)) * 0.7, 0, 1)
    m = compute_metrics(probs, targets, 0.5, CHEXPERT_LABELS)
    five = [m.auroc[CHEXPERT_LABELS.index(name)] for name in COMPETITION_LABELS]
    assert m.competition_auroc == pytest.approx(np.mean(five))
    assert m.competition_auroc != pytest.approx(m.macro_auroc)
    assert Metrics.from_dict(m.to_dict()).competition_auroc == m.competition_auroc
    assert m.to_dict()["competition_auroc"] == pytest.approx(m.competition_auroc)
    assert math.isnan(compute_metrics(probs[:, :2], targets[:, :2], 0.5, "XY").competition_auroc)


def test_dicts_written_before_the_added_metrics_still_read(hand_case):
    data = hand_case.to_dict()
    for name in ("binary_accuracy", "majority_accuracy"):
        del data[name]
    back = Metrics.from_dict(data)
    assert np.isnan(back.binary_accuracy).all()
    assert np.isnan(back.majority_accuracy).all()
    np.testing.assert_array_equal(back.accuracy, hand_case.accuracy)


class _Cells:
    """A stand-in data set: raw cells, label names and the labels it does not annotate."""

    def __init__(self, raw: np.ndarray, labels: tuple[str, ...], unannotated: list[str]) -> None:
        self.raw_labels = raw
        self.labels = labels
        self.unannotated = unannotated


def test_evaluation_targets_leave_unannotated_labels_out_and_blank_cells_negative() -> None:
    raw = np.array([[1.0, np.nan, np.nan], [-1.0, 0.0, np.nan]], dtype=np.float32)
    data = _Cells(raw, ("a", "b", "c"), unannotated=["c"])
    negative = evaluation_targets(data)
    assert negative is not None
    np.testing.assert_array_equal(negative[:, :2], [[1.0, 0.0], [0.0, 0.0]])
    assert np.isnan(negative[:, 2]).all()  # not annotated: no answer, not "negative"
    excluded = evaluation_targets(data, uncertain="exclude")
    assert excluded is not None
    assert np.isnan(excluded[1, 0])
    assert np.isnan(excluded[:, 2]).all()
