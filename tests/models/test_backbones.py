from __future__ import annotations

import functools

import pytest
import torch
import torchvision.models as tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torchvision.models import WeightsEnum

from chexviz.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    adapt_input_conv,
    channel_stats,
    replace_stem_conv,
)
from chexviz.models.registry import Backbone, create_backbone, list_backbones

BACKBONES = list_backbones()
BUILTINS = (
    "convnext_tiny",
    "densenet121",
    "efficientnet_b0",
    "inception_v3",
    "mobilenet_v2",
    "resnet18",
    "resnet50",
    "simple_cnn",
    "vgg16",
)


@functools.cache
def _backbone(name: str, in_channels: int) -> Backbone:
    torch.manual_seed(0)
    return create_backbone(name, in_channels=in_channels)


def test_all_builtins_registered() -> None:
    assert set(BUILTINS) <= set(BACKBONES)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", BACKBONES)
def test_forward_backward_at_min_size(name: str, in_channels: int) -> None:
    backbone = _backbone(name, in_channels).train()
    info = backbone.info
    assert info.name == name
    assert len(info.mean) == len(info.std) == in_channels
    size = info.min_input_size
    x = torch.rand(2, in_channels, size, size, requires_grad=True)
    features = backbone.forward_features(x)
    assert features.ndim == 4
    assert features.shape[:2] == (2, info.num_features)
    assert min(features.shape[2:]) >= 1
    features.square().mean().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    backbone.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", BACKBONES)
def test_gradcam_layer_output_is_the_feature_map(name: str) -> None:
    backbone = _backbone(name, 1).eval()
    layer = backbone.get_submodule(backbone.info.gradcam_layer)
    assert layer is backbone.gradcam_module
    captured: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        captured.append(output)
        output.register_hook(grads.append)

    handle = layer.register_forward_hook(hook)
    try:
        size = max(backbone.info.min_input_size, 32)
        features = backbone(torch.rand(1, 1, size, size))
        features.sum().backward()
    finally:
        handle.remove()
        backbone.zero_grad(set_to_none=True)
    assert len(captured) == 1
    assert captured[0].ndim == 4
    assert captured[0].shape[1] == backbone.info.num_features
    # The head consumes exactly this tensor, so Grad-CAM's activations are the real ones.
    assert captured[0] is features
    assert len(grads) == 1
    assert torch.equal(grads[0], torch.ones_like(features))


@pytest.mark.parametrize("name", BACKBONES)
def test_gradcam_layer_supports_full_backward_hooks(name: str) -> None:
    # Full backward hooks fail on modules whose output is modified in place afterwards.
    backbone = _backbone(name, 1).eval()
    seen: list[tuple[torch.Tensor | None, ...]] = []
    handle = backbone.gradcam_module.register_full_backward_hook(
        lambda _m, _gin, gout: seen.append(gout)  # type: ignore[arg-type, func-returns-value]
    )
    try:
        size = backbone.info.min_input_size
        x = torch.rand(1, 1, size, size, requires_grad=True)
        backbone(x).sum().backward()
    finally:
        handle.remove()
        backbone.zero_grad(set_to_none=True)
    assert len(seen) == 1
    assert seen[0][0] is not None


@pytest.mark.parametrize("name", ["inception_v3", "convnext_tiny", "vgg16", "simple_cnn"])
def test_below_min_input_size_fails(name: str) -> None:
    backbone = _backbone(name, 1).eval()
    size = backbone.info.min_input_size - 1
    with pytest.raises(RuntimeError), torch.no_grad():
        backbone(torch.rand(1, 1, size, size))


def test_inception_at_study_size_has_no_aux_head() -> None:
    backbone = _backbone("inception_v3", 1)
    assert backbone.info.min_input_size == 75
    assert not any("AuxLogits" in n for n, _ in backbone.named_modules())
    with torch.no_grad():
        out = backbone.eval()(torch.rand(1, 1, 128, 128))
    assert out.shape == (1, 2048, 2, 2)


def test_densenet_feature_map_ends_in_relu_module() -> None:
    backbone = _backbone("densenet121", 1)
    layer = backbone.gradcam_module
    assert isinstance(layer, nn.ReLU)
    assert not layer.inplace
    with torch.no_grad():
        out = backbone.eval()(torch.rand(1, 1, 64, 64))
    assert out.min() >= 0


def test_vgg16_is_convolutional_part_before_last_pool() -> None:
    backbone = _backbone("vgg16", 1)
    assert not any(isinstance(m, nn.Linear) for m in backbone.modules())
    assert isinstance(backbone.gradcam_module, nn.ReLU)
    assert sum(isinstance(m, nn.MaxPool2d) for m in backbone.modules()) == 4
    with torch.no_grad():
        assert backbone.eval()(torch.rand(1, 1, 128, 128)).shape == (1, 512, 8, 8)


@pytest.mark.parametrize(
    ("name", "size", "expected"),
    [("simple_cnn", 128, (16, 16)), ("resnet18", 128, (4, 4)), ("densenet121", 96, (3, 3))],
)
def test_feature_map_stride(name: str, size: int, expected: tuple[int, int]) -> None:
    with torch.no_grad():
        out = _backbone(name, 1).eval()(torch.rand(1, 1, size, size))
    assert tuple(out.shape[2:]) == expected


def test_normalisation_stats() -> None:
    grey_mean, grey_std = channel_stats(IMAGENET_MEAN, IMAGENET_STD, 1)
    assert grey_mean == pytest.approx((0.449,))
    assert grey_std == pytest.approx((0.226,))
    assert channel_stats(IMAGENET_MEAN, IMAGENET_STD, 3) == (IMAGENET_MEAN, IMAGENET_STD)
    assert _backbone("resnet18", 1).info.mean == pytest.approx((0.449,))
    assert _backbone("inception_v3", 3).info.std == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="in_channels must be 1 or 3"):
        channel_stats(IMAGENET_MEAN, IMAGENET_STD, 2)


@settings(max_examples=25, deadline=None)
@given(
    out_channels=st.integers(1, 6),
    kernel=st.sampled_from([1, 3, 5]),
    stride=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_grey_conv_equals_rgb_conv_on_replicated_input(
    out_channels: int, kernel: int, stride: int, seed: int
) -> None:
    torch.manual_seed(seed)
    rgb = nn.Conv2d(3, out_channels, kernel, stride=stride, padding=kernel // 2)
    net = nn.Sequential(rgb)
    reference = nn.Conv2d(3, out_channels, kernel, stride=stride, padding=kernel // 2)
    reference.load_state_dict(rgb.state_dict())
    replace_stem_conv(net, "0", 1)
    grey = net[0]
    assert isinstance(grey, nn.Conv2d)
    assert grey.in_channels == 1
    x = torch.rand(2, 1, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), reference(x.expand(-1, 3, -1, -1)))


def test_adapt_input_conv_shapes_and_errors() -> None:
    weight = torch.randn(4, 3, 3, 3)
    torch.testing.assert_close(adapt_input_conv(1, weight), weight.sum(1, keepdim=True))
    assert torch.equal(adapt_input_conv(3, weight), weight)
    with pytest.raises(ValueError, match="in_channels must be 1 or 3"):
        adapt_input_conv(2, weight)
    with pytest.raises(ValueError, match=r"expected RGB kernels"):
        adapt_input_conv(1, torch.randn(4, 1, 3, 3))
    with pytest.raises(ValueError, match=r"'0' is a ReLU, not an nn\.Conv2d"):
        replace_stem_conv(nn.Sequential(nn.ReLU()), "0", 1)
    with pytest.raises(ValueError, match=r"no submodule 'stem'"):
        replace_stem_conv(nn.Sequential(nn.ReLU()), "stem", 1)


def test_replace_stem_conv_keeps_three_channels_untouched() -> None:
    net = nn.Sequential(nn.Conv2d(3, 2, 3))
    conv = net[0]
    replace_stem_conv(net, "0", 3)
    assert net[0] is conv


def test_replace_stem_conv_adapts_the_named_conv_not_the_first_registered() -> None:
    # A side branch registered before the stem: "the first Conv2d" would pick the wrong one.
    net = nn.Module()
    net.side = nn.Conv2d(3, 2, 1)
    net.stem = nn.Conv2d(3, 2, 3)
    replace_stem_conv(net, "stem", 1)
    assert net.stem.in_channels == 1
    assert net.side.in_channels == 3


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_declares_its_stem_and_adapts_it(name: str) -> None:
    backbone = create_backbone(name, in_channels=1)
    stem = backbone.info.first_conv
    assert stem is not None
    conv = backbone.get_submodule(stem)
    assert isinstance(conv, nn.Conv2d)
    assert conv.in_channels == 1
    assert backbone.info.weights is None  # randomly initialised: no weights version


_REFERENCE_BUILDERS = {
    "ResNet18_Weights": lambda: tvm.resnet18(),
    # Only the convolutional part: the 100 M-parameter classifier is slow to build.
    "VGG16_Weights": lambda: nn.ModuleDict({"features": tvm.vgg.make_layers(tvm.vgg.cfgs["D"])}),
    "Inception_V3_Weights": lambda: tvm.inception_v3(aux_logits=True, init_weights=True),
    "DenseNet121_Weights": lambda: tvm.densenet121(),
}
_FIRST_CONV = {
    "resnet18": ("conv1.weight", "features.conv1.weight"),
    "vgg16": ("features.0.weight", "features.0.weight"),
    "inception_v3": ("Conv2d_1a_3x3.conv.weight", "features.Conv2d_1a_3x3.conv.weight"),
    "densenet121": ("features.conv0.weight", "features.conv0.weight"),
}


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", list(_FIRST_CONV))
def test_pretrained_weights_are_loaded_and_adapted(
    monkeypatch: pytest.MonkeyPatch, name: str, in_channels: int
) -> None:
    # Stand-in for the download: torchvision's weights enum returns a known state dict.
    references: dict[str, dict[str, torch.Tensor]] = {}

    def fake_state_dict(self: WeightsEnum, *args: object, **kwargs: object) -> object:
        key = type(self).__name__
        if key not in references:
            torch.manual_seed(1)
            references[key] = _REFERENCE_BUILDERS[key]().state_dict()
        return references[key]

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake_state_dict)
    backbone = create_backbone(name, pretrained=True, in_channels=in_channels)
    (reference,) = references.values()
    source_key, target_key = _FIRST_CONV[name]
    expected = reference[source_key]
    if in_channels == 1:
        expected = expected.sum(dim=1, keepdim=True)
    torch.testing.assert_close(backbone.state_dict()[target_key], expected)
    # A deeper tensor is copied unchanged.
    state = backbone.state_dict()
    deep = [k for k in state if k.endswith("weight") and state[k].ndim == 4][-1]
    assert any(torch.equal(state[deep], t) for t in reference.values())


def test_simple_cnn_has_no_pretrained_weights() -> None:
    with pytest.raises(ValueError, match="simple_cnn has no pretrained weights"):
        create_backbone("simple_cnn", pretrained=True)


@pytest.mark.parametrize("name", [n for n in BUILTINS if n != "simple_cnn"])
def test_unsupported_channel_count(name: str) -> None:
    with pytest.raises(ValueError, match=rf"backbone {name!r} in_channels must be 1 or 3, got 2"):
        create_backbone(name, in_channels=2)
