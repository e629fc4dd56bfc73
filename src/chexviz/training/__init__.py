"""Training: the `Trainer`, its loss, metrics, thresholds, history, checkpoints and DDP helpers.

Imports [`chexviz.models`][chexviz.models] and [`chexviz.data`][chexviz.data]; never
[`chexviz.explain`][chexviz.explain].
"""

from chexviz.training.external import ExternalValidation, validate_externally
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
    "ExternalValidation",
    "History",
    "MaskedBCEWithLogitsLoss",
    "Metrics",
    "Trainer",
    "compute_metrics",
    "evaluation_targets",
    "masked_bce_with_logits",
    "pos_weight_from_targets",
    "tune_thresholds",
    "validate_externally",
]
