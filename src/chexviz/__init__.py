"""chexviz: chest X-ray multi-label diagnosis with Grad-CAM explanations.

The public API is re-exported here; see the API reference for each module.
"""

from chexviz._version import __version__
from chexviz.classifier import MultiLabelClassifier
from chexviz.dataset import CheXpertDataset
from chexviz.explanation import Explanation
from chexviz.faithfulness import deletion_score, insertion_score
from chexviz.gradcam import GradCAM
from chexviz.history import History
from chexviz.images import load_image
from chexviz.labels import CHEXPERT_LABELS, COMPETITION_LABELS, encode_labels
from chexviz.localization import pointing_game, score_localization, summarize_localization
from chexviz.losses import MaskedBCEWithLogitsLoss
from chexviz.metrics import Metrics, compute_metrics
from chexviz.overlay import overlay_heatmap
from chexviz.registry import (
    Backbone,
    BackboneInfo,
    create_backbone,
    list_backbones,
    register_backbone,
)
from chexviz.report import save_study_figure, write_html_report
from chexviz.splits import split_by_patient
from chexviz.synthetic import SIGN_LABELS, load_boxes, make_synthetic_chexpert
from chexviz.thresholds import tune_thresholds
from chexviz.trainer import Trainer
from chexviz.weights import WeightFileError

__all__ = [
    "Backbone",
    "BackboneInfo",
    "CHEXPERT_LABELS",
    "COMPETITION_LABELS",
    "CheXpertDataset",
    "Explanation",
    "GradCAM",
    "History",
    "MaskedBCEWithLogitsLoss",
    "Metrics",
    "MultiLabelClassifier",
    "SIGN_LABELS",
    "Trainer",
    "WeightFileError",
    "__version__",
    "compute_metrics",
    "create_backbone",
    "deletion_score",
    "encode_labels",
    "insertion_score",
    "list_backbones",
    "load_boxes",
    "load_image",
    "make_synthetic_chexpert",
    "overlay_heatmap",
    "pointing_game",
    "register_backbone",
    "save_study_figure",
    "score_localization",
    "split_by_patient",
    "summarize_localization",
    "tune_thresholds",
    "write_html_report",
]
