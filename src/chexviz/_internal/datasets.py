"""Seeing through ``torch.utils.data.Subset`` to the data set underneath."""

from __future__ import annotations

from torch.utils.data import Subset

__all__ = ["unwrap_subsets"]


def unwrap_subsets(dataset: object) -> tuple[object, list[int] | None]:
    """The data set under any number of nested ``Subset``s, and where each item lives there.

    Args:
        dataset: A data set, or a ``Subset`` (of a ``Subset`` ...) of one.

    Returns:
        ``(base, positions)``: ``positions[i]`` is the index in ``base`` of item ``i`` of
        ``dataset``; None when ``dataset`` is not a ``Subset`` (every item is its own position).
    """
    positions: list[int] | None = None
    while isinstance(dataset, Subset):
        inner = [int(i) for i in dataset.indices]
        positions = inner if positions is None else [inner[i] for i in positions]
        dataset = dataset.dataset
    return dataset, positions
