"""The reference study's models have the parameter counts of its Keras architecture.

No TensorFlow is needed: the expected counts are computed below, layer by layer, from the
recipes of ``keras.applications`` (``vgg16.py``, ``densenet.py``, ``mobilenet_v2.py``,
``inception_v3.py``) and the heads of the seed report (section III.B). The base totals this
arithmetic gives are the "Total params" Keras prints for ``include_top=False`` with 3-channel
input: VGG16 14,714,688, DenseNet121 7,037,504, MobileNetV2 2,257,984, InceptionV3 21,802,784.

Keras' "Total params" counts every weight, trainable or not, so batch-normalisation moving
means and variances are in it; PyTorch keeps them as buffers. The comparison is therefore
``parameters + running_mean + running_var`` against the Keras total, minus two documented
differences:

* Keras' Inception-V3 normalises with ``BatchNormalization(scale=False)`` (no gamma); PyTorch's
  (torchvision's) has a gamma per channel: 17,216 more.
* The study's attention model fans its gate out to 512 channels with a frozen all-ones 1x1
  convolution without bias (512 non-trainable weights in Keras); chexviz computes the same
  product by broadcasting and stores no such weights: 512 fewer.

At 128 px the flattened maps are VGG-16 4x4x512 = 8,192 (after block5's pool), DenseNet-121
4x4x1024 = 16,384, MobileNet-V2 4x4x1280 = 20,480, Inception-V3 2x2x2048 = 8,192.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from chexviz.models.classifier import MultiLabelClassifier

LABELS = 14
SIZE = 128


def _bn(channels: int, *, scale: bool = True) -> int:
    # gamma (if scale), beta, moving mean, moving variance
    return (4 if scale else 3) * channels


def _conv(kh: int, kw: int, cin: int, cout: int, *, bias: bool) -> int:
    return kh * kw * cin * cout + (cout if bias else 0)


def keras_vgg16(cin: int) -> int:
    """13 3x3 convolutions with bias (block1..block5), pools have no weights."""
    total, c = 0, cin
    for width in (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512):
        total += _conv(3, 3, c, width, bias=True)
        c = width
    return total


def keras_densenet121(cin: int) -> int:
    """Stem conv 7x7/64 + BN, dense blocks (6, 12, 24, 16) of BN-conv1x1(128)-BN-conv3x3(32),
    transitions BN-conv1x1(c/2), final BN; no convolution has a bias."""
    total, c = _conv(7, 7, cin, 64, bias=False) + _bn(64), 64
    for block, layers in enumerate((6, 12, 24, 16)):
        for _ in range(layers):
            total += _bn(c) + _conv(1, 1, c, 128, bias=False)
            total += _bn(128) + _conv(3, 3, 128, 32, bias=False)
            c += 32
        if block < 3:
            total += _bn(c) + _conv(1, 1, c, c // 2, bias=False)
            c //= 2
    assert c == 1024
    return total + _bn(c)


def keras_mobilenet_v2(cin: int) -> int:
    """alpha=1: stem conv 3x3/32, inverted residual blocks (t, c, n), last conv 1x1/1280."""
    total, c = _conv(3, 3, cin, 32, bias=False) + _bn(32), 32
    blocks = ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1))
    for expansion, out, repeats in blocks:
        for _ in range(repeats):
            hidden = c * expansion
            if expansion != 1:
                total += _conv(1, 1, c, hidden, bias=False) + _bn(hidden)
            total += 9 * hidden + _bn(hidden)  # depthwise 3x3, no bias
            total += _conv(1, 1, hidden, out, bias=False) + _bn(out)
            c = out
    return total + _conv(1, 1, c, 1280, bias=False) + _bn(1280)


def keras_inception_v3(cin: int) -> int:
    """``conv2d_bn`` everywhere: convolution without bias, BatchNormalization(scale=False)."""

    def cb(kh: int, kw: int, a: int, b: int) -> int:
        return _conv(kh, kw, a, b, bias=False) + _bn(b, scale=False)

    total = cb(3, 3, cin, 32) + cb(3, 3, 32, 32) + cb(3, 3, 32, 64)
    total += cb(1, 1, 64, 80) + cb(3, 3, 80, 192)
    c = 192
    for pool in (32, 64, 64):  # mixed0..2
        total += cb(1, 1, c, 64) + cb(1, 1, c, 48) + cb(5, 5, 48, 64)
        total += cb(1, 1, c, 64) + cb(3, 3, 64, 96) + cb(3, 3, 96, 96) + cb(1, 1, c, pool)
        c = 64 + 64 + 96 + pool
    total += cb(3, 3, c, 384) + cb(1, 1, c, 64) + cb(3, 3, 64, 96) + cb(3, 3, 96, 96)  # mixed3
    c = 384 + 96 + c
    for m in (128, 160, 160, 192):  # mixed4..7
        total += cb(1, 1, c, 192) + cb(1, 1, c, m) + cb(1, 7, m, m) + cb(7, 1, m, 192)
        total += cb(1, 1, c, m) + cb(7, 1, m, m) + cb(1, 7, m, m) + cb(7, 1, m, m)
        total += cb(1, 7, m, 192) + cb(1, 1, c, 192)
    total += cb(1, 1, c, 192) + cb(3, 3, 192, 320)  # mixed8
    total += cb(1, 1, c, 192) + cb(1, 7, 192, 192) + cb(7, 1, 192, 192) + cb(3, 3, 192, 192)
    c = 320 + 192 + c
    for _ in range(2):  # mixed9, mixed10
        total += cb(1, 1, c, 320) + cb(1, 1, c, 384) + cb(1, 3, 384, 384) + cb(3, 1, 384, 384)
        total += cb(1, 1, c, 448) + cb(3, 3, 448, 384) + cb(1, 3, 384, 384)
        total += cb(3, 1, 384, 384) + cb(1, 1, c, 192)
        c = 2048
    return total


def keras_flatten_head(flattened: int) -> int:
    """Flatten -> Dense(1024, relu) -> Dropout(0.5) -> Dense(14, sigmoid)."""
    return flattened * 1024 + 1024 + 1024 * LABELS + LABELS


def keras_attention_head(depth: int, side: int) -> int:
    """Seed report III.B on a ``side x side x depth`` map."""
    return (
        _bn(depth)
        + _conv(1, 1, depth, 64, bias=True)
        + _conv(1, 1, 64, 16, bias=True)
        + side * side * 16
        + side * side  # LocallyConnected2D(1, 1x1): kernel + bias per position
        + depth  # Conv2D(depth, 1x1, use_bias=False), frozen at ones
        + depth * 256
        + 256
        + 256 * LABELS
        + LABELS
    )


def test_keras_bases_match_the_published_totals() -> None:
    assert keras_vgg16(3) == 14_714_688
    assert keras_densenet121(3) == 7_037_504
    assert keras_mobilenet_v2(3) == 2_257_984
    assert keras_inception_v3(3) == 21_802_784


# (backbone, head, Keras total at 3 channels, PyTorch minus Keras)
STUDY_MODELS = [
    ("vgg16", "mlp", keras_vgg16(3) + keras_flatten_head(4 * 4 * 512), 0),
    ("densenet121", "mlp", keras_densenet121(3) + keras_flatten_head(4 * 4 * 1024), 0),
    ("mobilenet_v2", "mlp", keras_mobilenet_v2(3) + keras_flatten_head(4 * 4 * 1280), 0),
    ("inception_v3", "mlp", keras_inception_v3(3) + keras_flatten_head(2 * 2 * 2048), 17_216),
    ("vgg16", "study_attention", keras_vgg16(3) + keras_attention_head(512, 4), -512),
]


def _count(model: nn.Module) -> int:
    parameters = sum(p.numel() for p in model.parameters())
    moving = sum(
        b.numel()
        for name, b in model.named_buffers()
        if name.endswith(("running_mean", "running_var"))
    )
    return parameters + moving


@pytest.mark.parametrize("in_channels", [3, 1])
@pytest.mark.parametrize(("backbone", "head", "keras", "difference"), STUDY_MODELS)
def test_study_models_have_the_keras_parameter_count(
    backbone: str, head: str, keras: int, difference: int, in_channels: int
) -> None:
    torch.manual_seed(0)
    model = MultiLabelClassifier(backbone, head=head, image_size=SIZE, in_channels=in_channels)
    # one input channel instead of three: the stem convolution (3x3x32 for MobileNet-V2 and
    # Inception-V3, 3x3x64 for VGG-16, 7x7x64 for DenseNet-121) loses 2 of its 3 input planes
    stem = model.backbone.get_submodule(model.backbone.info.first_conv or "")
    assert isinstance(stem, nn.Conv2d)
    fewer = (3 - in_channels) * stem.out_channels * stem.kernel_size[0] * stem.kernel_size[1]
    assert _count(model) == keras + difference - fewer


def test_vgg16_study_heads_pool_and_gradcam_stays_at_the_8x8_map() -> None:
    model = MultiLabelClassifier("vgg16", head="mlp", image_size=SIZE).eval()
    assert model.head.fc1.in_features == 8192  # Keras: block5_pool 4x4x512
    captured: list[torch.Tensor] = []
    model.target_layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    model(torch.rand(1, 1, SIZE, SIZE))
    assert captured[0].shape == (1, 512, 8, 8)  # Grad-CAM: block5_conv3, before the pool
    linear = MultiLabelClassifier("vgg16", head="linear", image_size=SIZE)
    assert linear.backbone.info.final_pool == 2
    assert linear.head.fc.in_features == 512  # heads other than the study's ignore the pool
