"""Map makers by name: every explanation method that gives a map per class.

A map maker is anything with ``.model`` and ``.explain(images, classes)`` returning an
[`Explanation`][chexviz.explain.explanation.Explanation];
[`MAP_METHODS`][chexviz.explain.methods.MAP_METHODS] names a factory ``model -> map maker``
for each method chexviz ships, and [`map_maker`][chexviz.explain.methods.map_maker] builds
one from a name or a callable, so a new method can be compared beside the others.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

import torch
from torch import nn

from chexviz.explain.explanation import Explanation
from chexviz.explain.gradcam import METHODS, GradCAM
from chexviz.explain.integrated_gradients import IntegratedGradients

__all__ = ["MAP_METHODS", "MapMaker", "MapMakerFactory", "map_maker"]


class MapMaker(Protocol):
    """What scoring needs of an explainer: its model, and maps per class of a batch."""

    @property
    def model(self) -> nn.Module:
        """The explained model (its ``labels`` name the classes)."""

    def explain(self, img: torch.Tensor, classes: Sequence[Sequence[str]] | None, /) -> Explanation:
        """Maps of the given classes of each image of ``[B, C, H, W]`` (None: its positives)."""


MapMakerFactory: TypeAlias = Callable[[nn.Module], Any]
"""``model -> map maker`` (typed loosely: a callable returning any object with ``.model``
and ``.explain``)."""


def _cam(method: str) -> MapMakerFactory:
    def factory(model: nn.Module) -> GradCAM:
        return GradCAM(model, method=method)  # type: ignore[arg-type]

    return factory


MAP_METHODS: Mapping[str, MapMakerFactory] = {
    **{name: _cam(name) for name in METHODS},
    "ig": IntegratedGradients,
}
"""Method name -> factory: the CAM family of [`GradCAM`][chexviz.explain.gradcam.GradCAM]
(``gradcam``, ``gradcam++``, ``xgradcam``, ``hirescam``, ``layercam``, ``eigencam``) at the
model's default target layer, and ``ig``,
[`IntegratedGradients`][chexviz.explain.integrated_gradients.IntegratedGradients] (black
baseline, 50 steps)."""


def map_maker(method: str | MapMakerFactory, model: nn.Module) -> MapMaker:
    """The map maker of ``model`` for a method name or factory.

    Args:
        method: A name of [`MAP_METHODS`][chexviz.explain.methods.MAP_METHODS], or a
            callable ``model -> map maker``.
        model: The classifier.

    Returns:
        The map maker.

    Raises:
        ValueError: An unknown name (the message lists the known ones), or a factory that
            returned something without ``model`` and ``explain``.
    """
    if isinstance(method, str):
        factory = MAP_METHODS.get(method)
        if factory is None:
            close = difflib.get_close_matches(method, list(MAP_METHODS), n=3)
            hint = f" (did you mean {close}?)" if close else ""
            raise ValueError(
                f"unknown explanation method {method!r}{hint}; known methods: {list(MAP_METHODS)}"
            )
    elif callable(method):
        factory = method
    else:
        raise TypeError(
            f"a method must be a name or a callable model -> map maker, got {type(method).__name__}"
        )
    made = factory(model)
    if not callable(getattr(made, "explain", None)) or not hasattr(made, "model"):
        raise ValueError(
            f"method {method!r} returned {type(made).__name__}, which has no .model and "
            ".explain(images, classes)"
        )
    maker: MapMaker = made
    return maker
