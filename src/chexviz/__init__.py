"""chexviz: chest X-ray multi-label diagnosis with Grad-CAM explanations.

The public API is re-exported here; see the API reference for each module.
"""

from chexviz._version import __version__
from chexviz.data.boxes import load_boxes, scale_boxes
from chexviz.data.chexlocalize import (
    LOCALIZATION_LABELS,
    CheXlocalizeGroundTruth,
    read_chexlocalize,
    write_chexlocalize,
)
from chexviz.data.dataset import CheXpertDataset
from chexviz.data.dicom import read_dicom
from chexviz.data.images import ImageDecodeError, load_image, to_tensor
from chexviz.data.label_mapping import NIH_LABELS
from chexviz.data.labels import (
    CHEXPERT_LABELS,
    COMPETITION_LABELS,
    LabelValueError,
    MissingColumnsError,
    encode_labels,
)
from chexviz.data.mimic import MIMICCXRDataset
from chexviz.data.nih import NIHChestXray14Dataset, read_nih_boxes
from chexviz.data.splits import REFERENCE_SPLIT, split_by_patient
from chexviz.data.synthetic import SIGN_LABELS, make_synthetic_chexpert
from chexviz.data.synthetic_external import make_synthetic_mimic, make_synthetic_nih
from chexviz.evaluate.chexlocalize import (
    CheXlocalizeScores,
    CheXlocalizeTuning,
    read_tuning_csv,
    run_chexlocalize,
    score_chexlocalize,
    segment_heatmap,
    tune_chexlocalize,
)
from chexviz.evaluate.compare import MethodComparison, compare_localization, compare_methods
from chexviz.evaluate.external import validate_externally
from chexviz.evaluate.faithfulness import deletion_score, insertion_score, score_faithfulness
from chexviz.evaluate.localization import (
    anatomical_prior,
    box_iou,
    chance_pointing_rate,
    energy_in_box,
    pointing_game,
    score_localization,
    select_boxes,
    summarize_localization,
    unscored_boxes,
)
from chexviz.explain.explanation import Explanation
from chexviz.explain.gradcam import METHODS, GradCAM
from chexviz.explain.integrated_gradients import IntegratedGradients
from chexviz.explain.methods import MAP_METHODS, map_maker
from chexviz.explain.overlay import map_peak, overlay_heatmap
from chexviz.explain.report import save_study_figure, study_figure, write_html_report
from chexviz.models.classifier import MultiLabelClassifier
from chexviz.models.heads import list_heads
from chexviz.models.registry import (
    Backbone,
    BackboneInfo,
    create_backbone,
    list_backbones,
    register_backbone,
)
from chexviz.models.serialization import WeightFileError, read_extra
from chexviz.models.xrv import from_torchxrayvision
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
    "Backbone",
    "BackboneInfo",
    "CHEXPERT_LABELS",
    "COMPETITION_LABELS",
    "CheXlocalizeGroundTruth",
    "CheXlocalizeScores",
    "CheXlocalizeTuning",
    "CheXpertDataset",
    "EpochRecord",
    "Explanation",
    "GradCAM",
    "History",
    "ImageDecodeError",
    "IntegratedGradients",
    "LOCALIZATION_LABELS",
    "LabelValueError",
    "MAP_METHODS",
    "METHODS",
    "MIMICCXRDataset",
    "MaskedBCEWithLogitsLoss",
    "MethodComparison",
    "Metrics",
    "MissingColumnsError",
    "MultiLabelClassifier",
    "NIHChestXray14Dataset",
    "NIH_LABELS",
    "REFERENCE_SPLIT",
    "SIGN_LABELS",
    "Trainer",
    "WeightFileError",
    "__version__",
    "anatomical_prior",
    "box_iou",
    "chance_pointing_rate",
    "compare_localization",
    "compare_methods",
    "compute_metrics",
    "create_backbone",
    "deletion_score",
    "encode_labels",
    "energy_in_box",
    "evaluation_targets",
    "from_torchxrayvision",
    "insertion_score",
    "list_backbones",
    "list_heads",
    "load_boxes",
    "load_image",
    "make_synthetic_chexpert",
    "make_synthetic_mimic",
    "make_synthetic_nih",
    "map_maker",
    "map_peak",
    "masked_bce_with_logits",
    "overlay_heatmap",
    "pointing_game",
    "pos_weight_from_targets",
    "read_chexlocalize",
    "read_dicom",
    "read_extra",
    "read_nih_boxes",
    "read_tuning_csv",
    "register_backbone",
    "run_chexlocalize",
    "save_study_figure",
    "scale_boxes",
    "score_chexlocalize",
    "score_faithfulness",
    "score_localization",
    "segment_heatmap",
    "select_boxes",
    "split_by_patient",
    "study_figure",
    "summarize_localization",
    "to_tensor",
    "tune_chexlocalize",
    "tune_thresholds",
    "unscored_boxes",
    "validate_externally",
    "write_chexlocalize",
    "write_html_report",
]
