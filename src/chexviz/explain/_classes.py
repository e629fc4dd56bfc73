"""Classes to explain and the model behind wrappers: shared by the map makers of ``explain``."""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence
from typing import Any, TypeAlias, TypeGuard

import torch
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

__all__ = [
    "ClassSpec",
    "check_threshold",
    "class_index",
    "class_indices",
    "is_class",
    "model_labels",
    "resolve_classes",
    "unwrap",
]

ClassSpec: TypeAlias = str | int
"""A class to explain: a label name, or the index of the model output."""


def resolve_classes(
    classes: ClassSpec | Sequence[ClassSpec] | Sequence[Sequence[ClassSpec]] | None,
    labels: tuple[str, ...],
    batch: int,
    probabilities: torch.Tensor,
    thresholds: torch.Tensor,
) -> list[list[int]]:
    """Output indices to explain, per image."""
    if classes is None:
        positive = probabilities >= thresholds
        return [torch.nonzero(row).flatten().tolist() for row in positive]
    if is_class(classes):
        return [[class_index(classes, labels)]] * batch
    if not isinstance(classes, Sequence):
        raise TypeError(
            f"classes must be None, a label name or index, or a sequence of them, got "
            f"{type(classes).__name__}"
        )
    if all(is_class(c) for c in classes):
        shared = class_indices(classes, labels, "classes")
        return [list(shared) for _ in range(batch)]
    if not all(isinstance(c, Sequence) and not isinstance(c, str) for c in classes):
        raise TypeError(
            "classes must be a sequence of label names / indices (same for every image) or a "
            "sequence of such sequences (one per image), not a mix"
        )
    if len(classes) != batch:
        raise ValueError(
            f"classes has {len(classes)} per-image entries but the batch has {batch} images"
        )
    return [class_indices(c, labels, f"classes[{b}]") for b, c in enumerate(classes)]


def is_class(value: object) -> TypeGuard[ClassSpec]:
    return isinstance(value, str | int) and not isinstance(value, bool)


def class_indices(values: Any, labels: tuple[str, ...], where: str) -> list[int]:
    if not all(is_class(v) for v in values):
        raise TypeError(f"{where} must hold label names or indices, got {list(values)!r}")
    indices = [class_index(v, labels) for v in values]
    repeated = sorted({labels[k] for k, n in Counter(indices).items() if n > 1})
    if repeated:
        raise ValueError(f"{where} asks for {repeated} more than once")
    return indices


def class_index(value: ClassSpec, labels: tuple[str, ...]) -> int:
    if isinstance(value, str):
        if value in labels:
            return labels.index(value)
        close = difflib.get_close_matches(value, labels, n=3)
        hint = f" (did you mean {close}?)" if close else ""
        raise ValueError(f"unknown class {value!r}{hint}; the model's labels are {list(labels)}")
    if not 0 <= value < len(labels):
        raise ValueError(
            f"class index {value} is out of range; the model has {len(labels)} outputs "
            f"(0..{len(labels) - 1})"
        )
    return value


def check_threshold(threshold: float | None) -> float | None:
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise TypeError(f"threshold must be a float in [0, 1], got {type(threshold).__name__}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    return float(threshold)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside ``torch.compile`` and (Distributed)DataParallel wrappers."""
    while True:
        # torch.compile returns an OptimizedModule that keeps the original as ``_orig_mod``.
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
        elif isinstance(model, DistributedDataParallel | DataParallel):
            model = model.module
        else:
            return model


def model_labels(model: nn.Module) -> tuple[str, ...] | None:
    labels = getattr(model, "labels", None)
    if isinstance(labels, Sequence) and labels and all(isinstance(x, str) for x in labels):
        return tuple(labels)
    return None


DEFAULT_THRESHOLD = 0.5
"""The threshold of a model without ``thresholds``."""


def output_labels(labels: tuple[str, ...] | None, width: int) -> tuple[str, ...]:
    """The names of a model's ``width`` outputs: its ``labels``, or ``"0"`` .. ``"K-1"``.

    Raises:
        ValueError: If the model has labels but not one per output.
    """
    if labels is None:
        return tuple(str(k) for k in range(width))
    if len(labels) != width:
        raise ValueError(f"the model has {len(labels)} labels but returned {width} outputs")
    return labels


def model_thresholds(model: nn.Module, n_labels: int, override: float | None) -> torch.Tensor:
    """The thresholds that choose positives: ``override``, the model's own, or 0.5 each.

    Raises:
        ValueError: If ``model.thresholds`` is a tensor that is not one value per output.
    """
    if override is not None:
        return torch.full((n_labels,), override, dtype=torch.float32)
    own = getattr(model, "thresholds", None)
    if isinstance(own, torch.Tensor):
        if tuple(own.shape) != (n_labels,):
            raise ValueError(f"model.thresholds has shape {list(own.shape)}, expected [{n_labels}]")
        return own.detach().to("cpu", torch.float32).clone()
    return torch.full((n_labels,), DEFAULT_THRESHOLD, dtype=torch.float32)
