"""Explanations: Grad-CAM and its result, overlays, reports, localisation and faithfulness scores.

Imports [`chexviz.models`][chexviz.models] and [`chexviz.data`][chexviz.data]; never
[`chexviz.training`][chexviz.training].
"""

from chexviz.explain.chexlocalize import (
    CheXlocalizeScores,
    CheXlocalizeTuning,
    read_tuning_csv,
    run_chexlocalize,
    score_chexlocalize,
    segment_heatmap,
    tune_chexlocalize,
)
from chexviz.explain.explanation import Explanation
from chexviz.explain.faithfulness import deletion_score, insertion_score, score_faithfulness
from chexviz.explain.gradcam import METHODS, GradCAM
from chexviz.explain.localization import (
    anatomical_prior,
    box_iou,
    chance_pointing_rate,
    energy_in_box,
    map_peak,
    pointing_game,
    score_localization,
    select_boxes,
    summarize_localization,
    unscored_boxes,
)
from chexviz.explain.overlay import overlay_heatmap
from chexviz.explain.report import save_study_figure, study_figure, write_html_report

__all__ = [
    "CheXlocalizeScores",
    "CheXlocalizeTuning",
    "Explanation",
    "GradCAM",
    "METHODS",
    "anatomical_prior",
    "box_iou",
    "chance_pointing_rate",
    "deletion_score",
    "energy_in_box",
    "insertion_score",
    "map_peak",
    "overlay_heatmap",
    "pointing_game",
    "read_tuning_csv",
    "run_chexlocalize",
    "save_study_figure",
    "score_chexlocalize",
    "score_faithfulness",
    "score_localization",
    "segment_heatmap",
    "select_boxes",
    "study_figure",
    "summarize_localization",
    "tune_chexlocalize",
    "unscored_boxes",
    "write_html_report",
]
