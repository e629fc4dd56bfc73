"""Binary cross-entropy for multi-label targets with ignored (NaN) entries.

CheXpert targets carry ``nan`` where a label is ignored (uncertain or blank under the ``"ignore"``
policy). Those entries must contribute neither to the loss nor to its gradient, and the loss must
stay a mean over the entries that are left so that its scale does not depend on how many were
ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

__all__ = [
    "MaskedBCEWithLogitsLoss",
    "masked_bce_sum",
    "masked_bce_with_logits",
    "pos_weight_from_targets",
]


def _check_shapes(logits: Tensor, targets: Tensor, pos_weight: Tensor | None) -> None:
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits have shape {tuple(logits.shape)} but targets have shape "
            f"{tuple(targets.shape)}; they must match"
        )
    if pos_weight is not None and pos_weight.shape != logits.shape[-1:]:
        raise ValueError(
            f"pos_weight has shape {tuple(pos_weight.shape)}; expected ({logits.shape[-1]},), "
            "one weight per label"
        )


def masked_bce_sum(
    logits: Tensor, targets: Tensor, pos_weight: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Sum of the per-entry BCE over non-ignored entries, and how many entries that was.

    Distributed training adds sums and counts over processes before dividing, which keeps the
    loss equal to the single-process mean;
    [`masked_bce_with_logits`][chexviz.training.losses.masked_bce_with_logits] is the local mean.

    Args:
        logits: Raw scores ``[..., L]``.
        targets: Targets of the same shape with values in ``{0, 1}``; ``nan`` marks an ignored
            entry.
        pos_weight: Optional weight ``[L]`` of the positive term per label.

    Returns:
        ``(sum, count)``: a float scalar (differentiable w.r.t. ``logits``) and the number of
        non-ignored entries as a float scalar.

    Raises:
        ValueError: If shapes do not match.
    """
    _check_shapes(logits, targets, pos_weight)
    valid = ~torch.isnan(targets)
    # Filling ignored entries with 0 keeps the elementwise loss finite; torch.where then blocks
    # their gradient, which multiplying by a mask would not do if the loss were inf.
    filled = torch.where(valid, targets, torch.zeros_like(targets)).to(logits.dtype)
    per_entry = F.binary_cross_entropy_with_logits(
        logits, filled, pos_weight=pos_weight, reduction="none"
    )
    total = torch.where(valid, per_entry, torch.zeros_like(per_entry)).sum(dtype=torch.float32)
    return total, valid.sum().to(torch.float32)


def masked_bce_with_logits(
    logits: Tensor, targets: Tensor, pos_weight: Tensor | None = None
) -> Tensor:
    """Mean binary cross-entropy with logits over the entries whose target is not ``nan``.

    A batch without any valid entry gives a loss of exactly 0 (and zero gradients), not ``nan``.

    Args:
        logits: Raw scores ``[..., L]``.
        targets: Targets of the same shape in ``{0, 1}``, ``nan`` for ignored entries.
        pos_weight: Optional weight ``[L]`` of the positive term per label (as in
            `torch.nn.BCEWithLogitsLoss`).

    Returns:
        The scalar loss.

    Raises:
        ValueError: If shapes do not match.
    """
    total, count = masked_bce_sum(logits, targets, pos_weight)
    return total / count.clamp_min(1.0)


class MaskedBCEWithLogitsLoss(nn.Module):
    """Module form of [`masked_bce_with_logits`][chexviz.training.losses.masked_bce_with_logits].

    Args:
        pos_weight: Optional weight of the positive term per label, length ``L``.
    """

    pos_weight: Tensor | None

    def __init__(self, pos_weight: Sequence[float] | np.ndarray | Tensor | None = None) -> None:
        super().__init__()
        if pos_weight is None:
            self.register_buffer("pos_weight", None)
            return
        weight = torch.as_tensor(np.asarray(pos_weight, dtype=np.float32))
        if weight.ndim != 1:
            raise ValueError(
                f"pos_weight must be one-dimensional (one weight per label), got shape "
                f"{tuple(weight.shape)}"
            )
        if not bool(torch.isfinite(weight).all()) or bool((weight <= 0).any()):
            raise ValueError(f"pos_weight must be finite and positive, got {weight.tolist()}")
        self.register_buffer("pos_weight", weight)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Return the masked mean loss.

        Args:
            logits: Raw scores ``[B, L]``.
            targets: Targets ``[B, L]`` with ``nan`` for ignored entries.

        Returns:
            The scalar loss.
        """
        return masked_bce_with_logits(logits, targets, self.pos_weight)


def pos_weight_from_targets(
    targets: np.ndarray | Tensor, *, max_weight: float = 100.0
) -> np.ndarray:
    """Per-label ``negatives / positives`` ratio, the usual ``pos_weight`` for class imbalance.

    Ignored (``nan``) entries are not counted. A label without positives gets ``max_weight``;
    one without negatives gets the smallest allowed weight, ``1 / max_weight``.

    Args:
        targets: Targets ``[N, L]`` in ``{0, 1, nan}`` (e.g. ``CheXpertDataset.targets``).
        max_weight: Upper clip of the ratio (and ``1 / max_weight`` the lower one).

    Returns:
        A float32 array ``[L]``.

    Raises:
        ValueError: If ``targets`` is not two-dimensional or ``max_weight`` is not above 1.
    """
    array = targets.detach().cpu().numpy() if isinstance(targets, Tensor) else np.asarray(targets)
    if array.ndim != 2:
        raise ValueError(f"targets must have shape [N, L], got {array.shape}")
    if not max_weight > 1.0:
        raise ValueError(f"max_weight must be above 1, got {max_weight}")
    positives = np.sum(array == 1, axis=0).astype(np.float64)
    negatives = np.sum(array == 0, axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(positives > 0, negatives / np.maximum(positives, 1.0), max_weight)
    return np.clip(ratio, 1.0 / max_weight, max_weight).astype(np.float32)
