"""One heatmap against one mask at the X-ray's original size: the protocol's pixel work.

Shared by segmentation, scoring, tuning and the figures of the CheXlocalize protocol: checking
a map, resizing it as the reference does, min-max normalising it bit for bit, binarising it
(Otsu or a threshold), and the per-pair IoU and hit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

__all__ = [
    "Mask",
    "as_map",
    "binarise",
    "check_size",
    "check_threshold",
    "mask_iou",
    "normalise_",
    "otsu_fill",
    "peak_hit",
    "resize_map",
]

Mask = npt.NDArray[np.bool_]


def as_map(heatmap: object, where: str) -> torch.Tensor:
    """A heatmap as a 2-D float CPU tensor (float64 kept, anything else float32), checked."""
    if isinstance(heatmap, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(heatmap))
    elif isinstance(heatmap, torch.Tensor):
        tensor = heatmap.detach().cpu()
    else:
        raise TypeError(f"{where} must be a torch.Tensor or numpy.ndarray, got {type(heatmap)}")
    while tensor.ndim > 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 2 or tensor.numel() == 0:
        raise ValueError(f"{where} must be a non-empty 2-D map [h, w], got {list(heatmap.shape)}")
    if tensor.dtype != torch.float64:
        tensor = tensor.to(torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{where} contains NaN or infinite values")
    return tensor


def check_size(size: object) -> tuple[int, int]:
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(n, int | np.integer) and not isinstance(n, bool) for n in size)
        or not all(n > 0 for n in size)
    ):
        raise ValueError(f"size must be (height, width), two positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def check_threshold(threshold: float, where: str) -> np.float32:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.floating):
        raise TypeError(f"{where} must be a number, got {threshold!r}")
    if not math.isfinite(threshold):
        raise ValueError(f"{where} must be finite, got {threshold}")
    # The reference compares its float32 map with the threshold in float32 (NumPy 1.x's
    # value-based casting); comparing in float64 would move pixels lying on a candidate.
    level: np.float32 = np.float32(float(threshold))
    return level


def resize_map(heatmap: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The map resized bilinearly to ``size`` as the reference does it (a new tensor)."""
    return F.interpolate(heatmap[None, None], size=size, mode="bilinear", align_corners=False)[
        0, 0
    ].contiguous()


def normalise_(
    resized: torch.Tensor, extremes: tuple[torch.Tensor, torch.Tensor] | None = None
) -> np.ndarray | None:
    """Min-max normalises in place, bit for bit as the reference; None if the map is constant.

    The reference divides ``map - min`` by its maximum, which is ``fl(max - min)``: rounding is
    monotonic, so the largest difference is the difference of the largest value. That lets a
    caller pass the ``torch.aminmax`` it already has.
    """
    low, high = torch.aminmax(resized) if extremes is None else extremes
    top = high - low
    if float(top) == 0.0:
        return None
    resized.sub_(low).div_(top)
    return resized.cpu().numpy()


def otsu_fill(normalised: np.ndarray) -> Mask:
    """Otsu on the 8-bit map, then the outer contours filled (as heatmap_to_segmentation.py).

    The reference draws every contour of ``RETR_TREE`` with PIL (outline and fill); filling
    the outer contours with OpenCV covers the same pixels (tests compare the two), because an
    inner contour lies inside its outer one. Contours of a single point are dropped there too.
    """
    grey = (normalised * 255).astype(np.uint8)
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros(grey.shape, dtype=np.uint8)
    cv2.drawContours(filled, [c for c in contours if len(c) > 1], -1, 1, thickness=cv2.FILLED)
    return filled.view(np.bool_)


def binarise(normalised: np.ndarray | None, size: tuple[int, int], threshold: object) -> Mask:
    if normalised is None:  # a constant map highlights nothing
        return np.zeros(size, dtype=np.bool_)
    if threshold is None:
        return otsu_fill(normalised)
    return np.asarray(normalised > threshold, dtype=np.bool_)


def peak_hit(
    resized: torch.Tensor, truth: Mask, extremes: tuple[torch.Tensor, torch.Tensor]
) -> float:
    """1.0 when the map's first maximum lies in the mask; a constant map never hits."""
    low, high = extremes
    if bool(low == high):
        return 0.0
    return float(truth.flat[int(np.argmax(resized.cpu().numpy()))])


def mask_iou(predicted: Mask, truth: Mask | None, true_positive_only: bool) -> tuple[float, int]:
    """IoU as the reference ``calculate_iou`` (NaN where undefined) and the predicted size."""
    pred_pixels = int(np.count_nonzero(predicted))
    truth_pixels = 0 if truth is None else int(np.count_nonzero(truth))
    if true_positive_only and (pred_pixels == 0 or truth_pixels == 0):
        return math.nan, pred_pixels
    if truth is None or truth_pixels == 0:
        return (0.0 if pred_pixels else math.nan), pred_pixels
    inter = int(np.count_nonzero(predicted & truth))
    union = pred_pixels + truth_pixels - inter
    return (inter / union if union else math.nan), pred_pixels
