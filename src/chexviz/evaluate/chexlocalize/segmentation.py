"""Segmentation: a heatmap binarised at its X-ray's original size, as CheXlocalize does it."""

from __future__ import annotations

import numpy as np
import torch

from chexviz.evaluate.chexlocalize._pixels import (
    Mask,
    as_map,
    binarise,
    check_size,
    check_threshold,
    normalise_,
    resize_map,
)

__all__ = ["HeatmapLike", "segment_heatmap"]

HeatmapLike = torch.Tensor | np.ndarray
"""A heatmap ``[h, w]`` at any resolution (leading dimensions of size 1 are dropped)."""


def segment_heatmap(
    heatmap: HeatmapLike, size: tuple[int, int], *, threshold: float | None = None
) -> Mask:
    """Binarises a heatmap at an X-ray's original size, as the CheXlocalize protocol does.

    The map is resized bilinearly (``align_corners=False``) to ``size`` and min-max
    normalised; then ``threshold=None`` applies Otsu's method to the map scaled to 8 bits
    (``uint8(255 * map)``) and fills the outer contours of the result, like the reference
    ``heatmap_to_segmentation.py``; a number keeps the pixels whose normalised value is above
    it. A constant map (all zero, typically) gives an empty mask.

    Args:
        heatmap: The map ``[h, w]`` at any resolution (a Grad-CAM map at the target layer's
            resolution, or upsampled); float64 maps stay float64, others become float32.
        size: ``(H, W)`` of the original X-ray.
        threshold: ``None`` for Otsu, or the level in ``[0, 1]`` of the normalised map.

    Returns:
        Boolean mask ``[H, W]``.

    Raises:
        TypeError: ``heatmap`` is neither a tensor nor an array.
        ValueError: ``heatmap`` is not a finite 2-D map, ``size`` is not two positive
            integers, or ``threshold`` is not finite.
    """
    shape = check_size(size)
    level = None if threshold is None else check_threshold(threshold, "threshold")
    normalised = normalise_(resize_map(as_map(heatmap, "heatmap"), shape))
    return binarise(normalised, shape, level)
