"""timm backbones: ``create_backbone("timm/<name>")`` builds any model timm knows.

timm is optional (``pip install "chexviz[timm]"``) and imported only when a ``timm/`` name is
built. The backbone is timm's model without its classifier (``num_classes=0``); its
``forward_features`` output becomes a ``[B, C, h, w]`` map whichever layout timm returns:

* ``[B, C, h, w]`` (ResNet, ConvNeXt, EfficientNet...) is kept;
* ``[B, h, w, C]`` (models whose ``output_fmt`` is ``"NHWC"``, e.g. Swin) is permuted;
* ``[B, N, C]`` tokens (ViT, DeiT, DINOv2...) lose their ``num_prefix_tokens`` class and
  register tokens and are laid back on the patch grid the patch embedding reports for the
  input size.

That map is the output of the submodule ``features.grid``, the backbone's Grad-CAM layer, so
the chexviz heads and [`GradCAM`][chexviz.explain.gradcam.GradCAM] see the same tensor.

One-channel input uses timm's own ``in_chans`` mechanism: for pretrained weights timm sums the
stem's RGB kernels (its ``adapt_input_conv``), as chexviz's built-in backbones do, and the grey
normalisation is the mean of the pretrained RGB statistics (``channel_stats``).
"""

from __future__ import annotations

import difflib
import importlib
import logging
from types import ModuleType
from typing import Any

import torch
from torch import nn

from chexviz._internal.checks import check_in_channels
from chexviz.models.backbones import channel_stats
from chexviz.models.registry import Backbone, BackboneInfo

__all__ = ["TIMM_PREFIX", "build_timm_backbone"]

logger = logging.getLogger(__name__)

TIMM_PREFIX = "timm/"
"""Backbone names starting with this prefix are timm model names."""

_INSTALL_HINT = 'pip install "chexviz[timm]"'


def _import_timm(name: str) -> ModuleType:
    try:
        return importlib.import_module("timm")
    except ImportError as exc:
        raise ImportError(
            f"backbone {name!r} needs timm, which is not installed: {_INSTALL_HINT}"
        ) from exc


class _TimmFeatures(nn.Module):
    """timm's ``forward_features`` followed by the reshape to ``[B, C, h, w]``.

    Args:
        model: The timm model (classifier removed).
        layout: ``"NCHW"``, ``"NHWC"`` or ``"NLC"`` (tokens), the layout of its features.
    """

    def __init__(self, model: nn.Module, layout: str) -> None:
        super().__init__()
        self.model = model
        self.layout = layout
        # Identity whose output is the map: the Grad-CAM layer, hooked after the reshape.
        self.grid = nn.Identity()

    def _token_grid(self, height: int, width: int) -> tuple[int, int]:
        patch_embed = getattr(self.model, "patch_embed", None)
        if patch_embed is None:
            raise ValueError(
                f"{type(self.model).__name__} returns tokens but has no patch_embed to give "
                "their grid"
            )
        dynamic = getattr(patch_embed, "dynamic_feat_size", None)
        if callable(dynamic) and getattr(self.model, "dynamic_img_size", False):
            grid = dynamic((height, width))
        else:
            grid = patch_embed.grid_size
        return int(grid[0]), int(grid[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of ``x`` as a ``[B, C, h, w]`` map."""
        height, width = int(x.shape[-2]), int(x.shape[-1])
        out: torch.Tensor = self.model.forward_features(x)  # type: ignore[operator]
        if self.layout == "NHWC":
            out = out.permute(0, 3, 1, 2)
        elif self.layout == "NLC":
            prefix = int(getattr(self.model, "num_prefix_tokens", 0))
            gh, gw = self._token_grid(height, width)
            tokens = out[:, prefix:]
            if tokens.shape[1] != gh * gw:
                raise ValueError(
                    f"{type(self.model).__name__} returned {out.shape[1]} tokens for a "
                    f"{height}x{width} input; expected {prefix} prefix tokens and a {gh}x{gw} "
                    "patch grid"
                )
            out = tokens.reshape(tokens.shape[0], gh, gw, tokens.shape[2]).permute(0, 3, 1, 2)
        result: torch.Tensor = self.grid(out.contiguous())
        return result


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _unknown(timm: ModuleType, name: str, arch: str) -> KeyError:
    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(TIMM_PREFIX + c for c in close)}" if close else ""
    return KeyError(f"unknown timm model {arch!r} (backbone {name!r}){hint}")


def _create(timm: ModuleType, arch: str, pretrained: bool, in_channels: int) -> nn.Module:
    kwargs: dict[str, Any] = {"pretrained": pretrained, "in_chans": in_channels, "num_classes": 0}
    try:
        # ViT-family models then accept any input size the patch size divides.
        model: nn.Module = timm.create_model(arch, dynamic_img_size=True, **kwargs)
    except TypeError as exc:
        if "dynamic_img_size" not in str(exc):
            raise
        model = timm.create_model(arch, **kwargs)
    return model


def _layout(model: nn.Module, in_channels: int, size: int) -> str:
    """The layout of ``forward_features``, from timm's ``output_fmt`` or one dummy pass."""
    fmt = getattr(model, "output_fmt", None)
    fmt = getattr(fmt, "value", fmt)  # timm's Format enum or a plain string
    if fmt == "NHWC":
        return "NHWC"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.forward_features(  # type: ignore[operator]
                torch.zeros(1, in_channels, size, size)
            )
    finally:
        model.train(was_training)
    if out.ndim == 3:
        return "NLC"
    if out.ndim == 4:
        return "NCHW"
    raise ValueError(
        f"{type(model).__name__}.forward_features returned shape {tuple(out.shape)}, "
        "neither a feature map nor tokens"
    )


def build_timm_backbone(name: str, *, pretrained: bool, in_channels: int) -> Backbone:
    """Build the timm model named after ``timm/`` as a chexviz backbone.

    Args:
        name: ``"timm/<model name>"``, e.g. ``"timm/convnext_atto"``; a pretrained tag may
            follow the name (``"timm/convnext_atto.d2_in1k"``).
        pretrained: Load timm's pretrained weights (downloaded from the Hugging Face Hub on
            first use); the stem is adapted by timm for ``in_channels=1``.
        in_channels: 1 or 3.

    Returns:
        The backbone. ``info`` comes from timm: ``first_conv``, ``mean``, ``std`` and
        ``input_size`` from ``pretrained_cfg``, ``num_features`` and the stride (the minimum
        input size) from the model and its ``feature_info``.

    Raises:
        ImportError: If timm is not installed (the message says what to install).
        KeyError: If timm has no such model (the message lists close matches).
        ValueError: If ``in_channels`` is not 1 or 3.
    """
    check_in_channels(in_channels, f"backbone {name!r} in_channels")
    timm = _import_timm(name)
    arch = name[len(TIMM_PREFIX) :]
    if not arch or not timm.is_model(arch):
        raise _unknown(timm, name, arch)
    model = _create(timm, arch, pretrained, in_channels)
    cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", None) or {})
    input_size = int(cfg.get("input_size", (3, 224, 224))[-1])
    feature_info = getattr(model, "feature_info", None) or [{}]
    stride = int(feature_info[-1].get("reduction", 32))
    layout = _layout(model, in_channels, input_size)
    mean, std = channel_stats(
        cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225)), in_channels
    )
    first_conv = cfg.get("first_conv")
    stem = None  # e.g. a linear patch embedding: no stem convolution to name
    if isinstance(first_conv, str) and isinstance(_submodule(model, first_conv), nn.Conv2d):
        stem = f"features.model.{first_conv}"
    num_features = getattr(model, "num_features", None)
    if not isinstance(num_features, int):
        raise ValueError(f"timm model {arch!r} does not declare an integer num_features")
    tag = cfg.get("tag")
    info = BackboneInfo(
        name=name,
        num_features=num_features,
        mean=mean,
        std=std,
        # Tokens need one patch; fixed-size ViTs (no dynamic_img_size) need their input_size.
        min_input_size=stride
        if layout != "NLC" or getattr(model, "dynamic_img_size", False)
        else input_size,
        gradcam_layer="features.grid",
        first_conv=stem,
        weights=f"timm:{cfg.get('architecture', arch)}{'.' + tag if tag else ''}"
        if pretrained
        else None,
        input_size=input_size,
    )
    logger.debug("timm backbone %s: layout %s, stride %d", name, layout, stride)
    return Backbone(_TimmFeatures(model, layout), info)
