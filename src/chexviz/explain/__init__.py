"""Explanations: Grad-CAM and its result, overlays and reports.

Imports [`chexviz.models`][chexviz.models] and [`chexviz.data`][chexviz.data]; never
[`chexviz.training`][chexviz.training] or [`chexviz.evaluate`][chexviz.evaluate], which scores
the maps made here.
"""

from chexviz.explain.explanation import Explanation
from chexviz.explain.figures import save_study_figure, study_figure
from chexviz.explain.gradcam import METHODS, GradCAM
from chexviz.explain.integrated_gradients import IntegratedGradients
from chexviz.explain.methods import MAP_METHODS, map_maker
from chexviz.explain.overlay import map_peak, overlay_heatmap
from chexviz.explain.report import write_html_report

__all__ = [
    "Explanation",
    "GradCAM",
    "IntegratedGradients",
    "MAP_METHODS",
    "METHODS",
    "map_maker",
    "map_peak",
    "overlay_heatmap",
    "save_study_figure",
    "study_figure",
    "write_html_report",
]
