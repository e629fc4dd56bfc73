from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from chexviz.models.heads import (
    DEFAULT_DROPOUT,
    AttentionPoolHead,
    LinearHead,
    LocallyConnectedGate,
    MLPHead,
    StudyAttentionHead,
    create_head,
    list_heads,
)

HEADS = ["linear", "mlp", "attention_pool", "study_attention"]


def test_list_heads() -> None:
    assert list_heads() == ["attention_pool", "linear", "mlp", "study_attention"]


@pytest.mark.parametrize("name", HEADS)
def test_output_shape_and_gradient_reaches_features(name: str) -> None:
    torch.manual_seed(0)
    head = create_head(name, 6, 3, feature_size=(4, 5))
    features = torch.randn(2, 6, 4, 5, requires_grad=True)
    logits = head(features)
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert features.grad is not None
    assert features.grad.abs().sum() > 0


@pytest.mark.parametrize("name", HEADS)
def test_default_dropout(name: str) -> None:
    head = create_head(name, 6, 3, feature_size=(2, 2))
    dropout = next(m for m in head.modules() if isinstance(m, nn.Dropout))
    assert dropout.p == DEFAULT_DROPOUT[name]
    head = create_head(name, 6, 3, feature_size=(2, 2), dropout=0.125)
    dropout = next(m for m in head.modules() if isinstance(m, nn.Dropout))
    assert dropout.p == 0.125


def test_linear_head_is_gap_then_linear() -> None:
    head = LinearHead(4, 2).eval()
    features = torch.randn(3, 4, 5, 5)
    expected = head.fc(features.mean(dim=(2, 3)))
    torch.testing.assert_close(head(features), expected)


def test_mlp_head_matches_study_layout() -> None:
    head = MLPHead((8, 2, 2), 5)
    assert head.fc1.in_features == 32
    assert head.fc1.out_features == 1024
    assert head.fc2.out_features == 5
    assert head.dropout.p == 0.5
    with pytest.raises(
        ValueError, match=r"expects feature maps of shape \(8, 2, 2\), got \(8, 3, 3\)"
    ):
        head(torch.randn(1, 8, 3, 3))


def test_mlp_head_pools_before_flattening() -> None:
    """VGG-16's block5 pool: the study's flatten saw 4x4x512 = 8,192 features at 128 px."""
    head = MLPHead((512, 8, 8), 14, pool=2).eval()
    assert head.fc1.in_features == 8192
    features = torch.randn(2, 512, 8, 8)
    pooled = torch.nn.functional.max_pool2d(features, 2).flatten(1)
    expected = head.fc2(torch.relu(head.fc1(pooled)))
    torch.testing.assert_close(head(features), expected)
    with pytest.raises(ValueError, match=r"pool=4 does not fit a 3x3 feature map"):
        MLPHead((8, 3, 3), 2, pool=4)


def test_attention_pool_head_layout() -> None:
    head = AttentionPoolHead(32, 5)
    convs = [m for m in head.attention if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (32, 64, (1, 1)),
        (64, 16, (1, 1)),
        (16, 1, (1, 1)),
    ]
    assert (head.fc1.in_features, head.fc1.out_features) == (32, 256)
    assert (head.fc2.in_features, head.fc2.out_features) == (256, 5)


@settings(max_examples=30, deadline=None)
@given(
    channels=st.integers(1, 8),
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_attention_pooling_is_mask_weighted_mean(
    channels: int, height: int, width: int, seed: int
) -> None:
    torch.manual_seed(seed)
    head = AttentionPoolHead(channels, 3).eval()
    features = torch.randn(2, channels, height, width)
    mask = head.mask(features)
    assert mask.shape == (2, 1, height, width)
    assert ((mask >= 0) & (mask <= 1)).all()
    # sum(m*F)/sum(m) equals GAP(m*F) rescaled by the mask's mean.
    pooled = (features * mask).mean(dim=(2, 3)) / mask.mean(dim=(2, 3))
    expected = head.fc2(torch.relu(head.fc1(pooled)))
    torch.testing.assert_close(head(features), expected, rtol=1e-4, atol=1e-5)


def test_attention_pooling_survives_sigmoid_underflow() -> None:
    head = AttentionPoolHead(2, 1).eval()
    last = head.attention[4]
    assert isinstance(last, nn.Conv2d)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-1000.0)  # sigmoid underflows to exactly 0 everywhere
    features = torch.randn(1, 2, 3, 3, requires_grad=True)
    assert head.mask(features).max() == 0
    torch.testing.assert_close(head.pool(features), features.mean(dim=(2, 3)))
    head(features).sum().backward()
    assert features.grad is not None
    assert torch.isfinite(features.grad).all()


def test_attention_with_uniform_mask_is_gap() -> None:
    head = AttentionPoolHead(4, 2).eval()
    last = head.attention[4]
    assert isinstance(last, nn.Conv2d)
    with torch.no_grad():
        last.weight.zero_()  # constant mask: sigmoid(bias) everywhere
    features = torch.randn(1, 4, 3, 3)
    expected = head.fc2(torch.relu(head.fc1(features.mean(dim=(2, 3)))))
    torch.testing.assert_close(head(features), expected)


def test_create_head_errors() -> None:
    with pytest.raises(
        ValueError,
        match="unknown head 'gru'; available heads: attention_pool, linear, mlp, study_attention",
    ):
        create_head("gru", 4, 2)
    with pytest.raises(ValueError, match="head 'attention' is now called 'attention_pool'"):
        create_head("attention", 4, 2)
    with pytest.raises(
        ValueError, match=r"head 'study_attention' needs feature_size=\(h, w\), got None"
    ):
        create_head("study_attention", 4, 2)
    with pytest.raises(ValueError, match=r"head 'mlp' needs feature_size=\(h, w\), got None"):
        create_head("mlp", 4, 2)
    with pytest.raises(ValueError, match="num_features and num_labels must be >= 1"):
        create_head("linear", 4, 0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        create_head("attention_pool", 4, 2, dropout=1.0)


def test_study_attention_head_layout() -> None:
    """Seed report III.B: BN, 1x1 convs of 64 and 16 (ReLU), a locally connected 1x1 gate,
    dropout 0.5, dense 256 ReLU, dropout 0.25, 14 outputs; on VGG-16's pooled 4x4 map."""
    head = StudyAttentionHead((512, 8, 8), 14, pool=2)
    assert isinstance(head.pool, nn.MaxPool2d)
    assert head.pool.kernel_size == 2
    assert isinstance(head.norm, nn.BatchNorm2d)
    assert head.norm.num_features == 512
    # Keras defaults: moving averages with momentum 0.99, epsilon 1e-3
    assert (head.norm.momentum, head.norm.eps) == (0.01, 1e-3)
    convs = [m for m in head.attention if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (512, 64, (1, 1)),
        (64, 16, (1, 1)),
    ]
    assert tuple(head.gate.weight.shape) == (16, 4, 4)  # one 1x1 filter per position
    assert tuple(head.gate.bias.shape) == (1, 4, 4)
    assert (head.dropout.p, head.hidden_dropout.p) == (0.5, 0.25)
    assert (head.fc1.in_features, head.fc1.out_features) == (512, 256)
    assert (head.fc2.in_features, head.fc2.out_features) == (256, 14)
    with pytest.raises(ValueError, match=r"expects feature maps of shape \(512, 8, 8\)"):
        head(torch.randn(1, 512, 4, 4))


def test_locally_connected_gate_has_weights_per_position() -> None:
    gate = LocallyConnectedGate(3, (2, 2))
    x = torch.randn(4, 3, 2, 2)
    out = gate(x)
    assert out.shape == (4, 1, 2, 2)
    for i in range(2):
        for j in range(2):
            expected = x[:, :, i, j] @ gate.weight[:, i, j] + gate.bias[0, i, j]
            torch.testing.assert_close(out[:, 0, i, j], expected)
    # unlike a convolution, changing one position's weights leaves the others unchanged
    with torch.no_grad():
        gate.weight[:, 0, 0] += 1.0
    torch.testing.assert_close(gate(x)[:, :, 1:, :], out[:, :, 1:, :])
    assert not torch.allclose(gate(x)[:, 0, 0, 0], out[:, 0, 0, 0])


@settings(max_examples=20, deadline=None)
@given(channels=st.integers(1, 6), side=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_study_attention_is_keras_rescaled_gap(channels: int, side: int, seed: int) -> None:
    """GAP(m * BN(F)) / GAP(m) with the gate fanned out by Keras' frozen all-ones 1x1 conv."""
    torch.manual_seed(seed)
    head = StudyAttentionHead((channels, side, side), 3).eval()
    features = torch.randn(2, channels, side, side)
    normalised = head.norm(features)
    gate = torch.sigmoid(head.gate(head.attention(normalised)))
    fanned = torch.nn.functional.conv2d(gate, torch.ones(channels, 1, 1, 1))  # [B, C, h, w]
    rescaled = (fanned * normalised).mean(dim=(2, 3)) / fanned.mean(dim=(2, 3))
    torch.testing.assert_close(head.pool_features(features), rescaled, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(head.mask(features), gate)
    expected = head.fc2(torch.relu(head.fc1(rescaled)))
    torch.testing.assert_close(head(features), expected, rtol=1e-4, atol=1e-5)
