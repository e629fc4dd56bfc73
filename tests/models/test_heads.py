from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from chexviz.models.heads import (
    DEFAULT_DROPOUT,
    AttentionHead,
    LinearHead,
    MLPHead,
    create_head,
    list_heads,
)


def test_list_heads() -> None:
    assert list_heads() == ["attention", "linear", "mlp"]


@pytest.mark.parametrize("name", ["linear", "mlp", "attention"])
def test_output_shape_and_gradient_reaches_features(name: str) -> None:
    torch.manual_seed(0)
    head = create_head(name, 6, 3, feature_size=(4, 5))
    features = torch.randn(2, 6, 4, 5, requires_grad=True)
    logits = head(features)
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert features.grad is not None
    assert features.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["linear", "mlp", "attention"])
def test_default_dropout(name: str) -> None:
    head = create_head(name, 6, 3, feature_size=(2, 2))
    (dropout,) = [m for m in head.modules() if isinstance(m, nn.Dropout)]
    assert dropout.p == DEFAULT_DROPOUT[name]
    head = create_head(name, 6, 3, feature_size=(2, 2), dropout=0.125)
    (dropout,) = [m for m in head.modules() if isinstance(m, nn.Dropout)]
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


def test_attention_head_layout() -> None:
    head = AttentionHead(32, 5)
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
    head = AttentionHead(channels, 3).eval()
    features = torch.randn(2, channels, height, width)
    mask = head.mask(features)
    assert mask.shape == (2, 1, height, width)
    assert ((mask >= 0) & (mask <= 1)).all()
    # sum(m*F)/sum(m) equals GAP(m*F) rescaled by the mask's mean.
    pooled = (features * mask).mean(dim=(2, 3)) / mask.mean(dim=(2, 3))
    expected = head.fc2(torch.relu(head.fc1(pooled)))
    torch.testing.assert_close(head(features), expected, rtol=1e-4, atol=1e-5)


def test_attention_pooling_survives_sigmoid_underflow() -> None:
    head = AttentionHead(2, 1).eval()
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
    head = AttentionHead(4, 2).eval()
    last = head.attention[4]
    assert isinstance(last, nn.Conv2d)
    with torch.no_grad():
        last.weight.zero_()  # constant mask: sigmoid(bias) everywhere
    features = torch.randn(1, 4, 3, 3)
    expected = head.fc2(torch.relu(head.fc1(features.mean(dim=(2, 3)))))
    torch.testing.assert_close(head(features), expected)


def test_create_head_errors() -> None:
    with pytest.raises(
        ValueError, match="unknown head 'gru'; available heads: attention, linear, mlp"
    ):
        create_head("gru", 4, 2)
    with pytest.raises(ValueError, match=r"head 'mlp' needs feature_size=\(h, w\), got None"):
        create_head("mlp", 4, 2)
    with pytest.raises(ValueError, match="num_features and num_labels must be >= 1"):
        create_head("linear", 4, 0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        create_head("attention", 4, 2, dropout=1.0)
