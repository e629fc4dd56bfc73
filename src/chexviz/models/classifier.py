"""The multi-label chest X-ray classifier: a registered backbone plus a classification head.

Example:
    >>> import torch
    >>> from chexviz.models.classifier import MultiLabelClassifier
    >>> model = MultiLabelClassifier("simple_cnn", image_size=64).eval()
    >>> model(torch.rand(2, 1, 64, 64)).shape
    torch.Size([2, 14])
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from chexviz._internal.checks import Crop, check_crop
from chexviz._internal.modules import eval_mode
from chexviz.data.labels import CHEXPERT_LABELS
from chexviz.models.heads import NEEDS_FEATURE_SIZE, create_head, default_dropout
from chexviz.models.registry import Backbone, create_backbone
from chexviz.models.serialization import (
    WeightFileError,
    check_state_dict,
    read_weights,
    write_weights,
)

__all__ = ["MultiLabelClassifier"]

logger = logging.getLogger(__name__)


def _resolve_labels(num_labels: int | None, labels: Sequence[str] | None) -> tuple[str, ...]:
    if labels is None:
        if num_labels is None or num_labels == len(CHEXPERT_LABELS):
            return CHEXPERT_LABELS
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
        return tuple(f"label_{i}" for i in range(num_labels))
    if isinstance(labels, str):
        raise ValueError(f"labels must be a sequence of names, not the string {labels!r}")
    names = tuple(labels)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"labels must be non-empty strings, got {names!r}")
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"labels must be unique; repeated: {duplicates}")
    if num_labels is not None and num_labels != len(names):
        raise ValueError(f"num_labels={num_labels} but {len(names)} labels were given")
    return names


def _feature_size(backbone: Backbone, in_channels: int, image_size: int) -> tuple[int, int]:
    """Spatial size of the feature map at ``image_size``, from one dummy forward pass."""
    # Eval mode keeps BatchNorm running statistics untouched.
    with eval_mode(backbone), torch.no_grad():
        features = backbone.forward_features(torch.zeros(1, in_channels, image_size, image_size))
    if features.ndim != 4 or features.shape[1] != backbone.info.num_features:
        raise ValueError(
            f"backbone {backbone.info.name!r} returned features of shape "
            f"{tuple(features.shape)}, expected [B, {backbone.info.num_features}, h, w]"
        )
    return int(features.shape[2]), int(features.shape[3])


class MultiLabelClassifier(nn.Module):
    """A backbone and a head giving one logit per observation.

    Inputs are images in ``[0, 1]``; the model normalises them with the backbone's mean and
    standard deviation (stored as buffers), so callers never normalise.

    Args:
        backbone: Registered backbone name (see
            [`list_backbones`][chexviz.models.registry.list_backbones]), or a
            [`Backbone`][chexviz.models.registry.Backbone] already built (``pretrained`` is then
            ignored; ``from_config`` rebuilds it by its ``info.name``).
        num_labels: Number of outputs; None means ``len(labels)``. Without ``labels``, a count
            other than 14 names the outputs ``label_0``, ``label_1``, ...
        in_channels: 1 (greyscale) or 3 (RGB).
        pretrained: Start the backbone from ImageNet weights (downloads them on first use).
        head: ``"linear"``, ``"mlp"`` (the reference study's head), ``"study_attention"`` (the
            study's attention model) or ``"attention_pool"`` (see
            [`chexviz.models.heads`][chexviz.models.heads]).
        dropout: Head dropout probability; None uses the head's default.
        labels: Output names; None means [`CHEXPERT_LABELS`][chexviz.data.labels.CHEXPERT_LABELS].
        image_size: Side of the square input the model is trained on. The ``mlp`` and
            ``study_attention`` heads only accept this size; the others accept any size from
            the backbone's minimum.

    Attributes:
        backbone: The [`Backbone`][chexviz.models.registry.Backbone].
        head: The head module.
        head_name: The head's name, as given.
        dropout: The head's dropout probability (the default resolved).
        labels: Output names.
        num_labels: Number of outputs.
        in_channels: Input channels.
        image_size: Training input size.
        pretrained_weights: The pretrained weights training started from (torchvision's name,
            e.g. ``"ResNet18_Weights.IMAGENET1K_V1"``), kept through save and load; None when
            the backbone started from random weights.
        thresholds: Per-label decision thresholds on probabilities (buffer, default 0.5).
        input_crop: How image files become the model's square input: ``"whole"`` (default,
            the whole picture resized) or ``"center"`` (its centred square resized, as
            torchxrayvision's models expect; set by
            [`from_torchxrayvision`][chexviz.models.xrv.from_torchxrayvision]). Grad-CAM and
            the CLI decode images this way; it is kept through save and load.

    Raises:
        KeyError: If the backbone is not registered.
        ValueError: If an argument is invalid (message names it).
    """

    mean: torch.Tensor
    std: torch.Tensor
    thresholds: torch.Tensor

    def __init__(
        self,
        backbone: str | Backbone,
        num_labels: int | None = None,
        *,
        in_channels: int = 1,
        pretrained: bool = False,
        head: str = "linear",
        dropout: float | None = None,
        labels: Sequence[str] | None = None,
        image_size: int = 128,
    ) -> None:
        super().__init__()
        self.labels = _resolve_labels(num_labels, labels)
        self.num_labels = len(self.labels)
        self.dropout = default_dropout(head) if dropout is None else float(dropout)
        if isinstance(image_size, bool) or not isinstance(image_size, int):
            raise ValueError(f"image_size must be an integer, got {image_size!r}")
        if isinstance(backbone, Backbone):
            if backbone.info.in_channels != in_channels:
                raise ValueError(
                    f"backbone {backbone.info.name!r} takes {backbone.info.in_channels} "
                    f"channel(s), but in_channels={in_channels}"
                )
            self.backbone = backbone
        else:
            self.backbone = create_backbone(
                backbone, pretrained=pretrained, in_channels=in_channels
            )
        self.pretrained_weights: str | None = self.backbone.info.weights
        self.input_crop: Crop = "whole"
        info = self.backbone.info
        if image_size < info.min_input_size:
            raise ValueError(
                f"image_size={image_size} is below backbone {info.name!r}'s minimum input size "
                f"{info.min_input_size}"
            )
        self.in_channels = in_channels
        self.image_size = image_size
        self.head_name = head
        feature_size = (
            _feature_size(self.backbone, in_channels, image_size)
            if head in NEEDS_FEATURE_SIZE
            else None
        )
        self.head = create_head(
            head,
            info.num_features,
            self.num_labels,
            dropout=self.dropout,
            feature_size=feature_size,
            pool=info.final_pool,
        )
        self.register_buffer("mean", torch.tensor(info.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(info.std).view(1, -1, 1, 1))
        self.register_buffer("thresholds", torch.full((self.num_labels,), 0.5))

    @property
    def target_layer_name(self) -> str:
        """Dotted name, within this model, of the Grad-CAM target layer."""
        return f"backbone.{self.backbone.info.gradcam_layer}"

    @property
    def target_layer(self) -> nn.Module:
        """The Grad-CAM target layer: its output is the feature map the head consumes."""
        return self.get_submodule(self.target_layer_name)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(
                f"expected images of shape [B, {self.in_channels}, H, W], got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"expected float images in [0, 1], got dtype {x.dtype}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} input channel(s), got {x.shape[1]} "
                f"(input shape {tuple(x.shape)})"
            )
        h, w = int(x.shape[2]), int(x.shape[3])
        if self.head_name in NEEDS_FEATURE_SIZE:
            if (h, w) != (self.image_size, self.image_size):
                raise ValueError(
                    f"the {self.head_name!r} head needs {self.image_size}x{self.image_size} "
                    f"input, got {h}x{w}"
                )
        elif min(h, w) < self.backbone.info.min_input_size:
            raise ValueError(
                f"input {h}x{w} is smaller than backbone {self.backbone.info.name!r}'s minimum "
                f"{self.backbone.info.min_input_size}x{self.backbone.info.min_input_size}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise images and compute the backbone's feature map.

        Args:
            x: Images ``[B, C, H, W]`` in ``[0, 1]``.

        Returns:
            The feature map ``[B, num_features, h, w]`` (the Grad-CAM layer's output).

        Raises:
            ValueError: If the channel count or size does not fit the model.
        """
        self._check_input(x)
        return self.backbone.forward_features((x - self.mean) / self.std)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Map a feature map to logits.

        Args:
            features: Output of
                [`forward_features`][chexviz.models.classifier.MultiLabelClassifier.forward_features].

        Returns:
            Logits ``[B, num_labels]``.
        """
        out: torch.Tensor = self.head(features)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute logits.

        Args:
            x: Images ``[B, C, H, W]`` in ``[0, 1]``.

        Returns:
            Logits ``[B, num_labels]`` (apply a sigmoid for probabilities).

        Raises:
            ValueError: If the channel count or size does not fit the model.
        """
        return self.forward_head(self.forward_features(x))

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities without building a graph (call ``eval()`` first for inference).

        Args:
            x: Images ``[B, C, H, W]`` in ``[0, 1]``.

        Returns:
            Sigmoid probabilities ``[B, num_labels]``.
        """
        with torch.no_grad():
            return torch.sigmoid(self(x))

    def set_thresholds(self, values: Sequence[float] | torch.Tensor | Mapping[str, float]) -> None:
        """Set per-label decision thresholds.

        Args:
            values: One threshold per label in label order, or a mapping from label name to
                threshold that updates only those labels. Each must be in ``[0, 1]``.

        Raises:
            KeyError: If a mapping names an unknown label.
            ValueError: If the count is wrong or a value is outside ``[0, 1]`` or not finite.
        """
        new = self.thresholds.detach().clone().cpu()
        if isinstance(values, Mapping):
            for name, value in values.items():
                if name not in self.labels:
                    raise KeyError(f"unknown label {name!r}; labels: {', '.join(self.labels)}")
                new[self.labels.index(name)] = float(value)
        else:
            given = torch.as_tensor(values, dtype=new.dtype).detach().cpu().flatten()
            if given.numel() != self.num_labels:
                raise ValueError(
                    f"expected {self.num_labels} thresholds (one per label), got {given.numel()}"
                )
            new = given
        bad = [
            f"{name}={v}"
            for name, v in zip(self.labels, new.tolist(), strict=True)
            if not (math.isfinite(v) and 0.0 <= v <= 1.0)
        ]
        if bad:
            raise ValueError(f"thresholds must be finite and in [0, 1]; got {', '.join(bad)}")
        self.thresholds.copy_(new)

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this architecture.

        Returns:
            A JSON-serialisable dict accepted by
            [`from_config`][chexviz.models.classifier.MultiLabelClassifier.from_config].
        """
        return {
            "backbone": self.backbone.info.name,
            "head": self.head_name,
            "in_channels": self.in_channels,
            "num_labels": self.num_labels,
            "labels": list(self.labels),
            "image_size": self.image_size,
            "dropout": self.dropout,
            "pretrained_weights": self.pretrained_weights,
            # Only when not the default, so files of whole-image models stay readable by
            # releases that predate the field, and older releases refuse a centre-crop one
            # rather than feed it whole images.
            **({} if self.input_crop == "whole" else {"input_crop": self.input_crop}),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MultiLabelClassifier:
        """Build an untrained model (no pretrained download) from `config`.

        Args:
            config: The dict returned by
                [`config`][chexviz.models.classifier.MultiLabelClassifier.config].

        Returns:
            A new model with freshly initialised weights.
        """
        c = dict(config)
        # Provenance, not an architecture argument: the model is built without downloading.
        pretrained_weights = c.pop("pretrained_weights", None)
        input_crop = check_crop(c.pop("input_crop", "whole"), "config 'input_crop'")
        model = cls(
            c.pop("backbone"),
            c.pop("num_labels"),
            labels=c.pop("labels"),
            pretrained=False,
            **c,
        )
        model.pretrained_weights = pretrained_weights
        model.input_crop = input_crop
        return model

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        extra_tensors: Mapping[str, torch.Tensor] | None = None,
        extra_metadata: Mapping[str, str] | None = None,
    ) -> Path:
        """Write the model to a safetensors file (atomically).

        Args:
            path: Destination file (conventionally ``*.safetensors``).
            extra_tensors: Tensors to store alongside, read back with
                [`read_extra`][chexviz.models.serialization.read_extra].
            extra_metadata: Strings to store alongside, read back likewise.

        Returns:
            The written path.
        """
        written = write_weights(
            path,
            self.state_dict(),
            {"config": self.config()},
            extra_tensors=extra_tensors,
            extra_metadata=extra_metadata,
        )
        logger.info("saved %s/%s classifier to %s", self.backbone.info.name, self.head_name, path)
        return written

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
    ) -> MultiLabelClassifier:
        """Rebuild a model saved with `save`, in eval mode.

        The backbone is built with ``pretrained=False`` (nothing is downloaded) and the saved
        tensors are loaded into it. No pickle is ever read.

        Args:
            path: A file written by [`save`][chexviz.models.classifier.MultiLabelClassifier.save].
            device: Where to put the model.

        Returns:
            The model, in eval mode.

        Raises:
            FileNotFoundError: If the file does not exist.
            WeightFileError: If it is not a chexviz weight file, its header
                describes a model that cannot be built here (e.g. a backbone whose plugin is not
                installed), or its tensors do not fit that architecture.
        """
        header, state = read_weights(path)
        try:
            model = cls.from_config(header["config"])
        except (KeyError, ValueError) as exc:
            # e.g. a backbone from a plugin that is not installed here
            raise WeightFileError(
                f"{path}: the header describes a model chexviz cannot build: {exc}"
            ) from exc
        check_state_dict(
            model.state_dict(),
            state,
            source=str(path),
            model=f"backbone {model.backbone.info.name!r} with head {model.head_name!r}",
        )
        _check_buffers(path, state)
        model.load_state_dict(state)
        return model.to(device).eval()


def _check_buffers(path: str | os.PathLike[str], state: Mapping[str, torch.Tensor]) -> None:
    """Refuses thresholds and normalisation that would make every output wrong.

    The tensors are the one copy of these values in the file (the JSON header holds only the
    architecture), so they get the range checks a header field would; ``check_state_dict``
    has already refused NaN and infinity.
    """
    thresholds, std = state["thresholds"].double(), state["std"].double()
    if not bool(((thresholds >= 0) & (thresholds <= 1)).all()):
        raise WeightFileError(
            f"{path}: tensor 'thresholds' must be in [0, 1], got {thresholds.tolist()}"
        )
    if not bool((std > 0).all()):
        raise WeightFileError(
            f"{path}: tensor 'std' must be positive, got {std.flatten().tolist()}"
        )
