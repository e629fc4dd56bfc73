"""The CheXlocalize evaluation protocol: heatmaps against radiologists' segmentations.

This package runs the protocol of CheXlocalize (Saporta et al., Nature Machine Intelligence
2022) on any heatmaps, such as chexviz's Grad-CAM maps, against the ground truth read by
[`read_chexlocalize`][chexviz.data.chexlocalize.read_chexlocalize]:

1. A heatmap (at any resolution) is resized bilinearly (``align_corners=False``) to its
   X-ray's original size and min-max normalised
   ([`segment_heatmap`][chexviz.evaluate.chexlocalize.segmentation.segment_heatmap]).
2. It is binarised at a per-pathology threshold, or by default with **Otsu's method** on the
   8-bit map followed by filling the outer contours, exactly as the reference
   ``heatmap_to_segmentation.py`` does (OpenCV's Otsu threshold and contours; a contour of a
   single pixel is dropped). An optional per-pathology probability cutoff empties the mask
   when the model's probability is below it.
3. **IoU** per (CXR, pathology), on the true-positive slice (both masks non-empty) by default
   or on the full set (undefined only when both masks are empty); **hit**: whether the
   single maximum of the resized map lies inside the ground-truth mask (defined where the
   mask is non-empty).
4. Per pathology, the mean and a 95% bootstrap interval over 1,000 resamples of CXRs, drawn
   as the reference ``eval.py`` draws them (``np.random.seed(seed)``, ``np.random.choice``)
   and over the same rows: IoU's over every scored CXR (on the full set, those without a
   ground-truth entry too), hit rate's over the ground-truth file's CXRs only. So a seed
   gives the reference's intervals.

[`score_chexlocalize`][chexviz.evaluate.chexlocalize.scoring.score_chexlocalize] does all of
it, one CXR at a time (the masks of a whole validation set would not fit in memory), and
scores two baselines on the same CXRs: **chance** (a uniformly random point, and a mask
covering the whole image: both score the fraction of the image inside the ground truth) and an
**anatomical prior** (per pathology and view, the mean ground-truth mask of the *other*
patients, put through the same pipeline as a heatmap).
[`tune_chexlocalize`][chexviz.evaluate.chexlocalize.tuning.tune_chexlocalize] finds the
thresholds and probability cutoffs that maximise mIoU in a single pass over the images.

One module per concern:

* [`segmentation`][chexviz.evaluate.chexlocalize.segmentation]: a heatmap to a mask;
* [`scoring`][chexviz.evaluate.chexlocalize.scoring]: IoU, hit, baselines and the bootstrap;
* [`tuning`][chexviz.evaluate.chexlocalize.tuning]: thresholds and cutoffs in one pass;
* [`files`][chexviz.evaluate.chexlocalize.files]: tuned values read back, plots, overlays;
* [`human`][chexviz.evaluate.chexlocalize.human]: the human benchmark, pixel precision,
  sensitivity and specificity;
* [`geometry`][chexviz.evaluate.chexlocalize.geometry]: the findings' geometric features and
  their correlation with the scores;
* [`pipeline`][chexviz.evaluate.chexlocalize.pipeline]: all of it on a data set.
"""

from chexviz.evaluate.chexlocalize.files import (
    ground_truth_overlay,
    plot_chexlocalize,
    read_tuning_csv,
)
from chexviz.evaluate.chexlocalize.geometry import (
    feature_correlations,
    geometric_features,
    shape_features,
)
from chexviz.evaluate.chexlocalize.human import (
    precision_sensitivity_specificity,
    score_human_benchmark,
)
from chexviz.evaluate.chexlocalize.pipeline import (
    CheXlocalizeMaps,
    chexlocalize_maps,
    run_chexlocalize,
)
from chexviz.evaluate.chexlocalize.scoring import (
    CheXlocalizeScores,
    GroundTruth,
    score_chexlocalize,
)
from chexviz.evaluate.chexlocalize.segmentation import HeatmapLike, segment_heatmap
from chexviz.evaluate.chexlocalize.tuning import (
    DEFAULT_CUTOFFS,
    DEFAULT_THRESHOLDS,
    CheXlocalizeTuning,
    tune_chexlocalize,
)

__all__ = [
    "DEFAULT_CUTOFFS",
    "DEFAULT_THRESHOLDS",
    "CheXlocalizeMaps",
    "CheXlocalizeScores",
    "CheXlocalizeTuning",
    "GroundTruth",
    "HeatmapLike",
    "chexlocalize_maps",
    "feature_correlations",
    "geometric_features",
    "ground_truth_overlay",
    "plot_chexlocalize",
    "precision_sensitivity_specificity",
    "read_tuning_csv",
    "run_chexlocalize",
    "score_chexlocalize",
    "score_human_benchmark",
    "segment_heatmap",
    "shape_features",
    "tune_chexlocalize",
]
