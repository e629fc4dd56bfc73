import logging
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from chexviz.training.metrics import compute_metrics
from chexviz.training.thresholds import tune_thresholds

NAN = math.nan


def test_hand_checked_f1_and_youden():
    # Cuts (score >= t): 0.8 -> F1 2/3, J 0.5; 0.4 -> F1 1/2, J 0; 0.35 -> F1 4/5, J 0.5;
    # 0.1 -> F1 2/3, J 0. Youden ties at 0.8 and 0.35: the higher threshold wins.
    probs = np.array([[0.1], [0.4], [0.35], [0.8]])
    targets = np.array([[0], [0], [1], [1]])
    assert tune_thresholds(probs, targets, metric="f1")[0] == pytest.approx(0.35)
    assert tune_thresholds(probs, targets, metric="youden")[0] == pytest.approx(0.8)


def test_ignored_entries_do_not_count():
    probs = np.array([[0.1], [0.4], [0.35], [0.8], [0.9]])
    targets = np.array([[0], [0], [1], [1], [NAN]])
    assert tune_thresholds(probs, targets)[0] == pytest.approx(0.35)


def test_single_class_label_keeps_default_and_warns(caplog):
    probs = np.array([[0.2, 0.3], [0.9, 0.6]])
    targets = np.array([[0, 0], [1, NAN]])
    with caplog.at_level(logging.WARNING, logger="chexviz.training.thresholds"):
        result = tune_thresholds(probs, targets, default=[0.5, 0.42], labels=["Edema", "Fracture"])
    assert result.dtype == np.float32
    assert result[0] == pytest.approx(0.9)
    assert result[1] == pytest.approx(0.42)
    assert "Fracture" in caplog.text
    assert "Edema" not in caplog.text


def test_bad_arguments():
    with pytest.raises(ValueError, match="metric"):
        tune_thresholds(np.zeros((2, 1)), np.zeros((2, 1)), metric="accuracy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        tune_thresholds(np.zeros((2, 1)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="label names"):
        tune_thresholds(np.zeros((2, 1)), np.zeros((2, 1)), labels=["a", "b"])


def _youden(probs, truth, threshold):
    predicted = probs >= threshold
    return predicted[truth].mean() - predicted[~truth].mean()


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float32, 16, elements=st.floats(0, 1, width=32)),
    arrays(np.bool_, 16),
    st.floats(0, 1),
)
def test_tuned_threshold_beats_any_other(scores, truth, other):
    if truth.all() or not truth.any():
        return
    probs, targets = scores[:, None], truth[:, None].astype(np.float32)
    f1_thr = tune_thresholds(probs, targets, metric="f1")
    best = compute_metrics(probs, targets, f1_thr, ["x"]).f1[0]
    rival = compute_metrics(probs, targets, [other], ["x"]).f1[0]
    assert best >= (0.0 if math.isnan(rival) else rival) - 1e-12
    j_thr = tune_thresholds(probs, targets, metric="youden")[0]
    assert _youden(scores, truth, j_thr) >= _youden(scores, truth, other) - 1e-12
    assert j_thr in scores
