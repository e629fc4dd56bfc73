import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from chexviz.training.losses import (
    MaskedBCEWithLogitsLoss,
    masked_bce_sum,
    masked_bce_with_logits,
    pos_weight_from_targets,
)

NAN = math.nan


def test_zero_logits_give_ln2_over_valid_entries_only():
    logits = torch.zeros(2, 3)
    targets = torch.tensor([[1.0, NAN, 0.0], [NAN, NAN, 1.0]])
    loss = masked_bce_with_logits(logits, targets)
    assert loss.item() == pytest.approx(math.log(2.0))
    total, count = masked_bce_sum(logits, targets)
    assert count.item() == 3
    assert total.item() == pytest.approx(3 * math.log(2.0))


def test_hand_computed_mixed_batch():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    targets = torch.tensor([[1.0, 0.0], [NAN, 1.0]])
    expected = (
        -math.log(1 / (1 + math.exp(-2.0)))
        - math.log(1 - 1 / (1 + math.exp(1.0)))
        - math.log(1 / (1 + math.exp(-3.0)))
    ) / 3
    assert masked_bce_with_logits(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_matches_torch_without_nan():
    torch.manual_seed(0)
    logits = torch.randn(5, 4)
    targets = (torch.rand(5, 4) > 0.5).float()
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0])
    torch.testing.assert_close(
        masked_bce_with_logits(logits, targets, weight),
        F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight),
    )
    module = MaskedBCEWithLogitsLoss([1.0, 2.0, 0.5, 3.0])
    torch.testing.assert_close(
        module(logits, targets), torch.nn.BCEWithLogitsLoss(pos_weight=weight)(logits, targets)
    )


def test_all_ignored_batch_is_zero_with_zero_gradient():
    logits = torch.full((3, 2), 1e4, requires_grad=True)
    loss = masked_bce_with_logits(logits, torch.full((3, 2), NAN))
    loss.backward()
    assert loss.item() == 0.0
    assert logits.grad is not None
    assert torch.equal(logits.grad, torch.zeros(3, 2))


def test_ignored_entries_get_no_gradient_even_when_extreme():
    logits = torch.tensor([[-1e4, 0.0]], requires_grad=True)
    masked_bce_with_logits(logits, torch.tensor([[NAN, 1.0]])).backward()
    assert logits.grad is not None
    assert logits.grad[0, 0].item() == 0.0
    assert logits.grad[0, 1].item() == pytest.approx(-0.5)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float32, (6, 3), elements=st.floats(-20, 20, width=32)),
    arrays(np.int8, (6, 3), elements=st.integers(-1, 1)),
)
def test_mask_equals_dropping_entries(logits, codes):
    targets = np.where(codes < 0, np.nan, codes).astype(np.float32)
    keep = codes >= 0
    loss = masked_bce_with_logits(torch.from_numpy(logits), torch.from_numpy(targets))
    assert torch.isfinite(loss)
    if keep.any():
        expected = F.binary_cross_entropy_with_logits(
            torch.from_numpy(logits[keep]), torch.from_numpy(targets[keep])
        )
        torch.testing.assert_close(loss, expected)
    else:
        assert loss.item() == 0.0


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        masked_bce_with_logits(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="pos_weight"):
        masked_bce_with_logits(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2))


@pytest.mark.parametrize("bad", [[1.0, -1.0], [1.0, math.inf], [[1.0]]])
def test_module_rejects_bad_pos_weight(bad):
    with pytest.raises(ValueError, match="pos_weight"):
        MaskedBCEWithLogitsLoss(bad)


def test_pos_weight_from_targets_counts_and_clips():
    targets = np.array(
        [[1, 0, 1, NAN], [0, 0, 1, 0], [0, 0, 1, 1], [0, NAN, 1, 0]], dtype=np.float32
    )
    weight = pos_weight_from_targets(targets, max_weight=10.0)
    np.testing.assert_allclose(weight, [3.0, 10.0, 0.1, 2.0])
    with pytest.raises(ValueError, match="shape"):
        pos_weight_from_targets(np.zeros(3))
