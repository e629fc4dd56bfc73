"""Argument checks shared by the public entry points of several layers."""

from __future__ import annotations

from typing import Literal

__all__ = ["CROPS", "Crop", "check_crop", "check_in_channels"]

Crop = Literal["whole", "center"]
"""How an image becomes a square: resized ``"whole"``, or its centred square (``"center"``)."""
CROPS: tuple[Crop, ...] = ("whole", "center")


def check_in_channels(in_channels: object, name: str = "in_channels") -> int:
    """Checks that a channel count is 1 (greyscale) or 3 (RGB).

    Args:
        in_channels: The value given.
        name: What to call it in the error (an argument name, or ``"backbone 'x' in_channels"``).

    Returns:
        The value, as an int.

    Raises:
        ValueError: If it is not the integer 1 or 3 (``True`` is not 1).
    """
    if isinstance(in_channels, bool) or in_channels not in (1, 3):
        raise ValueError(f"{name} must be 1 or 3, got {in_channels!r}")
    return 1 if in_channels == 1 else 3


def check_crop(crop: object, name: str = "crop") -> Crop:
    """Checks that a crop mode is ``"whole"`` or ``"center"``.

    Args:
        crop: The value given.
        name: What to call it in the error (an argument name, or a header field).

    Returns:
        The value, typed as a [`Crop`][chexviz._internal.checks.Crop].

    Raises:
        ValueError: If it is neither.
    """
    if crop == "whole" or crop == "center":
        return "whole" if crop == "whole" else "center"
    raise ValueError(f"{name} must be 'whole' or 'center', got {crop!r}")
