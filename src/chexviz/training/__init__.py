"""Training: the `Trainer`, its loss, metrics, thresholds, history, checkpoints and DDP helpers.

Imports [`chexviz.models`][chexviz.models] and [`chexviz.data`][chexviz.data]; never
[`chexviz.explain`][chexviz.explain] or [`chexviz.evaluate`][chexviz.evaluate].
"""

from chexviz.training.history import EpochRecord, History
from chexviz.training.losses import (
    MaskedBCEWithLogitsLoss,
    masked_bce_with_logits,
    pos_weight_from_targets,
)
from chexviz.training.metrics import Metrics, compute_metrics, evaluation_targets
from chexviz.training.thresholds import tune_thresholds
from chexviz.training.trainer import Trainer

__all__ = [
    "EpochRecord",
    "History",
    "MaskedBCEWithLogitsLoss",
    "Metrics",
    "Trainer",
    "compute_metrics",
    "evaluation_targets",
    "masked_bce_with_logits",
    "pos_weight_from_targets",
    "tune_thresholds",
]
