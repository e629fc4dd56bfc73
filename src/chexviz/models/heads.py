"""Classification heads: a feature map ``[B, C, h, w]`` in, one logit per label out.

Every head receives the backbone's Grad-CAM feature map, so gradients of the logits reach it.

* ``linear``: global average pooling, dropout, one linear layer.
* ``mlp``: the reference study's head. Flatten, ``Linear(C*h'*w', 1024)``, ReLU, dropout 0.5,
  ``Linear(1024, L)``. It first applies the backbone's ``final_pool`` (VGG-16's block5 max-pool,
  which Keras' ``VGG16(include_top=False)`` ends with but chexviz's backbone leaves to the head
  so that Grad-CAM sees the finer map), so ``h' x w'`` is what the study's flatten layer saw.
  Flattening ties the model to one input size.
* ``study_attention``: the study's attention model (seed report, section III.B): the
  ``final_pool``, batch normalisation, 1x1 convolutions of 64 and 16 filters (ReLU), a locally
  connected 1x1 sigmoid gate (its own weights at each position), the gate fanned out to every
  channel and multiplied with the normalised features, global average pooling of the product
  divided by that of the gate, dropout 0.5, ``Linear(C, 256)``, ReLU, dropout 0.25,
  ``Linear(256, L)``. Also tied to one input size (the gate has weights per position).
* ``attention_pool``: a simpler attention-gated average pooling (formerly named
  ``attention``): a shared 1x1 convolution gate on the raw features, no batch normalisation, no
  locally connected layer, no pooling before it, one dropout; it accepts any input size.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

__all__ = [
    "DEFAULT_DROPOUT",
    "NEEDS_FEATURE_SIZE",
    "AttentionPoolHead",
    "LinearHead",
    "LocallyConnectedGate",
    "MLPHead",
    "StudyAttentionHead",
    "create_head",
    "default_dropout",
    "list_heads",
]

DEFAULT_DROPOUT: dict[str, float] = {
    "attention_pool": 0.25,
    "linear": 0.0,
    "mlp": 0.5,
    "study_attention": 0.5,
}
"""Dropout probability each head uses when none is given (``study_attention``: the first of
its two dropouts; the second is the study's 0.25)."""

_RENAMED = {"attention": "attention_pool"}
"""Old head names, for an error that says what they are called now."""

# Keras' BatchNormalization defaults (the study built its models in Keras): moving averages
# updated with momentum 0.99, i.e. PyTorch's momentum 0.01, and epsilon 1e-3.
_KERAS_BN_MOMENTUM = 0.01
_KERAS_BN_EPS = 1e-3


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def _pooled_size(feature_shape: tuple[int, int, int], pool: int) -> tuple[int, int]:
    """Spatial size after a ``pool x pool`` max-pool with stride ``pool`` (Keras 'valid')."""
    _, height, width = feature_shape
    if pool < 1 or min(height, width) < pool:
        raise ValueError(
            f"pool={pool} does not fit a {height}x{width} feature map (need 1 <= pool <= side)"
        )
    return height // pool, width // pool


def _max_pool(pool: int) -> nn.Module:
    return nn.MaxPool2d(pool) if pool > 1 else nn.Identity()


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
    """Max-pool (optional), flatten, ``Linear(C*h'*w', hidden)``, ReLU, dropout, ``Linear``.

    Args:
        feature_shape: ``(C, h, w)`` of the feature map at the model's input size (before the
            pool).
        num_labels: Number of outputs.
        dropout: Dropout probability after the hidden layer.
        hidden: Width of the hidden layer.
        pool: Kernel and stride of a max-pool applied first; 1 for none.

    Raises:
        ValueError: If ``dropout`` or ``pool`` is out of range.
    """

    def __init__(
        self,
        feature_shape: tuple[int, int, int],
        num_labels: int,
        dropout: float = 0.5,
        hidden: int = 1024,
        pool: int = 1,
    ) -> None:
        super().__init__()
        _check_dropout(dropout)
        self.feature_shape = feature_shape
        height, width = _pooled_size(feature_shape, pool)
        self.pool = _max_pool(pool)
        self.fc1 = nn.Linear(feature_shape[0] * height * width, hidden)
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
        flat = self.pool(features).flatten(1)
        out: torch.Tensor = self.fc2(self.dropout(self.relu(self.fc1(flat))))
        return out


class LocallyConnectedGate(nn.Module):
    """Keras' ``LocallyConnected2D(1, kernel_size=(1, 1))``: a 1x1 filter of its own per position.

    ``out[b, 0, i, j] = sum_c weight[c, i, j] * x[b, c, i, j] + bias[i, j]`` (no activation).
    It has ``channels * h * w`` weights and ``h * w`` biases, as in Keras.

    Args:
        channels: Input channels.
        size: ``(h, w)`` of the input (the weights are per position, so the size is fixed).
    """

    def __init__(self, channels: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, *size))
        self.bias = nn.Parameter(torch.empty(1, *size))
        # A 1x1 convolution's default initialisation, per position (fan-in = channels).
        bound = 1.0 / math.sqrt(channels)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, channels, h, w]`` to ``[B, 1, h, w]``."""
        return (x * self.weight).sum(dim=1, keepdim=True) + self.bias


class StudyAttentionHead(nn.Module):
    """The reference study's attention model on top of the backbone (seed report, III.B).

    Layer by layer, as the report describes its Keras model: the backbone's ``final_pool``
    (Keras' VGG-16 base ends with block5's max-pool), ``BatchNorm`` of the features ``F``,
    ``Conv 1x1, 64`` + ReLU, ``Conv 1x1, 16`` + ReLU, a locally connected 1x1 layer with one
    filter and a sigmoid (the gate ``m``, ``[B, 1, h, w]``), a 1x1 linear convolution back to the
    feature depth, multiplication with the normalised features, global average pooling of the
    product divided by global average pooling of the fanned-out gate ("rescaling"), dropout
    0.5, ``Linear(C, 256)`` + ReLU, dropout 0.25, ``Linear(256, L)`` (the sigmoid is in the loss).

    The fan-out convolution: the report does not say whether it is trained. In the Keras
    attention pattern the description follows (Kaggle notebooks by K. Mader, copied widely), it
    is frozen at all-ones weights without bias: it copies the gate to every channel. With it the
    rescaled pooling is exactly the gate-weighted mean ``sum(m * F) / sum(m)``, which is what is
    computed here, as ``softmax(logsigmoid(a))`` weights (the same quantity, without a division
    by zero when the sigmoid underflows); the ``C`` frozen ones are not stored.

    Batch normalisation uses Keras' defaults (momentum 0.99 of the moving averages, epsilon
    1e-3).

    Args:
        feature_shape: ``(C, h, w)`` of the feature map at the model's input size (before the
            pool).
        num_labels: Number of outputs.
        dropout: Dropout on the pooled features (the study's 0.5).
        hidden: Width of the hidden layer (the study's 256).
        hidden_dropout: Dropout after the hidden layer (the study's 0.25).
        pool: Kernel and stride of the max-pool applied first; 1 for none.

    Raises:
        ValueError: If a dropout or ``pool`` is out of range.
    """

    def __init__(
        self,
        feature_shape: tuple[int, int, int],
        num_labels: int,
        dropout: float = 0.5,
        hidden: int = 256,
        hidden_dropout: float = 0.25,
        pool: int = 1,
    ) -> None:
        super().__init__()
        _check_dropout(dropout)
        _check_dropout(hidden_dropout)
        channels = feature_shape[0]
        self.feature_shape = feature_shape
        size = _pooled_size(feature_shape, pool)
        self.pool = _max_pool(pool)
        self.norm = nn.BatchNorm2d(channels, eps=_KERAS_BN_EPS, momentum=_KERAS_BN_MOMENTUM)
        self.attention = nn.Sequential(
            nn.Conv2d(channels, 64, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(64, 16, kernel_size=1),
            nn.ReLU(),
        )
        self.gate = LocallyConnectedGate(16, size)
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(channels, hidden)
        self.relu = nn.ReLU()
        self.hidden_dropout = nn.Dropout(hidden_dropout)
        self.fc2 = nn.Linear(hidden, num_labels)

    def _check(self, features: torch.Tensor) -> None:
        if tuple(features.shape[1:]) != self.feature_shape:
            raise ValueError(
                f"study_attention head expects feature maps of shape {self.feature_shape}, got "
                f"{tuple(features.shape[1:])}; it only accepts the input size it was built for"
            )

    def _gate_logits(self, normalised: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.gate(self.attention(normalised))
        return out

    def mask(self, features: torch.Tensor) -> torch.Tensor:
        """The gate ``m``, ``[B, 1, h', w']`` with values in ``[0, 1]`` (after the pool).

        Raises:
            ValueError: If the feature map is not ``feature_shape``.
        """
        self._check(features)
        return torch.sigmoid(self._gate_logits(self.norm(self.pool(features))))

    def pool_features(self, features: torch.Tensor) -> torch.Tensor:
        """The rescaled pooling ``GAP(m * BN(F)) / GAP(m)``, shape ``[B, C]``.

        Raises:
            ValueError: If the feature map is not ``feature_shape``.
        """
        self._check(features)
        normalised: torch.Tensor = self.norm(self.pool(features))
        logits = self._gate_logits(normalised)
        weights = functional.logsigmoid(logits).flatten(2).softmax(dim=-1)  # [B, 1, h*w]
        return (normalised.flatten(2) * weights).sum(dim=-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map ``[B, C, h, w]`` features to ``[B, L]`` logits.

        Raises:
            ValueError: If the feature map is not ``feature_shape``.
        """
        pooled = self.pool_features(features)
        hidden = self.hidden_dropout(self.relu(self.fc1(self.dropout(pooled))))
        out: torch.Tensor = self.fc2(hidden)
        return out


class AttentionPoolHead(nn.Module):
    """Attention-gated global average pooling followed by a two-layer classifier.

    Simpler than the study's model
    ([`StudyAttentionHead`][chexviz.models.heads.StudyAttentionHead]): the gate comes from
    shared 1x1 convolutions ``C -> 64 -> 16 -> 1`` on the raw features (no batch normalisation,
    no per-position weights, no pool before it), there is one dropout (before the hidden layer)
    and any input size is accepted.

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


NEEDS_FEATURE_SIZE: frozenset[str] = frozenset({"mlp", "study_attention"})
"""Heads whose parameters depend on the feature map's spatial size."""


def default_dropout(name: str) -> float:
    """The dropout probability head ``name`` uses when none is given.

    Args:
        name: One of [`list_heads`][chexviz.models.heads.list_heads].

    Returns:
        The default probability.

    Raises:
        ValueError: If ``name`` is unknown (the message lists the heads, and names the new name
            of a renamed head).
    """
    if name in _RENAMED:
        raise ValueError(
            f"head {name!r} is now called {_RENAMED[name]!r}; the reference study's attention "
            "model is 'study_attention'"
        )
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
    pool: int = 1,
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
        pool: The backbone's ``final_pool``
            ([`BackboneInfo`][chexviz.models.registry.BackboneInfo]): kernel and stride of the
            max-pool the study's heads (``mlp``, ``study_attention``) apply first; the others
            ignore it.

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
    if name == "attention_pool":
        return AttentionPoolHead(num_features, num_labels, p)
    if feature_size is None or len(feature_size) != 2 or min(feature_size) < 1:
        raise ValueError(f"head {name!r} needs feature_size=(h, w), got {feature_size}")
    shape = (num_features, feature_size[0], feature_size[1])
    if name == "study_attention":
        return StudyAttentionHead(shape, num_labels, p, pool=pool)
    return MLPHead(shape, num_labels, p, pool=pool)
