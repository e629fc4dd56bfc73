"""Classification heads: a feature map ``[B, C, h, w]`` in, one logit per label out.

Every head consumes the backbone's feature map unchanged, so the Grad-CAM layer's output is
exactly what the head sees and gradients of the logits reach it.

* ``linear``: global average pooling, dropout, one linear layer.
* ``mlp``: the reference study's head; flatten, ``Linear(C*h*w, 1024)``, ReLU, dropout 0.5,
  ``Linear(1024, L)``. Flattening ties the model to one input size.
* ``attention``: the study's attention-gated global average pooling; 1x1 convolutions
  ``C -> 64 -> 16 -> 1`` (ReLU between, sigmoid last) give a spatial mask ``m``, features are
  pooled as ``sum(m * F) / sum(m)`` (the mean of the masked features rescaled by the mask's
  mean), then dropout, ``Linear(C, 256)``, ReLU, ``Linear(256, L)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

__all__ = [
    "DEFAULT_DROPOUT",
    "NEEDS_FEATURE_SIZE",
    "AttentionHead",
    "LinearHead",
    "MLPHead",
    "create_head",
    "default_dropout",
    "list_heads",
]

DEFAULT_DROPOUT: dict[str, float] = {"linear": 0.0, "mlp": 0.5, "attention": 0.25}
"""Dropout probability each head uses when none is given."""


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


class LinearHead(nn.Module):
    """Global average pooling, dropout and a linear layer.

    Args:
        num_features: Channels of the feature map.
        num_labels: Number of outputs.
        dropout: Dropout probability before the linear layer.
    """

    def __init__(self, num_features: int, num_labels: int, dropout: float = 0.0) -> None:
        super().__init__()
        _check_dropout(dropout)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(num_features, num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map ``[B, C, h, w]`` features to ``[B, L]`` logits."""
        pooled = features.mean(dim=(2, 3))
        out: torch.Tensor = self.fc(self.dropout(pooled))
        return out


class MLPHead(nn.Module):
    """Flatten, ``Linear(C*h*w, hidden)``, ReLU, dropout, ``Linear(hidden, L)``.

    Args:
        feature_shape: ``(C, h, w)`` of the feature map at the model's input size.
        num_labels: Number of outputs.
        dropout: Dropout probability after the hidden layer.
        hidden: Width of the hidden layer.
    """

    def __init__(
        self,
        feature_shape: tuple[int, int, int],
        num_labels: int,
        dropout: float = 0.5,
        hidden: int = 1024,
    ) -> None:
        super().__init__()
        _check_dropout(dropout)
        self.feature_shape = feature_shape
        c, h, w = feature_shape
        self.fc1 = nn.Linear(c * h * w, hidden)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map ``[B, C, h, w]`` features to ``[B, L]`` logits.

        Raises:
            ValueError: If the feature map is not ``feature_shape``.
        """
        if tuple(features.shape[1:]) != self.feature_shape:
            raise ValueError(
                f"mlp head expects feature maps of shape {self.feature_shape}, got "
                f"{tuple(features.shape[1:])}; it only accepts the input size it was built for"
            )
        out: torch.Tensor = self.fc2(self.dropout(self.relu(self.fc1(features.flatten(1)))))
        return out


class AttentionHead(nn.Module):
    """Attention-gated global average pooling followed by a two-layer classifier.

    The pooling weights are ``m / sum(m)`` with ``m = sigmoid(a)``; they are computed as
    ``softmax(logsigmoid(a))``, which is the same quantity but cannot divide by zero when the
    sigmoid underflows (large activations of an untrained network, half precision).

    Args:
        num_features: Channels of the feature map.
        num_labels: Number of outputs.
        dropout: Dropout probability on the pooled features.
        hidden: Width of the hidden layer.
    """

    def __init__(
        self, num_features: int, num_labels: int, dropout: float = 0.25, hidden: int = 256
    ) -> None:
        super().__init__()
        _check_dropout(dropout)
        self.attention = nn.Sequential(
            nn.Conv2d(num_features, 64, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(64, 16, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(16, 1, kernel_size=1),
        )
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(num_features, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_labels)

    def mask(self, features: torch.Tensor) -> torch.Tensor:
        """The spatial attention mask ``sigmoid(a)``, ``[B, 1, h, w]`` with values in ``[0, 1]``."""
        return torch.sigmoid(self.attention(features))

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Mask-weighted mean of the features, ``sum(m * F) / sum(m)``, shape ``[B, C]``."""
        logits: torch.Tensor = self.attention(features)
        weights = functional.logsigmoid(logits).flatten(2).softmax(dim=-1)  # [B, 1, h*w]
        return (features.flatten(2) * weights).sum(dim=-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map ``[B, C, h, w]`` features to ``[B, L]`` logits."""
        pooled = self.pool(features)
        out: torch.Tensor = self.fc2(self.relu(self.fc1(self.dropout(pooled))))
        return out


NEEDS_FEATURE_SIZE: frozenset[str] = frozenset({"mlp"})
"""Heads whose parameters depend on the feature map's spatial size."""


def default_dropout(name: str) -> float:
    """The dropout probability head ``name`` uses when none is given.

    Args:
        name: One of [`list_heads`][chexviz.models.heads.list_heads].

    Returns:
        The default probability.

    Raises:
        ValueError: If ``name`` is unknown (the message lists the heads).
    """
    if name not in DEFAULT_DROPOUT:
        raise ValueError(f"unknown head {name!r}; available heads: {', '.join(list_heads())}")
    return DEFAULT_DROPOUT[name]


def list_heads() -> list[str]:
    """Names accepted by [`create_head`][chexviz.models.heads.create_head], sorted.

    Returns:
        The head names.
    """
    return sorted(DEFAULT_DROPOUT)


def create_head(
    name: str,
    num_features: int,
    num_labels: int,
    *,
    dropout: float | None = None,
    feature_size: tuple[int, int] | None = None,
) -> nn.Module:
    """Build a head by name.

    Args:
        name: One of [`list_heads`][chexviz.models.heads.list_heads].
        num_features: Channels of the feature map it will receive.
        num_labels: Number of outputs.
        dropout: Dropout probability; None uses the head's default
            ([`DEFAULT_DROPOUT`][chexviz.models.heads.DEFAULT_DROPOUT]).
        feature_size: ``(h, w)`` of the feature map; required by the heads in
            [`NEEDS_FEATURE_SIZE`][chexviz.models.heads.NEEDS_FEATURE_SIZE], ignored by the others.

    Returns:
        The head module.

    Raises:
        ValueError: If ``name`` is unknown (the message lists the heads), ``feature_size`` is
            missing where needed, or an argument is out of range.
    """
    p = default_dropout(name) if dropout is None else dropout
    if num_features < 1 or num_labels < 1:
        raise ValueError(
            f"num_features and num_labels must be >= 1, got {num_features} and {num_labels}"
        )
    if name == "linear":
        return LinearHead(num_features, num_labels, p)
    if name == "attention":
        return AttentionHead(num_features, num_labels, p)
    if feature_size is None or len(feature_size) != 2 or min(feature_size) < 1:
        raise ValueError(f"head {name!r} needs feature_size=(h, w), got {feature_size}")
    return MLPHead((num_features, *feature_size), num_labels, p)
