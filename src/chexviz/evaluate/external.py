"""External validation: a model's AUROC on another hospital's data, with patient bootstrap CIs.

A CheXpert model is only as good as its result on X-rays it was not tuned on.
[`validate_externally`][chexviz.evaluate.external.validate_externally] predicts a data set
(MIMIC-CXR-JPG, NIH ChestX-ray14, or CheXpert itself), scores every model output the data set
annotates (through the explicit label mapping of
[`chexviz.data.label_mapping`][chexviz.data.label_mapping]) with AUROC and a 95% bootstrap
interval that resamples **patients**, not images (images of one patient are correlated, so
an image bootstrap gives intervals that are too narrow), and averages over the shared labels.

The model's own test figures travel in its weight file, under `INTERNAL_METRICS_KEY` (write
them with [`internal_metrics_metadata`][chexviz.evaluate.external.internal_metrics_metadata]),
so the external figures are printed beside the internal ones. The trivial baseline of AUROC is
0.5: a constant or random score, whatever the prevalence.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch.utils.data import Dataset

from chexviz._internal.cases import (
    DEFAULT_MIN_NEGATIVES,
    DEFAULT_MIN_POSITIVES,
    TOO_FEW,
    check_minimum,
    complete_replicates,
    enough_cases,
    too_few_line,
)
from chexviz._internal.datasets import unwrap_subsets
from chexviz.models.classifier import MultiLabelClassifier
from chexviz.models.serialization import read_extra
from chexviz.training.metrics import Metrics, evaluation_targets
from chexviz.training.trainer import Trainer

__all__ = [
    "CHANCE_AUROC",
    "INTERNAL_METRICS_KEY",
    "ExternalValidation",
    "bootstrap_auroc",
    "internal_metrics_metadata",
    "read_internal_metrics",
    "validate_externally",
]

logger = logging.getLogger(__name__)

INTERNAL_METRICS_KEY = "internal_test_metrics"
"""Extra-metadata key of a weight file holding the model's own test metrics (JSON)."""

CHANCE_AUROC = 0.5
"""AUROC of any constant or random score: the trivial baseline every AUROC sits beside."""


def internal_metrics_metadata(metrics: Metrics) -> dict[str, str]:
    """Extra metadata that stores a model's own test metrics in its weight file.

    Args:
        metrics: The model's metrics on its internal test set.

    Returns:
        ``{INTERNAL_METRICS_KEY: json}``, for ``model.save(path, extra_metadata=...)``.

    Example:
        ``model.save("model.safetensors", extra_metadata=internal_metrics_metadata(test))``
    """
    return {INTERNAL_METRICS_KEY: json.dumps(metrics.to_dict())}


def read_internal_metrics(path: str | os.PathLike[str]) -> Metrics | None:
    """The internal test metrics a weight file carries, if any.

    Args:
        path: A weight file.

    Returns:
        The metrics, or ``None`` when the file carries none.

    Raises:
        FileNotFoundError: The file does not exist.
        chexviz.models.serialization.WeightFileError: It is not a chexviz weight file.
        ValueError: Its internal metrics are not valid JSON metrics.
    """
    _, metadata = read_extra(path)
    text = metadata.get(INTERNAL_METRICS_KEY)
    if text is None:
        return None
    try:
        return Metrics.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: its {INTERNAL_METRICS_KEY!r} are not valid ({error})") from None


def bootstrap_auroc(
    probs: npt.ArrayLike,
    targets: npt.ArrayLike,
    groups: Sequence[str] | npt.ArrayLike,
    *,
    replicates: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    min_positives: int = DEFAULT_MIN_POSITIVES,
    min_negatives: int = DEFAULT_MIN_NEGATIVES,
) -> dict[str, Any]:
    """AUROC per label with percentile bootstrap intervals over groups (patients).

    A label is scored only when at least ``min_positives`` patients have a positive image
    and ``min_negatives`` patients a negative one (patients, not images: the bootstrap
    resamples patients, and five images of one patient are one case). Other labels are
    "too few cases": NaN scores, and out of the mean.

    Each replicate draws as many patients as there are, with replacement, and weights every
    image by how often its patient was drawn; AUROC is scikit-learn's, with those weights.
    The mean is over the same scored labels in every replicate: a replicate in which a
    scored label lost all its positive (or negative) patients is drawn again (rare with ten
    of each; ``redrawn`` counts them), so every returned replicate enters the mean's
    interval. The reasons are in ``chexviz._internal.cases``.

    Args:
        probs: Scores ``[N, L]``.
        targets: ``[N, L]`` in ``{0, 1}``, NaN where not annotated.
        groups: Patient of each of the ``N`` images.
        replicates: Bootstrap replicates (0 for point estimates only).
        seed: Seed of the resampling.
        confidence: Coverage of the intervals.
        min_positives: Fewest patients with a positive image a label needs to be scored.
        min_negatives: Fewest patients with a negative image a label needs.

    Returns:
        ``auroc``, ``low``, ``high`` (``[L]``, NaN where not scored), ``scored`` (``[L]``
        booleans: both classes with enough patients), ``positives``, ``negatives`` (images),
        ``positive_patients``, ``negative_patients``, ``patients`` (with a target, per
        label), ``mean``, ``mean_low``, ``mean_high`` (over the scored labels),
        ``replicates`` (all of them enter the mean's interval) and ``redrawn``.

    Raises:
        ValueError: Shapes disagree, or an argument is out of range.
    """
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(probs, dtype=np.float64)
    truth = np.asarray(targets, dtype=np.float64)
    patients = np.asarray(groups, dtype=object)
    if scores.ndim != 2 or scores.shape != truth.shape or len(patients) != len(scores):
        raise ValueError(
            f"probs {scores.shape}, targets {truth.shape} and {len(patients)} groups disagree"
        )
    if replicates < 0 or not 0.0 < confidence < 1.0:
        raise ValueError(
            f"replicates must be >= 0 and confidence in (0, 1), got {replicates}, {confidence}"
        )
    check_minimum(min_positives, min_negatives)
    labelled = ~np.isnan(truth)
    _, inverse = np.unique(patients.astype(str), return_inverse=True)
    count = int(inverse.max()) + 1 if len(inverse) else 0

    def patients_with(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
        """Per label, the patients with at least one image where ``mask`` holds."""
        return np.asarray(
            [len(np.unique(inverse[mask[:, j]])) for j in range(mask.shape[1])], dtype=np.int64
        )

    is_positive = labelled & (np.nan_to_num(truth) == 1)
    is_negative = labelled & (np.nan_to_num(truth, nan=1.0) == 0)
    positive_patients = patients_with(is_positive)
    negative_patients = patients_with(is_negative)
    scored = enough_cases(positive_patients, negative_patients, min_positives, min_negatives)
    kept = np.flatnonzero(scored)

    def auroc(j: int, weights: npt.NDArray[np.int64] | None) -> float:
        keep = labelled[:, j] if weights is None else labelled[:, j] & (weights > 0)
        y = truth[keep, j]
        if y.size == 0 or y.min() == y.max():
            return math.nan
        w = None if weights is None else weights[keep]
        return float(roc_auc_score(y, scores[keep, j], sample_weight=w))

    labels = scores.shape[1]
    point = np.full(labels, np.nan)
    for j in kept:
        point[j] = auroc(int(j), None)
    rng = np.random.default_rng(seed)

    def draw() -> npt.NDArray[np.int64]:
        return np.bincount(rng.integers(0, count, size=count), minlength=count)[inverse]

    def complete(weights: npt.NDArray[np.int64]) -> bool:
        drawn = weights > 0
        return bool(
            (
                is_positive[drawn][:, kept].any(axis=0) & is_negative[drawn][:, kept].any(axis=0)
            ).all()
        )

    weights_list, redrawn = complete_replicates(draw, complete, replicates if len(kept) else 0)
    draws = np.full((len(weights_list), labels), np.nan)
    for b, weights in enumerate(weights_list):
        for j in kept:
            draws[b, j] = auroc(int(j), weights)
    if redrawn:
        logger.warning(
            "%d bootstrap draws missed a scored label's positives or negatives and were drawn "
            "again (of %d kept)",
            redrawn,
            len(weights_list),
        )
    tail = 100.0 * (1.0 - confidence) / 2.0
    low = np.full(labels, np.nan)
    high = np.full(labels, np.nan)
    means = draws[:, kept].mean(axis=1) if len(kept) else np.empty(0)
    if means.size:
        for j in kept:
            low[j], high[j] = np.percentile(draws[:, j], [tail, 100.0 - tail])
        mean_low = float(np.percentile(means, tail))
        mean_high = float(np.percentile(means, 100.0 - tail))
    else:
        mean_low = mean_high = math.nan
    return {
        "auroc": point,
        "low": low,
        "high": high,
        "scored": scored,
        "positives": is_positive.sum(axis=0).astype(np.int64),
        "negatives": is_negative.sum(axis=0).astype(np.int64),
        "positive_patients": positive_patients,
        "negative_patients": negative_patients,
        "patients": patients_with(labelled),
        "mean": float(point[kept].mean()) if len(kept) else math.nan,
        "mean_low": mean_low,
        "mean_high": mean_high,
        "replicates": int(means.size),
        "redrawn": redrawn,
    }


@dataclass(frozen=True)
class ExternalValidation:
    """AUROC of a model on an external data set, per shared label and on average.

    Attributes:
        dataset: Name of the data set (``"NIH ChestX-ray14, split test"``).
        labels: The model's labels, in output order.
        sources: Per label, the data set's label(s) it is compared with (``""`` when the
            data set does not annotate it).
        scored: Per label, whether it is scored: annotated, with at least ``min_positives``
            patients with a positive image and ``min_negatives`` with a negative one.
        images: Images evaluated; ``patients``: their patients.
        patients: Patients of the evaluated images (the bootstrap resamples them).
        support: Images with a target, per label.
        positives: Positive images, per label.
        negatives: Negative images, per label.
        label_patients: Patients with a target, per label.
        positive_patients: Patients with a positive image, per label.
        negative_patients: Patients with a negative image, per label.
        auroc: AUROC per label (NaN where not scored).
        low: Lower end of the bootstrap interval, per label.
        high: Upper end, per label.
        mean: Mean AUROC over the scored labels; ``mean_low`` / ``mean_high`` its interval.
        mean_low: Lower end of the mean's interval.
        mean_high: Upper end of the mean's interval.
        replicates: Bootstrap replicates behind every interval (all of them: each has every
            scored label).
        redrawn: Draws rejected because a scored label lost a class (see `bootstrap_auroc`).
        min_positives: The minimum of positive patients a label needed.
        min_negatives: The minimum of negative patients a label needed.
        internal: The model's own test metrics, when its weight file carries them.
    """

    dataset: str
    labels: tuple[str, ...]
    sources: tuple[str, ...]
    scored: npt.NDArray[np.bool_]
    images: int
    patients: int
    support: npt.NDArray[np.int64]
    positives: npt.NDArray[np.int64]
    negatives: npt.NDArray[np.int64]
    label_patients: npt.NDArray[np.int64]
    positive_patients: npt.NDArray[np.int64]
    negative_patients: npt.NDArray[np.int64]
    auroc: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    mean: float
    mean_low: float
    mean_high: float
    replicates: int
    redrawn: int
    min_positives: int
    min_negatives: int
    internal: Metrics | None = None

    @property
    def shared_labels(self) -> tuple[str, ...]:
        """The labels scored (the model outputs the data set annotates with both classes)."""
        return tuple(label for label, ok in zip(self.labels, self.scored, strict=True) if ok)

    @property
    def too_few(self) -> tuple[str, ...]:
        """The annotated labels left unscored for having too few positive or negative cases."""
        return tuple(
            label for j, label in enumerate(self.labels) if self.support[j] and not self.scored[j]
        )

    def status(self, j: int) -> str:
        """Label ``j``'s status: ``"scored"``, ``"too few cases"`` or ``"not annotated"``."""
        if not self.support[j]:
            return "not annotated"
        return "scored" if self.scored[j] else TOO_FEW

    def too_few_line(self) -> str | None:
        """The line naming the labels left out for too few cases, with their counts."""
        counts = [
            f"{self.positives[j]} positive images of {self.positive_patients[j]} patients, "
            f"{self.negatives[j]} negative of {self.negative_patients[j]}"
            for j in range(len(self.labels))
        ]
        annotated_or_scored = [
            bool(ok or not n) for ok, n in zip(self.scored, self.support, strict=True)
        ]
        return too_few_line(
            self.labels,
            counts,
            annotated_or_scored,
            min_positives=self.min_positives,
            min_negatives=self.min_negatives,
        )

    @property
    def internal_mean(self) -> float:
        """The model's internal mean AUROC over the same shared labels (NaN without it)."""
        if self.internal is None:
            return math.nan
        values = [self._internal_auroc(label) for label in self.shared_labels]
        finite = [value for value in values if not math.isnan(value)]
        return float(np.mean(finite)) if finite and len(finite) == len(values) else math.nan

    def _internal_auroc(self, label: str) -> float:
        if self.internal is None or label not in self.internal.labels:
            return math.nan
        return float(self.internal.auroc[self.internal.labels.index(label)])

    def to_frame(self) -> pd.DataFrame:
        """One row per model label and a last row for the mean over the shared labels.

        Returns:
            Columns ``source``, ``images``, ``positives``, ``negatives`` (images),
            ``patients`` (with a target), ``status`` (``scored``, ``too few cases`` or
            ``not annotated``), ``auroc``, ``ci_low``, ``ci_high``, ``chance`` (0.5) and
            ``internal_auroc`` (NaN without internal metrics), indexed by label; unscored
            labels have NaN scores.
        """
        rows: dict[str, dict[str, object]] = {}
        for j, label in enumerate(self.labels):
            rows[label] = {
                "source": self.sources[j] or "(not annotated)",
                "images": int(self.support[j]),
                "positives": int(self.positives[j]),
                "negatives": int(self.negatives[j]),
                "patients": int(self.label_patients[j]),
                "status": self.status(j),
                "auroc": float(self.auroc[j]),
                "ci_low": float(self.low[j]),
                "ci_high": float(self.high[j]),
                "chance": CHANCE_AUROC,
                "internal_auroc": self._internal_auroc(label),
            }
        rows[f"mean ({len(self.shared_labels)} shared)"] = {
            "source": "",
            "images": self.images,
            "positives": int(self.positives[self.scored].sum()),
            "negatives": int(self.negatives[self.scored].sum()),
            "patients": self.patients,
            "status": f"mean of {len(self.shared_labels)}",
            "auroc": self.mean,
            "ci_low": self.mean_low,
            "ci_high": self.mean_high,
            "chance": CHANCE_AUROC,
            "internal_auroc": self.internal_mean,
        }
        frame: pd.DataFrame = pd.DataFrame.from_dict(rows, orient="index")
        frame.index.name = "label"
        return frame

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (NaN as ``None``)."""

        def number(value: float) -> float | None:
            return None if math.isnan(value) else float(value)

        return {
            "dataset": self.dataset,
            "images": self.images,
            "patients": self.patients,
            "replicates": self.replicates,
            "redrawn": self.redrawn,
            "min_positives": self.min_positives,
            "min_negatives": self.min_negatives,
            "shared_labels": list(self.shared_labels),
            "too_few_cases": list(self.too_few),
            "mean_auroc": number(self.mean),
            "mean_ci": [number(self.mean_low), number(self.mean_high)],
            "internal_mean_auroc": number(self.internal_mean),
            "chance_auroc": CHANCE_AUROC,
            "labels": {
                label: {
                    "source": self.sources[j],
                    "scored": bool(self.scored[j]),
                    "status": self.status(j),
                    "images": int(self.support[j]),
                    "positives": int(self.positives[j]),
                    "negatives": int(self.negatives[j]),
                    "patients": int(self.label_patients[j]),
                    "positive_patients": int(self.positive_patients[j]),
                    "negative_patients": int(self.negative_patients[j]),
                    "auroc": number(float(self.auroc[j])),
                    "ci": [number(float(self.low[j])), number(float(self.high[j]))],
                    "internal_auroc": number(self._internal_auroc(label)),
                }
                for j, label in enumerate(self.labels)
            },
        }


def validate_externally(
    model: MultiLabelClassifier,
    dataset: Dataset[tuple[torch.Tensor, torch.Tensor]],
    *,
    name: str = "",
    sources: Mapping[str, str] | None = None,
    replicates: int = 1000,
    seed: int = 0,
    device: str | torch.device = "auto",
    batch_size: int = 64,
    progress: bool = True,
    internal: Metrics | None = None,
    min_positives: int = DEFAULT_MIN_POSITIVES,
    min_negatives: int = DEFAULT_MIN_NEGATIVES,
) -> ExternalValidation:
    """Scores a model on an external data set: per-label AUROC with patient bootstrap CIs.

    The answer key is `Trainer.evaluate`'s
    ([`evaluation_targets`][chexviz.training.metrics.evaluation_targets]: positive 1,
    negative, blank and uncertain 0), whatever uncertainty policy the data set was built
    with for training; a data set without raw label cells is scored on its targets. A label
    with fewer than ``min_positives`` positive or ``min_negatives`` negative patients is
    "too few cases": unscored and out of the mean (see
    [`bootstrap_auroc`][chexviz.evaluate.external.bootstrap_auroc]).

    Args:
        model: The model; its labels must be the data set's ``labels`` (build the data set
            with ``labels=model.labels``: NIH maps them to its own findings).
        dataset: A chexviz data set (with ``labels``, ``targets``, ``patient_ids``) or a
            ``Subset`` of one.
        name: Names the data set in the result.
        sources: Per label, the data set's label(s) it is compared with, for the table
            (default: the data set's ``label_sources`` when it has them, as
            [`NIHChestXray14Dataset`][chexviz.data.nih.NIHChestXray14Dataset] does, else the
            label itself where annotated).
        replicates: Bootstrap replicates.
        seed: Seed of the bootstrap.
        device: Where to run the model.
        batch_size: Images per forward pass.
        progress: Show a progress bar (on a terminal only).
        internal: The model's own test metrics, shown beside the external ones.
        min_positives: Fewest patients with a positive image a label needs to be scored.
        min_negatives: Fewest patients with a negative image a label needs to be scored.

    Returns:
        The validation result.

    Raises:
        TypeError: ``dataset`` is not a chexviz data set.
        ValueError: Its labels differ from the model's, no label is annotated with both
            classes, or a minimum is not a positive integer.
    """
    check_minimum(min_positives, min_negatives)
    inner, positions = unwrap_subsets(dataset)
    base: Any = inner
    for attribute in ("labels", "targets", "patient_ids"):
        if not hasattr(base, attribute):
            raise TypeError(
                f"dataset must be a chexviz data set (or a Subset of one) with .{attribute}, "
                f"got {type(base).__name__}"
            )
    if tuple(base.labels) != tuple(model.labels):
        raise ValueError(
            f"the data set's labels {list(base.labels)} are not the model's "
            f"{list(model.labels)}; build it with labels=model.labels"
        )
    items = list(range(len(base.targets))) if positions is None else positions
    # The training policy (U-Ones...) must not change the answers: score Trainer.evaluate's key.
    key = evaluation_targets(dataset)
    targets = (
        np.asarray(base.targets, dtype=np.float64)[items]
        if key is None
        else np.asarray(key, dtype=np.float64)
    )
    patients = [str(base.patient_ids[i]) for i in items]
    labelled = ~np.isnan(targets)
    support = labelled.sum(axis=0).astype(np.int64)
    positives = np.nansum(targets, axis=0).astype(np.int64)
    if not ((positives > 0) & (positives < support)).any():
        raise ValueError(
            f"no label of {list(model.labels)} is annotated with both classes in "
            f"{name or 'the data set'}"
        )
    trainer = Trainer(model, device=device, batch_size=batch_size, progress=progress)
    probs = trainer.predict(dataset)  # type: ignore[arg-type]  # chexviz data sets are sized
    result = bootstrap_auroc(
        probs,
        targets,
        patients,
        replicates=replicates,
        seed=seed,
        min_positives=min_positives,
        min_negatives=min_negatives,
    )
    scored = result["scored"]
    unscored = [label for label, ok in zip(model.labels, scored, strict=True) if not ok]
    if unscored:
        logger.info("not scored (not annotated, or too few cases): %s", unscored)
    names = dict(sources if sources is not None else getattr(base, "label_sources", {}))
    return ExternalValidation(
        dataset=name,
        labels=tuple(model.labels),
        sources=tuple(
            names.get(label, label) if support[j] else "" for j, label in enumerate(model.labels)
        ),
        scored=scored,
        images=len(items),
        patients=len(set(patients)),
        support=support,
        positives=positives,
        negatives=result["negatives"],
        label_patients=result["patients"],
        positive_patients=result["positive_patients"],
        negative_patients=result["negative_patients"],
        auroc=np.where(scored, result["auroc"], np.nan),
        low=np.where(scored, result["low"], np.nan),
        high=np.where(scored, result["high"], np.nan),
        mean=result["mean"],
        mean_low=result["mean_low"],
        mean_high=result["mean_high"],
        replicates=result["replicates"],
        redrawn=result["redrawn"],
        min_positives=min_positives,
        min_negatives=min_negatives,
        internal=internal,
    )
