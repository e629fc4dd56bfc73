"""Tuning's vectorised per-threshold counts against one comparison per threshold."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from chexviz.evaluate.chexlocalize._pixels import Canvas
from chexviz.evaluate.chexlocalize.tuning import DEFAULT_THRESHOLDS, _counts_above

_LEVELS = np.array(DEFAULT_THRESHOLDS, dtype=np.float32)


@settings(max_examples=60, deadline=None)
@given(
    st.tuples(st.integers(1, 40), st.integers(1, 40)),
    st.integers(0, 2**16),
    st.sampled_from([np.float32, np.float64]),
)
def test_counts_above_every_level_match_one_comparison_each(
    size: tuple[int, int], seed: int, dtype: type[np.floating]
) -> None:
    rng = np.random.default_rng(seed)
    # Values on the levels themselves, and one float32 step either side, are where a
    # comparison in the wrong precision would move a pixel.
    near = np.concatenate(
        [_LEVELS, np.nextafter(_LEVELS, np.float32(0)), np.nextafter(_LEVELS, np.float32(1))]
    )
    normalised = np.where(rng.random(size) < 0.5, rng.choice(near, size), rng.random(size)).astype(
        dtype
    )
    truth = rng.random(size) < 0.3
    canvas = Canvas()
    canvas.array("above", (50, 50), np.bool_).fill(True)  # stale contents must not leak
    predicted, inter = _counts_above(normalised, truth, _LEVELS, canvas)
    for k, level in enumerate(_LEVELS):
        above = normalised > level
        assert predicted[k] == np.count_nonzero(above)
        assert inter[k] == np.count_nonzero(above & truth)
