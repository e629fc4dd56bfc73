"""Turning heatmaps and images given as tensors or arrays into NumPy, with the checks they need."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["as_heatmap", "as_numpy", "on_host"]


def on_host(value: Any) -> Any:
    """``value`` with a tensor detached and copied to the CPU, where NumPy can read it.

    Anything else is returned unchanged. Public functions that take array-likes call it first,
    so that a tensor on a GPU (``model.thresholds``, say) works where a list or array does.

    Args:
        value: A tensor on any device, or any other value.

    Returns:
        A CPU tensor, or ``value`` itself.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return value


def as_numpy(value: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    """A tensor as a float64 array on the host; an array unchanged (its dtype kept).

    Args:
        value: A tensor on any device, or an array.
        name: The argument's name, for the error.

    Returns:
        The array.

    Raises:
        TypeError: If ``value`` is neither a tensor nor an array.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def as_heatmap(
    value: torch.Tensor | np.ndarray, name: str = "heatmap", *, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """A 2-D, finite heatmap as float64.

    Args:
        value: The map ``[H, W]``, a tensor on any device or an array.
        name: The argument's name, for the errors.
        shape: The ``(H, W)`` it must have, or None for any non-empty 2-D shape.

    Returns:
        The map as a float64 array.

    Raises:
        TypeError: If ``value`` is neither a tensor nor an array.
        ValueError: If it is not a non-empty 2-D map (of ``shape``) or holds NaN or inf.
    """
    heat = as_numpy(value, name).astype(np.float64, copy=False)
    if shape is not None and heat.shape != shape:
        raise ValueError(
            f"{name} of shape {tuple(heat.shape)} must match the image's height and width {shape}"
        )
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D map [H, W], got shape {heat.shape}")
    if not np.isfinite(heat).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return heat
