"""External validation: patient bootstrap AUROC, shared labels, internal figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import Subset

from chexviz.data.labels import CHEXPERT_LABELS
from chexviz.data.mimic import MIMICCXRDataset
from chexviz.data.nih import NIHChestXray14Dataset
from chexviz.data.synthetic_external import make_synthetic_mimic, make_synthetic_nih
from chexviz.evaluate.external import (
    CHANCE_AUROC,
    bootstrap_auroc,
    internal_metrics_metadata,
    read_internal_metrics,
    validate_externally,
)
from chexviz.models.classifier import MultiLabelClassifier
from chexviz.training.metrics import compute_metrics
from chexviz.training.trainer import Trainer


def _scores(patients: int, per_patient: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Noisy scores of 2 labels where every patient's images share target and score."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, size=(patients, 2)).astype(np.float64)
    score = truth + rng.normal(0, 1.0, size=truth.shape)
    groups = np.repeat([f"p{i}" for i in range(patients)], per_patient)
    return np.repeat(score, per_patient, axis=0), np.repeat(truth, per_patient, axis=0), groups


def test_point_estimates_are_scikit_learns() -> None:
    probs, targets, groups = _scores(40, 1)
    result = bootstrap_auroc(probs, targets, groups, replicates=0)
    for j in range(2):
        assert result["auroc"][j] == pytest.approx(roc_auc_score(targets[:, j], probs[:, j]))
    assert result["mean"] == pytest.approx(result["auroc"].mean())
    assert math.isnan(result["mean_low"])
    assert result["replicates"] == 0


def test_intervals_resample_patients_not_images() -> None:
    # Ten images per patient carry no more information than one: the patient bootstrap
    # interval stays as wide as with one image each, an image bootstrap would shrink it.
    probs, targets, groups = _scores(30, 10)
    by_patient = bootstrap_auroc(probs, targets, groups, replicates=300, seed=1)
    one_each = bootstrap_auroc(*_scores(30, 1), replicates=300, seed=1)
    by_image = bootstrap_auroc(probs, targets, np.arange(len(probs)), replicates=300, seed=1)
    width = by_patient["high"] - by_patient["low"]
    np.testing.assert_allclose(by_patient["auroc"], one_each["auroc"])
    np.testing.assert_allclose(width, one_each["high"] - one_each["low"], atol=0.08)
    assert (by_image["high"] - by_image["low"] < 0.6 * width).all()
    assert (by_patient["low"] <= by_patient["auroc"]).all()
    assert (by_patient["auroc"] <= by_patient["high"]).all()
    assert by_patient["mean_low"] <= by_patient["mean"] <= by_patient["mean_high"]


def test_perfect_scores_and_undefined_labels() -> None:
    targets = np.array([[0, 1, np.nan], [1, 1, np.nan], [0, 1, 1], [1, 1, 0]], dtype=float)
    probs = np.array([[0.1, 0.5, 0.5], [0.9, 0.5, 0.5], [0.2, 0.5, 0.6], [0.8, 0.5, 0.4]])
    result = bootstrap_auroc(
        probs, targets, ["a", "b", "c", "d"], replicates=200, min_positives=1, min_negatives=1
    )
    assert result["auroc"][0] == 1.0
    assert (result["low"][0], result["high"][0]) == (1.0, 1.0)
    # A single class: undefined, not 0 or 1, and out of the mean.
    assert math.isnan(result["auroc"][1])
    assert result["mean"] == pytest.approx(np.nanmean(result["auroc"]))
    with pytest.raises(ValueError, match="disagree"):
        bootstrap_auroc(probs, targets[:3], ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_auroc(probs, targets, ["a"] * 4, confidence=1.5)


@pytest.fixture(scope="module")
def nih(tmp_path_factory: pytest.TempPathFactory) -> NIHChestXray14Dataset:
    root = make_synthetic_nih(tmp_path_factory.mktemp("ext") / "nih", patients=30, image_size=64)
    return NIHChestXray14Dataset(root, image_size=32, labels=CHEXPERT_LABELS)


def test_validation_scores_only_shared_labels(nih: NIHChestXray14Dataset, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", image_size=32)
    internal = compute_metrics(
        np.full((4, 14), 0.5), np.tile([[0.0], [1.0]], (2, 14)), 0.5, CHEXPERT_LABELS
    )
    path = model.save(
        tmp_path / "m.safetensors", extra_metadata=internal_metrics_metadata(internal)
    )
    carried = read_internal_metrics(path)
    assert carried is not None
    assert carried.labels == CHEXPERT_LABELS
    result = validate_externally(
        model,
        nih,
        name="NIH",
        replicates=50,
        device="cpu",
        progress=False,
        internal=carried,
        min_positives=1,
        min_negatives=1,
    )
    unannotated = set(nih.unannotated)
    assert not unannotated & set(result.shared_labels)
    assert set(result.shared_labels) <= {
        "Cardiomegaly",
        "Lung Lesion",
        "Edema",
        "Consolidation",
        "Pneumonia",
        "Atelectasis",
        "Pneumothorax",
        "Pleural Effusion",
    }
    assert result.images == len(nih)
    assert result.patients == len(set(nih.patient_ids))
    frame = result.to_frame()
    assert list(frame.columns) == [
        "source",
        "images",
        "positives",
        "negatives",
        "patients",
        "status",
        "auroc",
        "ci_low",
        "ci_high",
        "chance",
        "internal_auroc",
    ]
    assert (frame["chance"] == CHANCE_AUROC).all()
    assert frame.loc["Lung Lesion", "source"] == "Mass | Nodule (union)"
    assert frame.loc["Pleural Effusion", "source"] == "Effusion"
    assert frame.loc["Fracture", "source"] == "(not annotated)"
    assert math.isnan(frame.loc["Fracture", "auroc"])
    last = frame.iloc[-1]
    assert frame.index[-1] == f"mean ({len(result.shared_labels)} shared)"
    assert last["auroc"] == pytest.approx(frame.loc[list(result.shared_labels), "auroc"].mean())
    assert last["internal_auroc"] == pytest.approx(0.5)  # the constant internal scores
    assert json.loads(json.dumps(result.to_dict()))["shared_labels"] == list(result.shared_labels)
    # A Subset is scored on its own items only.
    half = validate_externally(
        model, Subset(nih, list(range(10))), replicates=0, device="cpu", progress=False
    )
    assert half.images == 10
    assert read_internal_metrics(model.save(tmp_path / "plain.safetensors")) is None


def test_labels_must_be_the_models(nih: NIHChestXray14Dataset) -> None:
    model = MultiLabelClassifier("simple_cnn", image_size=32, labels=("Edema", "Atelectasis"))
    with pytest.raises(ValueError, match=r"build it with labels=model\.labels"):
        validate_externally(model, nih, replicates=0, device="cpu", progress=False)
    with pytest.raises(TypeError, match="chexviz data set"):
        validate_externally(model, [1, 2], replicates=0, device="cpu")  # type: ignore[arg-type]


def test_a_label_with_two_positives_is_too_few_and_out_of_the_mean() -> None:
    probs, targets, groups = _scores(40, 1)
    targets[:, 1] = 0.0
    targets[:2, 1] = 1.0  # two positive patients: an AUROC, but from a handful of cases
    result = bootstrap_auroc(probs, targets, groups, replicates=100, seed=0)
    assert result["scored"].tolist() == [True, False]
    assert result["positive_patients"].tolist()[1] == 2
    assert result["negatives"].tolist()[1] == 38
    assert math.isnan(result["auroc"][1])
    assert math.isnan(result["low"][1])
    assert result["mean"] == pytest.approx(result["auroc"][0])
    assert result["replicates"] == 100
    with pytest.raises(ValueError, match="min_positives"):
        bootstrap_auroc(probs, targets, groups, min_positives=0)


def test_the_means_interval_uses_every_replicate() -> None:
    # Two positive patients of 40 miss a replicate about 13% of the time: such replicates are
    # drawn again, not dropped, so every requested replicate has every scored label.
    probs, targets, groups = _scores(40, 1)
    targets[:, 1] = 0.0
    targets[:2, 1] = 1.0
    result = bootstrap_auroc(
        probs, targets, groups, replicates=300, seed=0, min_positives=1, min_negatives=1
    )
    assert result["scored"].all()
    assert result["replicates"] == 300
    assert result["redrawn"] > 0
    assert result["mean_low"] <= result["mean"] <= result["mean_high"]


def test_one_answer_key_whatever_the_training_policy(tmp_path: Path) -> None:
    root = make_synthetic_mimic(tmp_path / "mimic", patients=40)
    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", image_size=32)
    figures = {}
    for policy in ("zeros", "ones", "ignore"):
        data = MIMICCXRDataset(root, image_size=32, uncertainty=policy, progress=False)
        figures[policy] = validate_externally(
            model, data, replicates=20, device="cpu", progress=False
        )
    zeros = figures["zeros"]
    for policy in ("ones", "ignore"):
        np.testing.assert_array_equal(figures[policy].auroc, zeros.auroc)
        np.testing.assert_array_equal(figures[policy].positives, zeros.positives)
        assert figures[policy].mean == zeros.mean
        assert (figures[policy].mean_low, figures[policy].mean_high) == (
            zeros.mean_low,
            zeros.mean_high,
        )
    ones = MIMICCXRDataset(root, image_size=32, uncertainty="ones", progress=False)
    internal = Trainer(model, device="cpu", progress=False).evaluate(ones)
    assert zeros.scored.any()
    np.testing.assert_allclose(zeros.auroc[zeros.scored], internal.auroc[zeros.scored], rtol=1e-6)
    assert zeros.mean == pytest.approx(float(np.mean(internal.auroc[zeros.scored])))
