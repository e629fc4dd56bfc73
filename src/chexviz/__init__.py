"""chexviz: chest X-ray multi-label diagnosis with Grad-CAM explanations.

The public API is re-exported here; see the API reference for each module.

Names load on first use (PEP 562), so that ``import chexviz`` and the command line's ``--help``
do not pay for torch: ``from chexviz import Trainer`` imports the training code then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from chexviz._version import __version__

if TYPE_CHECKING:
    from chexviz.data.boxes import load_boxes, scale_boxes
    from chexviz.data.chexlocalize import (
        LOCALIZATION_LABELS,
        CheXlocalizeGroundTruth,
        read_chexlocalize,
        read_salient_points,
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
        feature_correlations,
        geometric_features,
        precision_sensitivity_specificity,
        read_tuning_csv,
        run_chexlocalize,
        score_chexlocalize,
        score_human_benchmark,
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
    from chexviz.explain.figures import save_study_figure, study_figure
    from chexviz.explain.gradcam import METHODS, GradCAM
    from chexviz.explain.integrated_gradients import IntegratedGradients
    from chexviz.explain.methods import MAP_METHODS, map_maker
    from chexviz.explain.overlay import map_peak, overlay_heatmap
    from chexviz.explain.report import write_html_report
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

# Where each public name lives: the module imported when the name is first read.
_HOMES: dict[str, str] = {
    "Backbone": "chexviz.models.registry",
    "BackboneInfo": "chexviz.models.registry",
    "CHEXPERT_LABELS": "chexviz.data.labels",
    "COMPETITION_LABELS": "chexviz.data.labels",
    "CheXlocalizeGroundTruth": "chexviz.data.chexlocalize",
    "CheXlocalizeScores": "chexviz.evaluate.chexlocalize",
    "CheXlocalizeTuning": "chexviz.evaluate.chexlocalize",
    "CheXpertDataset": "chexviz.data.dataset",
    "EpochRecord": "chexviz.training.history",
    "Explanation": "chexviz.explain.explanation",
    "GradCAM": "chexviz.explain.gradcam",
    "History": "chexviz.training.history",
    "ImageDecodeError": "chexviz.data.images",
    "IntegratedGradients": "chexviz.explain.integrated_gradients",
    "LOCALIZATION_LABELS": "chexviz.data.chexlocalize",
    "LabelValueError": "chexviz.data.labels",
    "MAP_METHODS": "chexviz.explain.methods",
    "METHODS": "chexviz.explain.gradcam",
    "MIMICCXRDataset": "chexviz.data.mimic",
    "MaskedBCEWithLogitsLoss": "chexviz.training.losses",
    "MethodComparison": "chexviz.evaluate.compare",
    "Metrics": "chexviz.training.metrics",
    "MissingColumnsError": "chexviz.data.labels",
    "MultiLabelClassifier": "chexviz.models.classifier",
    "NIHChestXray14Dataset": "chexviz.data.nih",
    "NIH_LABELS": "chexviz.data.label_mapping",
    "REFERENCE_SPLIT": "chexviz.data.splits",
    "SIGN_LABELS": "chexviz.data.synthetic",
    "Trainer": "chexviz.training.trainer",
    "WeightFileError": "chexviz.models.serialization",
    "anatomical_prior": "chexviz.evaluate.localization",
    "box_iou": "chexviz.evaluate.localization",
    "chance_pointing_rate": "chexviz.evaluate.localization",
    "compare_localization": "chexviz.evaluate.compare",
    "compare_methods": "chexviz.evaluate.compare",
    "compute_metrics": "chexviz.training.metrics",
    "create_backbone": "chexviz.models.registry",
    "deletion_score": "chexviz.evaluate.faithfulness",
    "encode_labels": "chexviz.data.labels",
    "energy_in_box": "chexviz.evaluate.localization",
    "evaluation_targets": "chexviz.training.metrics",
    "feature_correlations": "chexviz.evaluate.chexlocalize",
    "from_torchxrayvision": "chexviz.models.xrv",
    "geometric_features": "chexviz.evaluate.chexlocalize",
    "insertion_score": "chexviz.evaluate.faithfulness",
    "list_backbones": "chexviz.models.registry",
    "list_heads": "chexviz.models.heads",
    "load_boxes": "chexviz.data.boxes",
    "load_image": "chexviz.data.images",
    "make_synthetic_chexpert": "chexviz.data.synthetic",
    "make_synthetic_mimic": "chexviz.data.synthetic_external",
    "make_synthetic_nih": "chexviz.data.synthetic_external",
    "map_maker": "chexviz.explain.methods",
    "map_peak": "chexviz.explain.overlay",
    "masked_bce_with_logits": "chexviz.training.losses",
    "overlay_heatmap": "chexviz.explain.overlay",
    "pointing_game": "chexviz.evaluate.localization",
    "pos_weight_from_targets": "chexviz.training.losses",
    "precision_sensitivity_specificity": "chexviz.evaluate.chexlocalize",
    "read_chexlocalize": "chexviz.data.chexlocalize",
    "read_dicom": "chexviz.data.dicom",
    "read_extra": "chexviz.models.serialization",
    "read_nih_boxes": "chexviz.data.nih",
    "read_salient_points": "chexviz.data.chexlocalize",
    "read_tuning_csv": "chexviz.evaluate.chexlocalize",
    "register_backbone": "chexviz.models.registry",
    "run_chexlocalize": "chexviz.evaluate.chexlocalize",
    "save_study_figure": "chexviz.explain.figures",
    "scale_boxes": "chexviz.data.boxes",
    "score_chexlocalize": "chexviz.evaluate.chexlocalize",
    "score_faithfulness": "chexviz.evaluate.faithfulness",
    "score_human_benchmark": "chexviz.evaluate.chexlocalize",
    "score_localization": "chexviz.evaluate.localization",
    "segment_heatmap": "chexviz.evaluate.chexlocalize",
    "select_boxes": "chexviz.evaluate.localization",
    "split_by_patient": "chexviz.data.splits",
    "study_figure": "chexviz.explain.figures",
    "summarize_localization": "chexviz.evaluate.localization",
    "to_tensor": "chexviz.data.images",
    "tune_chexlocalize": "chexviz.evaluate.chexlocalize",
    "tune_thresholds": "chexviz.training.thresholds",
    "unscored_boxes": "chexviz.evaluate.localization",
    "validate_externally": "chexviz.evaluate.external",
    "write_chexlocalize": "chexviz.data.chexlocalize",
    "write_html_report": "chexviz.explain.report",
}

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
    "feature_correlations",
    "from_torchxrayvision",
    "geometric_features",
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
    "precision_sensitivity_specificity",
    "read_chexlocalize",
    "read_dicom",
    "read_extra",
    "read_nih_boxes",
    "read_salient_points",
    "read_tuning_csv",
    "register_backbone",
    "run_chexlocalize",
    "save_study_figure",
    "scale_boxes",
    "score_chexlocalize",
    "score_faithfulness",
    "score_human_benchmark",
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


def __getattr__(name: str) -> Any:
    """Imports the public name ``name`` from its home module on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'chexviz' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
