"""The canvas that tuning reuses from map to map gives the bits of the one-off functions."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from chexviz.evaluate.chexlocalize._pixels import Canvas, normalise_, otsu_fill, resize_map

_SIZES = st.tuples(st.integers(1, 90), st.integers(1, 90))


def _maps(seed: int, count: int, dtype: torch.dtype) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = torch.randint(1, 12, (count, 2), generator=generator).tolist()
    return [torch.rand(h, w, generator=generator, dtype=dtype) for h, w in shapes]


def _naive_otsu_fill(normalised: np.ndarray) -> np.ndarray:
    """otsu_fill as it was written before the canvas: every array new."""
    grey = (normalised * 255).astype(np.uint8)
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros(grey.shape, dtype=np.uint8)
    cv2.drawContours(filled, [c for c in contours if len(c) > 1], -1, 1, thickness=cv2.FILLED)
    return filled.view(np.bool_)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(_SIZES, min_size=1, max_size=5),
    st.integers(0, 2**16),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_canvas_resizes_bit_for_bit_across_sizes(
    sizes: list[tuple[int, int]], seed: int, dtype: torch.dtype
) -> None:
    canvas = Canvas()  # one canvas for every size: views of a reused buffer
    for heatmap, size in zip(_maps(seed, len(sizes), dtype), sizes, strict=True):
        expected = resize_map(heatmap, size)
        got = canvas.resize(heatmap, size)
        assert got.shape == size
        assert got.dtype == dtype
        assert got.is_contiguous()
        assert torch.equal(got, expected)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(_SIZES, min_size=1, max_size=5),
    st.integers(0, 2**16),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_canvas_otsu_fill_equals_the_one_off_fill(
    sizes: list[tuple[int, int]], seed: int, dtype: torch.dtype
) -> None:
    canvas = Canvas()
    for heatmap, size in zip(_maps(seed, len(sizes), dtype), sizes, strict=True):
        normalised = normalise_(resize_map(heatmap, size))
        if normalised is None:
            continue
        expected = _naive_otsu_fill(normalised)
        assert np.array_equal(canvas.otsu_fill(normalised), expected)
        assert np.array_equal(otsu_fill(normalised), expected)


def test_canvas_views_have_the_size_asked_for() -> None:
    canvas = Canvas()
    big = canvas.array("grey", (30, 40), np.uint8)
    big.fill(7)
    small = canvas.array("grey", (5, 3), np.uint8)
    assert small.shape == (5, 3)
    assert small.flags.c_contiguous
    assert np.shares_memory(big, small)  # the buffer is reused, not grown
    assert canvas.array("grey", (50, 50), np.uint8).shape == (50, 50)
    assert canvas.array("grey", (5, 3), np.bool_).dtype == np.bool_
