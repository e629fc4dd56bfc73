"""Explanations: Grad-CAM and its result, overlays, reports, localisation and faithfulness scores.

Imports [`chexviz.models`][chexviz.models] and [`chexviz.data`][chexviz.data]; never
[`chexviz.training`][chexviz.training].
"""

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
)
from chexviz.explain.overlay import overlay_heatmap
from chexviz.explain.report import save_study_figure, study_figure, write_html_report

__all__ = [
    "METHODS",
    "Explanation",
    "GradCAM",
    "anatomical_prior",
    "box_iou",
    "chance_pointing_rate",
    "deletion_score",
    "energy_in_box",
    "insertion_score",
    "map_peak",
    "overlay_heatmap",
    "pointing_game",
    "save_study_figure",
    "score_faithfulness",
    "score_localization",
    "select_boxes",
    "study_figure",
    "summarize_localization",
    "write_html_report",
]
