"""Built-in backbones: torchvision ImageNet networks and a small CPU-friendly CNN.

Importing this module registers them; use
[`create_backbone`][chexviz.models.registry.create_backbone] to build one. Every backbone ends at
its
last convolutional feature map (no global pooling, no classifier), accepts 1-channel
(greyscale) or 3-channel input and names that feature map's module as its Grad-CAM layer.

With ``pretrained=True`` the torchvision ImageNet weights are loaded (``weights="DEFAULT"``,
downloaded to the torch hub cache on first use). For 1-channel input the first convolution's
RGB kernels are summed, so it responds to a (normalised) grey image as the original responds to
that image copied into all three channels; the greyscale normalisation is the mean of the RGB
means and standard deviations.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

from chexviz._internal.checks import check_in_channels
from chexviz.models.registry import Backbone, BackboneInfo, register_backbone

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "adapt_input_conv",
    "channel_stats",
    "replace_stem_conv",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""Per-channel RGB mean of the ImageNet training set, as used by torchvision's weights."""
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""Per-channel RGB standard deviation of the ImageNet training set."""

# torchvision's Inception-v3 weights come from Google's model, trained on inputs scaled to
# [-1, 1]; torchvision's transform_input re-normalises to that, we normalise to it directly.
_INCEPTION_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
_INCEPTION_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)


def channel_stats(
    mean: Sequence[float], std: Sequence[float], in_channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation statistics for ``in_channels`` from RGB statistics.

    Args:
        mean: RGB means.
        std: RGB standard deviations.
        in_channels: 3 keeps them; 1 averages each over the channels.

    Returns:
        ``(mean, std)`` with ``in_channels`` values each.

    Raises:
        ValueError: If ``in_channels`` is not 1 or 3.
    """
    if check_in_channels(in_channels) == 3:
        return tuple(mean), tuple(std)
    return (sum(mean) / len(mean),), (sum(std) / len(std),)


def adapt_input_conv(in_channels: int, weight: torch.Tensor) -> torch.Tensor:
    """Adapt RGB convolution kernels ``[O, 3, k, k]`` to ``in_channels`` inputs.

    For one channel the RGB kernels are summed (as timm's ``adapt_input_conv``), which makes the
    response to a grey image equal to the response to that image replicated over RGB.

    Args:
        in_channels: 1 or 3.
        weight: The pretrained kernels, ``[out_channels, 3, kh, kw]``.

    Returns:
        New kernels ``[out_channels, in_channels, kh, kw]`` (same dtype).

    Raises:
        ValueError: If ``weight`` does not have 3 input channels or ``in_channels`` is not 1 or 3.
    """
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected RGB kernels [O, 3, kh, kw], got shape {tuple(weight.shape)}")
    if check_in_channels(in_channels) == 3:
        return weight.clone()
    return weight.sum(dim=1, keepdim=True)


def replace_stem_conv(module: nn.Module, path: str, in_channels: int) -> None:
    """Make the stem convolution at ``path`` accept ``in_channels``, keeping its trained kernels.

    The stem is named, not guessed: every built-in backbone declares it (as timm's
    ``pretrained_cfg["first_conv"]`` does), since "the first ``nn.Conv2d`` registered" need not
    be the one that sees the input.

    Args:
        module: The network, modified in place.
        path: Dotted path of the stem ``nn.Conv2d`` within ``module``.
        in_channels: 1 or 3.

    Raises:
        ValueError: If ``path`` is not an RGB ``nn.Conv2d`` of ``module`` or ``in_channels`` is
            not 1 or 3.
    """
    try:
        conv = module.get_submodule(path)
    except AttributeError as exc:
        raise ValueError(f"{type(module).__name__} has no submodule {path!r}") from exc
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"{path!r} is a {type(conv).__name__}, not an nn.Conv2d to adapt")
    if conv.in_channels == in_channels:
        return
    if conv.groups != 1:
        raise ValueError(f"stem convolution {path!r} is grouped; cannot adapt its input")
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(adapt_input_conv(in_channels, conv.weight))
        if conv.bias is not None and new.bias is not None:
            new.bias.copy_(conv.bias)
    parent_path, _, attr = path.rpartition(".")
    parent = module.get_submodule(parent_path) if parent_path else module
    setattr(parent, attr, new)


def _weights(name: str, pretrained: bool) -> tvm.WeightsEnum | None:
    """Torchvision's default weights of network ``name``, or None for random initialisation."""
    return tvm.get_model_weights(name).DEFAULT if pretrained else None


def _info(
    name: str,
    num_features: int,
    in_channels: int,
    min_input_size: int,
    gradcam_layer: str,
    first_conv: str,
    weights: tvm.WeightsEnum | None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    final_pool: int = 1,
) -> BackboneInfo:
    m, s = channel_stats(mean, std, in_channels)
    return BackboneInfo(
        name,
        num_features,
        m,
        s,
        min_input_size,
        gradcam_layer,
        first_conv=first_conv,
        weights=str(weights) if weights is not None else None,
        final_pool=final_pool,
    )


def _torchvision(
    name: str, stem: str, pretrained: bool, in_channels: int, **kwargs: Any
) -> tuple[nn.Module, tvm.WeightsEnum | None]:
    """The torchvision network ``name`` and its weights; its ``stem`` conv takes ``in_channels``."""
    check_in_channels(in_channels, f"backbone {name!r} in_channels")
    weights = _weights(name, pretrained)
    model: nn.Module = getattr(tvm, name)(weights=weights, **kwargs)
    replace_stem_conv(model, stem, in_channels)
    return model, weights


def _features_backbone(
    name: str, num_features: int, gradcam_layer: str, pretrained: bool, in_channels: int
) -> Backbone:
    """A torchvision network whose ``features`` module is its whole convolutional part.

    In each of them (MobileNet-V2, EfficientNet, ConvNeXt) the stem is ``features.0.0``.
    """
    model, weights = _torchvision(name, "features.0.0", pretrained, in_channels)
    info = _info(name, num_features, in_channels, 32, gradcam_layer, "features.0.0", weights)
    return Backbone(model.get_submodule("features"), info)


def _children(model: nn.Module, names: Sequence[str]) -> nn.Sequential:
    return nn.Sequential(OrderedDict((n, model.get_submodule(n)) for n in names))


@register_backbone("simple_cnn")
def simple_cnn(*, pretrained: bool, in_channels: int) -> Backbone:
    """A small 4-block CNN (16-32-64-128 channels, stride 8) for CPU tests and demos.

    It has no pretrained weights.

    Args:
        pretrained: Must be False.
        in_channels: Number of input channels (any positive count).

    Returns:
        The backbone; its Grad-CAM layer is ``features.block4``.

    Raises:
        ValueError: If ``pretrained`` is True.
    """
    if pretrained:
        raise ValueError("simple_cnn has no pretrained weights; use pretrained=False")
    widths = (16, 32, 64, 128)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    previous = in_channels
    for i, width in enumerate(widths, start=1):
        layers[f"block{i}"] = nn.Sequential(
            nn.Conv2d(previous, width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        if i < len(widths):
            layers[f"pool{i}"] = nn.MaxPool2d(2)
        previous = width
    # Trained from scratch: centre [0, 1] pixels rather than reuse ImageNet statistics.
    info = BackboneInfo(
        name="simple_cnn",
        num_features=widths[-1],
        mean=(0.5,) * in_channels,
        std=(0.25,) * in_channels,
        min_input_size=8,
        gradcam_layer="features.block4",
        first_conv="features.block1.0",
    )
    return Backbone(nn.Sequential(layers), info)


@register_backbone("densenet121")
def densenet121(*, pretrained: bool, in_channels: int) -> Backbone:
    """DenseNet-121 (1024 features, stride 32).

    torchvision applies an in-place ReLU after ``features`` inside ``forward``; here that ReLU
    is a separate, non-in-place module (``features.relu5``) so Grad-CAM can hook the map.

    Args:
        pretrained: Load torchvision's ImageNet weights.
        in_channels: 1 or 3.

    Returns:
        The backbone.
    """
    model, weights = _torchvision("densenet121", "features.conv0", pretrained, in_channels)
    features = model.get_submodule("features")
    features.add_module("relu5", nn.ReLU(inplace=False))
    info = _info("densenet121", 1024, in_channels, 32, "features.relu5", "features.conv0", weights)
    return Backbone(features, info)


def _resnet(name: str, num_features: int, pretrained: bool, in_channels: int) -> Backbone:
    model, weights = _torchvision(name, "conv1", pretrained, in_channels)
    stages = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    info = _info(name, num_features, in_channels, 32, "features.layer4", "features.conv1", weights)
    return Backbone(_children(model, stages), info)


@register_backbone("resnet18")
def resnet18(*, pretrained: bool, in_channels: int) -> Backbone:
    """ResNet-18 (512 features, stride 32).

    Args:
        pretrained: Load torchvision's ImageNet weights.
        in_channels: 1 or 3.

    Returns:
        The backbone.
    """
    return _resnet("resnet18", 512, pretrained, in_channels)


@register_backbone("resnet50")
def resnet50(*, pretrained: bool, in_channels: int) -> Backbone:
    """ResNet-50 (2048 features, stride 32).

    Args:
        pretrained: Load torchvision's ImageNet weights.
        in_channels: 1 or 3.

    Returns:
        The backbone.
    """
    return _resnet("resnet50", 2048, pretrained, in_channels)


@register_backbone("mobilenet_v2")
def mobilenet_v2(*, pretrained: bool, in_channels: int) -> Backbone:
    """MobileNet-V2 (1280 features, stride 32).

    Args:
        pretrained: Load torchvision's ImageNet weights.
        in_channels: 1 or 3.

    Returns:
        The backbone.
    """
    return _features_backbone("mobilenet_v2", 1280, "features.18", pretrained, in_channels)


@register_backbone("efficientnet_b0")
def efficientnet_b0(*, pretrained: bool, in_channels: int) -> Backbone:
    """EfficientNet-B0 (1280 features, stride 32).

    Args:
        pretrained: Load torchvision's ImageNet weights.
        in_channels: 1 or 3.

    Returns:
        The backbone.
    """
    return _features_backbone("efficientnet_b0", 1280, "features.8", pretrained, in_channels)


@register_backbone("convnext_tiny")
def convnext_tiny(*, pretrained: bool, in_channels: int) -> Backbone:
    """ConvNeXt-Tiny (768 features, stride 32; needs at least 32 px).

    Args:
        pretrained: Load torchvision's ImageNet weights.
        in_channels: 1 or 3.

    Returns:
        The backbone.
    """
    return _features_backbone("convnext_tiny", 768, "features.7", pretrained, in_channels)


@register_backbone("vgg16")
def vgg16(*, pretrained: bool, in_channels: int) -> Backbone:
    """VGG-16's convolutional part (512 features, stride 16: the last max-pool is left out).

    Only the convolutional layers are built: the fully connected classifier (over 100 M
    parameters) is never instantiated. The backbone ends at block5's last ReLU (8x8 at 128 px),
    the map Grad-CAM explains; block5's 2x2 max-pool, with which Keras'
    ``VGG16(include_top=False)`` ends (4x4 at 128 px), is declared as ``final_pool=2`` and
    applied by the heads that reproduce the reference study (``mlp``, ``study_attention``).

    Args:
        pretrained: Load torchvision's ImageNet weights.
        in_channels: 1 or 3.

    Returns:
        The backbone; its Grad-CAM layer is the last ReLU, made non-in-place.
    """
    check_in_channels(in_channels, "backbone 'vgg16' in_channels")
    features = tvm.vgg.make_layers(tvm.vgg.cfgs["D"])
    weights = _weights("vgg16", pretrained)
    if weights is not None:
        state: dict[str, Any] = weights.get_state_dict(progress=True)
        prefix = "features."
        features.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )
    replace_stem_conv(features, "0", in_channels)
    # The last max-pool moves to the heads (final_pool) so that Grad-CAM sees the 8x8 map.
    layers = list(features)[:-1]
    layers[-1] = nn.ReLU(inplace=False)
    last = str(len(layers) - 1)
    info = _info(
        "vgg16", 512, in_channels, 16, f"features.{last}", "features.0", weights, final_pool=2
    )
    return Backbone(nn.Sequential(*layers), info)


@register_backbone("inception_v3")
def inception_v3(*, pretrained: bool, in_channels: int) -> Backbone:
    """Inception-v3 without its auxiliary head (2048 features, needs at least 75 px).

    Inputs are normalised to ``[-1, 1]`` (mean = std = 0.5), what the pretrained weights expect.

    Args:
        pretrained: Load torchvision's ImageNet weights.
        in_channels: 1 or 3.

    Returns:
        The backbone; its Grad-CAM layer is ``features.Mixed_7c``.
    """
    kwargs: dict[str, Any] = {"transform_input": False}
    if not pretrained:
        # torchvision insists on the auxiliary head with pretrained weights; it is left out
        # of the stages below either way. Without weights torchvision warns unless the
        # (scipy-free) initialisation is chosen explicitly.
        kwargs.update(aux_logits=False, init_weights=True)
    model, weights = _torchvision(
        "inception_v3", "Conv2d_1a_3x3.conv", pretrained, in_channels, **kwargs
    )
    stages = (
        "Conv2d_1a_3x3",
        "Conv2d_2a_3x3",
        "Conv2d_2b_3x3",
        "maxpool1",
        "Conv2d_3b_1x1",
        "Conv2d_4a_3x3",
        "maxpool2",
        "Mixed_5b",
        "Mixed_5c",
        "Mixed_5d",
        "Mixed_6a",
        "Mixed_6b",
        "Mixed_6c",
        "Mixed_6d",
        "Mixed_6e",
        "Mixed_7a",
        "Mixed_7b",
        "Mixed_7c",
    )
    info = _info(
        "inception_v3",
        2048,
        in_channels,
        75,
        "features.Mixed_7c",
        "features.Conv2d_1a_3x3.conv",
        weights,
        mean=_INCEPTION_MEAN,
        std=_INCEPTION_STD,
    )
    return Backbone(_children(model, stages), info)
