"""Evaluation: scoring models and their maps against an answer key, with intervals.

The room above [`chexviz.training`][chexviz.training] and [`chexviz.explain`][chexviz.explain]
(as captum keeps ``attr`` apart from ``metrics``): the maps are made in ``explain`` and the
models trained in ``training``; here they are scored.

* [`localization`][chexviz.evaluate.localization]: heatmaps against annotated boxes (pointing
  game, IoU, energy), beside chance and an anatomical prior;
* [`chexlocalize`][chexviz.evaluate.chexlocalize]: the CheXlocalize protocol against
  radiologists' segmentations (segmentation, scoring with bootstrap, tuning, files, pipeline);
* [`faithfulness`][chexviz.evaluate.faithfulness]: deletion and insertion scores;
* [`external`][chexviz.evaluate.external]: a model on an external data set, per-label AUROC
  with patient bootstrap intervals;
* [`compare`][chexviz.evaluate.compare]: explanation methods side by side on the same X-rays,
  with paired bootstrap intervals.
"""

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
from chexviz.evaluate.compare import (
    MethodComparison,
    compare_localization,
    compare_methods,
)
from chexviz.evaluate.external import ExternalValidation, validate_externally
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

__all__ = [
    "CheXlocalizeScores",
    "CheXlocalizeTuning",
    "ExternalValidation",
    "MethodComparison",
    "anatomical_prior",
    "box_iou",
    "chance_pointing_rate",
    "compare_localization",
    "compare_methods",
    "deletion_score",
    "energy_in_box",
    "feature_correlations",
    "geometric_features",
    "insertion_score",
    "pointing_game",
    "precision_sensitivity_specificity",
    "read_tuning_csv",
    "run_chexlocalize",
    "score_chexlocalize",
    "score_faithfulness",
    "score_human_benchmark",
    "score_localization",
    "segment_heatmap",
    "select_boxes",
    "summarize_localization",
    "tune_chexlocalize",
    "unscored_boxes",
    "validate_externally",
]
