"""Per-label and macro-averaged metrics for multi-label chest X-ray classification.

AUROC comes from scikit-learn's `sklearn.metrics.roc_auc_score` (exact, tie-aware and
widely used, so numbers compare with published ones). A label that has a single class among the
evaluated entries has no defined AUROC: it is reported as ``nan`` and listed in
[`Metrics.undefined_auroc`][chexviz.training.metrics.Metrics.undefined_auroc], never as 0 or 1, and
macro averages skip it. Entries whose target is ``nan`` (ignored) are left out of every metric
of their label.

Accuracy is reported twice, each beside two constant predictors:

* ``binary_accuracy``: ``probability > 0.5``, Keras' ``binary_accuracy`` and the reference
  study's metric (its "test accuracy" is the mean of it over the 14 labels);
* ``accuracy``: ``probability >= threshold`` at the model's (tuned) thresholds;
* ``all_negative_accuracy``: the constant "negative" answer;
* ``majority_accuracy``: the per-label majority class of the evaluated entries, the best any
  constant answer can score on them (chosen with hindsight, so a slightly generous baseline;
  on CheXpert it differs from all-negative where positives are the majority, such as Support
  Devices in ``train.csv``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from chexviz._internal.arrays import on_host
from chexviz._internal.datasets import unwrap_subsets
from chexviz.data.labels import COMPETITION_LABELS, PolicyName, apply_policy

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "STUDY_THRESHOLD",
    "EvaluationPolicy",
    "Metrics",
    "compute_metrics",
    "evaluation_targets",
]

EvaluationPolicy = Literal["negative", "exclude"]
"""How evaluation reads an uncertain (``-1``) label: ``"negative"`` (the reference study's
choice, and what U-Zeros trains on) or ``"exclude"`` (left out of that label's metrics)."""

STUDY_THRESHOLD = 0.5
"""The threshold of the reference study's accuracy (Keras' ``binary_accuracy``: ``p > 0.5``)."""

_PER_LABEL = (
    "auroc",
    "accuracy",
    "binary_accuracy",
    "f1",
    "all_negative_accuracy",
    "majority_accuracy",
)
# Absent from dicts written before they existed (checkpoints, history.json); read as nan.
_ADDED = ("binary_accuracy", "majority_accuracy")
_COUNTS = ("support", "positives")


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _to_json_value(value: float) -> float | None:
    # Strict JSON has no NaN; None (null) round-trips through every JSON reader.
    return None if math.isnan(value) else float(value)


@dataclass(frozen=True)
class Metrics:
    """Metrics of one evaluation, per label and macro-averaged.

    Per-label arrays have one entry per name in `labels`; ``nan`` means undefined (AUROC
    with a single class, F1 with no positive target nor prediction, any metric of a label with no
    evaluated entry).

    Attributes:
        labels: Label names.
        auroc: Area under the ROC curve per label.
        accuracy: Accuracy of ``probability >= threshold`` per label (the model's thresholds).
        binary_accuracy: Accuracy of ``probability > 0.5`` per label: Keras'
            ``binary_accuracy``, the reference study's metric.
        f1: F1 score of the positive class at the thresholds, per label.
        all_negative_accuracy: Accuracy of the trivial predictor that says "negative" for
            everything, per label.
        majority_accuracy: Accuracy of the per-label majority class of the evaluated entries
            (the best constant predictor, chosen with hindsight): the strongest trivial
            baseline either accuracy must beat.
        support: Number of evaluated (non-ignored) entries per label.
        positives: Number of positive entries per label.
        thresholds: The decision thresholds used, per label.
        loss: Mean masked binary cross-entropy, when the caller had logits (else ``nan``).
    """

    labels: tuple[str, ...]
    auroc: np.ndarray
    accuracy: np.ndarray
    binary_accuracy: np.ndarray
    f1: np.ndarray
    all_negative_accuracy: np.ndarray
    majority_accuracy: np.ndarray
    support: np.ndarray
    positives: np.ndarray
    thresholds: np.ndarray
    loss: float = math.nan

    @property
    def macro_auroc(self) -> float:
        """Mean AUROC over the labels where it is defined (``nan`` if none is)."""
        return _nanmean(self.auroc)

    @property
    def competition_auroc(self) -> float:
        """Mean AUROC over the five CheXpert competition labels (``COMPETITION_LABELS``).

        The summary the CheXpert paper and its follow-ups compare on; labels missing from
        ``labels`` or with an undefined AUROC are skipped (``nan`` if none is left).
        """
        values = [
            float(self.auroc[self.labels.index(name)])
            for name in COMPETITION_LABELS
            if name in self.labels
        ]
        return _nanmean(np.asarray(values, dtype=np.float64))

    @property
    def macro_accuracy(self) -> float:
        """Mean per-label accuracy at the model's thresholds."""
        return _nanmean(self.accuracy)

    @property
    def macro_binary_accuracy(self) -> float:
        """Mean per-label accuracy at 0.5: the reference study's "mean binary accuracy"."""
        return _nanmean(self.binary_accuracy)

    @property
    def macro_majority_accuracy(self) -> float:
        """Mean accuracy of the per-label majority class over the same labels and entries."""
        return _nanmean(self.majority_accuracy)

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the labels where it is defined."""
        return _nanmean(self.f1)

    @property
    def macro_all_negative_accuracy(self) -> float:
        """Mean accuracy of the all-negative predictor over the same labels and entries."""
        return _nanmean(self.all_negative_accuracy)

    @property
    def undefined_auroc(self) -> tuple[str, ...]:
        """Names of the labels whose AUROC is undefined (a single class was evaluated)."""
        return tuple(name for name, v in zip(self.labels, self.auroc, strict=True) if np.isnan(v))

    def to_frame(self, *, macro: bool = True) -> pd.DataFrame:
        """Return a table with one row per label (and a final ``"macro"`` row).

        Args:
            macro: Append the macro averages as a row named ``"macro"`` (its ``support`` and
                ``positives`` are totals).

        Returns:
            A pandas DataFrame indexed by label name.
        """
        import pandas as pd

        frame: pd.DataFrame = pd.DataFrame(
            {
                **{name: getattr(self, name) for name in _PER_LABEL},
                **{name: getattr(self, name).astype(np.int64) for name in _COUNTS},
                "threshold": self.thresholds,
            },
            index=pd.Index(self.labels, name="label"),
        )
        if macro:
            frame.loc["macro"] = {
                **{name: getattr(self, f"macro_{name}") for name in _PER_LABEL},
                **{name: int(getattr(self, name).sum()) for name in _COUNTS},
                "threshold": math.nan,
            }
        return frame

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict, the inverse of `from_dict`.

        Returns:
            Per-label lists, the macro averages (and ``competition_auroc``), the
            undefined-AUROC labels and the loss; ``nan`` becomes ``None``.
        """
        out: dict[str, Any] = {"labels": list(self.labels)}
        for name in (*_PER_LABEL, "thresholds"):
            out[name] = [_to_json_value(float(v)) for v in getattr(self, name)]
        for name in _COUNTS:
            out[name] = [int(v) for v in getattr(self, name)]
        out["loss"] = _to_json_value(self.loss)
        out["macro"] = {name: _to_json_value(getattr(self, f"macro_{name}")) for name in _PER_LABEL}
        out["competition_auroc"] = _to_json_value(self.competition_auroc)
        out["undefined_auroc"] = list(self.undefined_auroc)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metrics:
        """Rebuild metrics from [`to_dict`][chexviz.training.metrics.Metrics.to_dict] output.

        Args:
            data: The dict (derived entries such as ``"macro"`` are recomputed, not read).
                Dicts written before ``binary_accuracy`` and ``majority_accuracy`` existed
                read them as ``nan``.

        Returns:
            The metrics.

        Raises:
            KeyError: If a required key is missing.
        """

        def floats(key: str) -> np.ndarray:
            if key in _ADDED and key not in data:
                return np.full(len(data["labels"]), math.nan)
            return np.array([math.nan if v is None else v for v in data[key]], dtype=np.float64)

        loss = data.get("loss")
        return cls(
            labels=tuple(data["labels"]),
            **{name: floats(name) for name in (*_PER_LABEL, "thresholds")},
            **{name: np.asarray(data[name], dtype=np.int64) for name in _COUNTS},
            loss=math.nan if loss is None else float(loss),
        )


def _as_2d(name: str, values: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    array = np.asarray(on_host(values), dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape [N, L], got {array.shape}")
    return array


def compute_metrics(
    probs: np.ndarray,
    targets: np.ndarray,
    thresholds: np.ndarray | Sequence[float] | float,
    labels: Sequence[str],
    *,
    loss: float = math.nan,
) -> Metrics:
    """Compute AUROC, accuracy (at the thresholds and at 0.5), F1 and two baselines per label.

    Args:
        probs: Predicted probabilities ``[N, L]`` in ``[0, 1]`` (an array, or a tensor on any
            device); evaluate float32 (or wider) probabilities: half-precision ones hold about
            three digits and create ties.
        targets: Targets ``[N, L]`` in ``{0, 1}``; ``nan`` entries are ignored.
        thresholds: Decision threshold per label (``[L]``) or one for all; a label is
            predicted positive when ``probability >= threshold``. ``binary_accuracy`` always
            uses ``probability > 0.5`` instead (Keras' rule).
        labels: The ``L`` label names.
        loss: Loss to carry along in the result.

    Returns:
        The metrics.

    Raises:
        ValueError: On shape mismatches, probabilities outside ``[0, 1]`` or not finite, or
            target values other than 0, 1 and ``nan`` (the message names the label).
    """
    # scikit-learn takes about a second to import; only evaluation needs it.
    from sklearn.metrics import roc_auc_score

    p = _as_2d("probs", probs)
    y = _as_2d("targets", targets)
    names = tuple(labels)
    if p.shape != y.shape:
        raise ValueError(f"probs have shape {p.shape} but targets have shape {y.shape}")
    if p.shape[1] != len(names):
        raise ValueError(f"probs have {p.shape[1]} columns but {len(names)} labels were given")
    thr = np.broadcast_to(np.asarray(on_host(thresholds), dtype=np.float64), (len(names),))
    thr = thr.copy()
    for j, name in enumerate(names):
        column = p[:, j]
        if (
            not np.all(np.isfinite(column))
            or column.min(initial=0.0) < 0
            or column.max(initial=0.0) > 1
        ):
            raise ValueError(f"probabilities of label {name!r} must be finite and within [0, 1]")
        bad = ~(np.isnan(y[:, j]) | (y[:, j] == 0) | (y[:, j] == 1))
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(
                f"target of label {name!r} at row {row} is {y[row, j]!r}; expected 0, 1 or nan"
            )

    count = len(names)
    auroc, accuracy, binary, f1, all_negative, majority = (
        np.full(count, math.nan) for _ in range(6)
    )
    support = np.zeros(count, dtype=np.int64)
    positives = np.zeros(count, dtype=np.int64)
    for j in range(count):
        valid = ~np.isnan(y[:, j])
        truth = y[valid, j] == 1
        score = p[valid, j]
        support[j] = truth.size
        positives[j] = int(truth.sum())
        if truth.size == 0:
            continue
        predicted = score >= thr[j]
        accuracy[j] = float(np.mean(predicted == truth))
        binary[j] = float(np.mean((score > STUDY_THRESHOLD) == truth))
        all_negative[j] = float(np.mean(~truth))
        majority[j] = max(all_negative[j], 1.0 - all_negative[j])
        true_pos = int(np.sum(predicted & truth))
        denominator = int(predicted.sum()) + positives[j]
        if denominator:
            f1[j] = 2.0 * true_pos / denominator
        if 0 < positives[j] < truth.size:
            auroc[j] = float(roc_auc_score(truth, score))
    return Metrics(
        labels=names,
        auroc=auroc,
        accuracy=accuracy,
        binary_accuracy=binary,
        f1=f1,
        all_negative_accuracy=all_negative,
        majority_accuracy=majority,
        support=support,
        positives=positives,
        thresholds=thr,
        loss=float(loss),
    )


def evaluation_targets(
    dataset: object, *, uncertain: EvaluationPolicy = "negative"
) -> np.ndarray | None:
    """The answer key of a labelled data set, the same whatever policy it was built with.

    Training policies (U-Ones, U-Ignore, blank ignored...) decide what a model learns from;
    they must not decide what it is scored against, or runs trained with different policies
    are scored on different answers. The answer key reads the raw label cells: positive 1,
    negative 0, blank 0 (not mentioned, read as negative as in the CheXpert paper), and
    uncertain as ``uncertain`` says.

    Args:
        dataset: A data set exposing ``raw_labels`` (``[N, L]`` cells in ``{1, 0, -1}``, NaN
            for blank) and ``labels``, such as a
            [`CheXpertDataset`][chexviz.data.dataset.CheXpertDataset], or a ``Subset`` of one.
        uncertain: ``"negative"`` or ``"exclude"`` (NaN, left out of the metrics).

    Returns:
        float32 targets ``[len(dataset), L]`` in ``{0, 1}`` (NaN where excluded, and for the
        labels a data set lists as ``unannotated``), in the order of ``dataset``; None when
        the data set keeps no raw label cells, whose own targets are then the only answer key
        there is.

    Raises:
        ValueError: If ``uncertain`` is not ``"negative"`` or ``"exclude"``.
    """
    if uncertain not in ("negative", "exclude"):
        raise ValueError(f"uncertain must be 'negative' or 'exclude', got {uncertain!r}")
    base, positions = unwrap_subsets(dataset)
    raw = getattr(base, "raw_labels", None)
    labels = getattr(base, "labels", None)
    if raw is None or labels is None:
        return None
    cells = np.asarray(raw, dtype=np.float32)
    if positions is not None:
        cells = cells[np.asarray(positions, dtype=np.int64)]
    policy: PolicyName = "zeros" if uncertain == "negative" else "ignore"
    targets = apply_policy(cells, tuple(labels), uncertainty=policy, blank="zeros")
    # A blank cell means "not mentioned" (negative), but a label the data set does not annotate
    # at all (NIH has no Fracture) has no answer: it stays NaN, out of the metrics.
    unannotated = set(getattr(base, "unannotated", None) or ())
    for j, label in enumerate(labels):
        if label in unannotated:
            targets[:, j] = np.nan
    return targets
