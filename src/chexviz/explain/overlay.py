"""Heatmap overlays on chest X-rays, in the right colour order.

The reference study passed an OpenCV (BGR) colour image to an RGB plotting library, so its
Grad-CAM figures showed the hottest regions in blue and the coldest in red. Here the colour
comes from a matplotlib colormap, which yields RGB, and the image is built as RGB end to end.

matplotlib is imported inside the functions that need it, so ``import chexviz`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from chexviz._internal.arrays import as_heatmap, as_numpy

if TYPE_CHECKING:
    from matplotlib.colors import Colormap

__all__ = ["colormap", "image_to_pil", "map_peak", "overlay_heatmap"]

ArrayLike = torch.Tensor | np.ndarray


def _shape(value: ArrayLike) -> tuple[int, ...]:
    return tuple(int(n) for n in value.shape)


def _unit_float(array: np.ndarray, name: str) -> np.ndarray:
    """Returns ``array`` as float64 in [0, 1]; uint8 is scaled by 1/255, bool read as 0/1."""
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if array.dtype == np.bool_:
        return array.astype(np.float64)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must hold numbers, got dtype {array.dtype}")
    out = array.astype(np.float64)
    if out.size and not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if out.size and (out.min() < 0.0 or out.max() > 1.0):
        raise ValueError(
            f"{name} values must lie in [0, 1], got min {out.min():.4g} and max {out.max():.4g}"
        )
    return out


def _image_rgb(image: ArrayLike, hw: tuple[int, int] | None) -> np.ndarray:
    """Returns the image as float64 RGB ``[H, W, 3]`` in [0, 1].

    Tensors are channels-first (``[C, H, W]`` or ``[H, W]``), as the datasets yield them;
    arrays may also be channels-last (``[H, W, C]``), as PIL and ``load_image`` give them.
    When both readings fit, ``hw`` (the heatmap's shape) picks the one whose size matches.
    """
    array = _unit_float(as_numpy(image, "image"), "image")
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.ndim == 3:
        first = array.shape[0] in (1, 3)
        last = array.shape[2] in (1, 3)
        if first and last and hw is not None and (array.shape[1:] == hw) != (array.shape[:2] == hw):
            first = array.shape[1:] == hw
        elif first and last:
            first = isinstance(image, torch.Tensor)
        elif not (first or last):
            raise ValueError(
                "image must have shape [H, W], [C, H, W] or [H, W, C] with C = 1 or 3, "
                f"got {tuple(array.shape)}"
            )
        if first:
            array = np.moveaxis(array, 0, 2)
    else:
        raise ValueError(f"image must be 2-D or 3-D, got shape {tuple(array.shape)}")
    if hw is not None and array.shape[:2] != hw:
        raise ValueError(
            f"image of shape {_shape(image)} and heatmap of shape {hw} "
            "must have the same height and width"
        )
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def _to_uint8(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8))


def colormap(cmap: str | Colormap) -> Colormap:
    """A matplotlib colour map by name (or the colour map given).

    Args:
        cmap: A matplotlib colour map name (``"inferno"``, ``"viridis"`` ...) or a colour map.

    Returns:
        The colour map.

    Raises:
        ValueError: If the name is not a matplotlib colour map.
    """
    import matplotlib

    if not isinstance(cmap, str):
        return cmap
    try:
        return matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(
            f"cmap {cmap!r} is not a matplotlib colormap name (try 'inferno', 'viridis', 'magma')"
        ) from None


def image_to_pil(image: ArrayLike) -> Image.Image:
    """Converts a model input image to an 8-bit RGB PIL image.

    Args:
        image: Greyscale or RGB image with values in [0, 1] (or ``uint8``): a tensor
            ``[C, H, W]`` or ``[H, W]``, or an array ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]``
            with ``C`` 1 or 3.

    Returns:
        The image in RGB mode; a greyscale image has three equal channels.

    Raises:
        ValueError: If the shape is not one of the above or values fall outside [0, 1].
    """
    return _to_uint8(_image_rgb(image, None))


def overlay_heatmap(
    image: ArrayLike,
    heatmap: ArrayLike,
    *,
    alpha: float = 0.5,
    cmap: str | Colormap = "inferno",
) -> Image.Image:
    """Blends a colour-mapped heatmap over an image.

    Each output pixel is ``(1 - alpha) * image + alpha * cmap(heatmap)`` in RGB, so the
    colormap's top colour marks the heatmap's maximum. Perceptually uniform maps
    (``"inferno"``, ``"viridis"``, ``"magma"``) are recommended over ``"jet"``, whose
    uneven lightness invents edges.

    Args:
        image: Greyscale or RGB image with values in [0, 1] (or ``uint8``): a tensor
            ``[C, H, W]`` or ``[H, W]``, or an array ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]``
            with ``C`` 1 or 3.
        heatmap: Map ``[H, W]`` with values in [0, 1] (or a boolean mask), at the image's
            resolution.
        alpha: Weight of the heatmap colour, from 0 (image only) to 1 (heatmap only).
        cmap: A matplotlib colormap or its registered name.

    Returns:
        An RGB PIL image of size ``W x H``.

    Raises:
        ValueError: If ``alpha`` is outside [0, 1], ``cmap`` is unknown, the heatmap is not
            2-D, the shapes disagree (both are named) or values fall outside [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    heat = _unit_float(as_numpy(heatmap, "heatmap"), "heatmap")
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be 2-D [H, W], got shape {tuple(heat.shape)}")
    hw = (int(heat.shape[0]), int(heat.shape[1]))
    rgb = _image_rgb(image, hw)
    colours = np.asarray(colormap(cmap)(heat), dtype=np.float64)[..., :3]
    return _to_uint8((1.0 - alpha) * rgb + alpha * colours)


def map_peak(heatmap: ArrayLike) -> tuple[int, int] | None:
    """The one point a map points at: its arg-max, as ``(row, column)``.

    Tie rule: among equal maxima, the first in row-major order (the top-most, then the
    left-most), which is what ``np.argmax`` returns and what CheXlocalize's pointing game
    (``eval_ptgame.py``: ``np.unravel_index(np.argmax(map))``) uses. A single point matters:
    bilinear upsampling turns a maximum in a corner cell into a plateau of tied pixels, and
    counting a hit when *any* of them falls in a box would inflate hits along the borders.

    Args:
        heatmap: Map ``[H, W]``.

    Returns:
        ``(row, column)``, or None for a constant map (all pixels tied, such as an all-zero
        map), which points nowhere.

    Raises:
        ValueError: If the map is not a finite 2-D map.
    """
    heat = as_heatmap(heatmap)
    if heat.max() == heat.min():
        return None
    row, column = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(row), int(column)
