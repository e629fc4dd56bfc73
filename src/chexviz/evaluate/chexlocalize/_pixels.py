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
    "Canvas",
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


class Canvas:
    """Full-resolution scratch arrays, reused from one map to the next.

    One 6.5-megapixel map passes through about 70 MB of intermediate arrays (the resized map,
    ``255 * map``, its 8-bit copy, Otsu's binary image, the filled mask, a comparison). Made
    afresh for every map, each is a new mapping whose pages the kernel faults in and zeroes,
    which costs about as much as the arithmetic. A canvas keeps one flat buffer per role, as
    large as the largest image so far, and hands out contiguous views of the size asked for;
    the kernels are the same as `resize_map` and `otsu_fill`, so are the bits.

    A view is overwritten by the next call that uses its role: callers finish with one map
    before starting the next.
    """

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, np.dtype[np.generic]], np.ndarray] = {}
        self._tensors: dict[torch.dtype, torch.Tensor] = {}

    def array(self, role: str, size: tuple[int, int], dtype: npt.DTypeLike) -> np.ndarray:
        """A C-contiguous ``size`` view of the ``role`` buffer (contents undefined)."""
        key = (role, np.dtype(dtype))
        count = size[0] * size[1]
        flat = self._arrays.get(key)
        if flat is None or flat.size < count:
            flat = self._arrays[key] = np.empty(count, dtype=key[1])
        return flat[:count].reshape(size)

    def resize(self, heatmap: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """`resize_map` into the canvas: the same kernel (``F.interpolate`` calls it)."""
        count = size[0] * size[1]
        flat = self._tensors.get(heatmap.dtype)
        if flat is None or flat.numel() < count:
            flat = self._tensors[heatmap.dtype] = torch.empty(count, dtype=heatmap.dtype)
        out = flat[:count].view(1, 1, *size)
        torch.ops.aten.upsample_bilinear2d.out(
            heatmap[None, None], list(size), False, None, None, out=out
        )
        return out[0, 0]

    def otsu_fill(self, normalised: np.ndarray) -> Mask:
        """`otsu_fill` with the canvas's buffers (the mask is one of them)."""
        size = (normalised.shape[0], normalised.shape[1])
        scaled = self.array("scaled", size, normalised.dtype)
        np.multiply(normalised, 255, out=scaled)
        grey = self.array("grey", size, np.uint8)
        np.copyto(grey, scaled, casting="unsafe")  # as astype: truncation toward zero
        binary = self.array("binary", size, np.uint8)
        cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU, dst=binary)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        filled = self.array("filled", size, np.uint8)
        filled.fill(0)
        cv2.drawContours(filled, [c for c in contours if len(c) > 1], -1, 1, thickness=cv2.FILLED)
        return filled.view(np.bool_)


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
    return Canvas().otsu_fill(normalised)


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
