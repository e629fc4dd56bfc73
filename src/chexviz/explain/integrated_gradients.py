"""Integrated Gradients maps through captum, in the same form as Grad-CAM's.

``IntegratedGradients(model).explain(images, classes)`` returns an
[`Explanation`][chexviz.explain.explanation.Explanation] like
[`GradCAM.explain`][chexviz.explain.gradcam.GradCAM.explain], so anything that scores Grad-CAM
maps scores these too. captum is an optional dependency (``pip install 'chexviz[captum]'``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from chexviz._internal.modules import device_dtype, eval_mode
from chexviz.explain._cam import minmax
from chexviz.explain._classes import (
    ClassSpec,
    check_threshold,
    model_labels,
    model_thresholds,
    output_labels,
    resolve_classes,
    unwrap,
)
from chexviz.explain.explanation import Explanation

__all__ = ["DEFAULT_STEPS", "IntegratedGradients"]

DEFAULT_STEPS = 50
"""Riemann steps of the path integral (captum's default)."""


def _captum_integrated_gradients() -> Any:
    try:
        module = importlib.import_module("captum.attr")
    except ImportError as error:
        raise ImportError(
            "Integrated Gradients needs captum: pip install 'chexviz[captum]' (or pip install "
            "captum)"
        ) from error
    return module.IntegratedGradients


class IntegratedGradients:
    """Integrated Gradients (Sundararajan et al., 2017) of each class's logit, via captum.

    The attribution of pixel ``x_i`` is ``(x_i - x'_i) * mean_s dF/dx_i(x' + s (x - x'))``
    over ``n_steps`` points ``s`` of captum's Gauss-Legendre rule, with ``F`` the class's
    **logit** and the baseline ``x'`` a **black image (all zeros)** in the model's input
    space. The map of a class is ``sum_channels |attribution|`` at the input's resolution,
    with no smoothing or pooling; ``heatmaps`` are its min-max normalisation, ``raw_maps``
    the map itself. ``Explanation.layer`` records the baseline and step count.

    All the requested classes of a batch go to captum in **one** call: each image is repeated
    once per class it explains, with ``target`` the list of classes, so a batch of ``B``
    images and ``J`` classes costs ``n_steps * B * J`` forward and backward passes, split
    into chunks of ``internal_batch_size`` if given.

    Args:
        model: A classifier mapping ``[B, C, H, W]`` to logits ``[B, K]`` (its ``labels``
            and ``thresholds`` are used where it has them, as by ``GradCAM``).
        n_steps: Steps of the path integral (50 by default, captum's default).
        internal_batch_size: Most inputs per forward pass inside captum (None: all of them).

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: ``n_steps`` or ``internal_batch_size`` is below 1.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        n_steps: int = DEFAULT_STEPS,
        internal_batch_size: int | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
        if internal_batch_size is not None and internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be at least 1, got {internal_batch_size}")
        self._model = unwrap(model)
        self._labels = model_labels(self._model)
        self._n_steps = n_steps
        self._internal_batch_size = internal_batch_size

    @property
    def model(self) -> nn.Module:
        """The explained model."""
        return self._model

    @property
    def method(self) -> str:
        """``"ig"``."""
        return "ig"

    @property
    def n_steps(self) -> int:
        """Steps of the path integral."""
        return self._n_steps

    def __repr__(self) -> str:
        return (
            f"IntegratedGradients(model={type(self._model).__name__}, baseline='zeros', "
            f"n_steps={self._n_steps})"
        )

    def explain(
        self,
        img: torch.Tensor,
        classes: ClassSpec | Sequence[ClassSpec] | Sequence[Sequence[ClassSpec]] | None = None,
        *,
        threshold: float | None = None,
    ) -> Explanation:
        """Integrated Gradients maps of one image ``[C, H, W]`` or a batch ``[B, C, H, W]``.

        Args:
            img: The image tensor(s), as the model takes them.
            classes: What to explain, as for ``GradCAM.explain``: None (predicted
                positives), label names / indices for every image, or one sequence per image.
            threshold: Overrides every label's threshold when choosing positives.

        Returns:
            The explanation (CPU tensors), maps at the input's resolution.

        Raises:
            TypeError: ``img`` is not a tensor.
            ValueError: ``img`` is not 3-D or 4-D, the model does not return logits
                ``[B, K]``, a class is unknown, or a map is not finite.
            ImportError: captum is not installed (the message says how to install it).
        """
        if not isinstance(img, torch.Tensor):
            raise TypeError(
                f"IntegratedGradients explains image tensors [C, H, W] or [B, C, H, W], got "
                f"{type(img).__name__}"
            )
        threshold = check_threshold(threshold)
        images = img.detach().unsqueeze(0) if img.ndim == 3 else img.detach()
        if images.ndim != 4:
            raise ValueError(
                f"expected an image [C, H, W] or a batch [B, C, H, W], got {list(img.shape)}"
            )
        attribute = _captum_integrated_gradients()
        model = self._model
        device, dtype = device_dtype(model)
        inputs = images.to(device=device, dtype=dtype)
        with torch.inference_mode(False), eval_mode(model):
            with torch.no_grad():
                logits = model(inputs)
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                raise ValueError("the model must return logits [B, K]")
            labels = output_labels(self._labels, int(logits.shape[1]))
            probabilities = torch.sigmoid(logits.float()).cpu()
            thresholds = model_thresholds(self._model, len(labels), threshold)
            wanted = resolve_classes(classes, labels, len(images), probabilities, thresholds)
            owners = [b for b, row in enumerate(wanted) for _ in row]
            targets = [k for row in wanted for k in row]
            maps = torch.empty(0)
            if targets:
                repeated = inputs[owners]
                attributions = attribute(model).attribute(
                    repeated,
                    baselines=torch.zeros_like(repeated),
                    target=targets,
                    n_steps=self._n_steps,
                    internal_batch_size=self._internal_batch_size,
                )
                maps = attributions.detach().abs().sum(dim=1).float().cpu()
        heatmaps: list[dict[str, torch.Tensor]] = [{} for _ in images]
        raw_maps: list[dict[str, torch.Tensor]] = [{} for _ in images]
        zero_maps: list[frozenset[str]] = [frozenset() for _ in images]
        position = 0
        for b, row in enumerate(wanted):
            zero = set()
            for k in row:
                raw = maps[position]
                position += 1
                if not bool(torch.isfinite(raw).all()):
                    raise ValueError(
                        f"the Integrated Gradients map of class {labels[k]!r} for image {b} is "
                        "not finite"
                    )
                raw_maps[b][labels[k]] = raw
                heatmaps[b][labels[k]] = minmax(raw)
                if float(raw.max()) == 0.0:
                    zero.add(labels[k])
            zero_maps[b] = frozenset(zero)
        return Explanation(
            images=images.cpu(),
            labels=labels,
            probabilities=probabilities,
            thresholds=thresholds,
            classes=tuple(tuple(labels[k] for k in row) for row in wanted),
            heatmaps=tuple(heatmaps),
            raw_maps=tuple(raw_maps),
            zero_maps=tuple(zero_maps),
            layer=f"input (baseline: black image, {self._n_steps} steps)",
            method="ig",
            source_sizes=(),
        )
