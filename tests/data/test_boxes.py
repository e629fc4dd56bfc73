"""The ground-truth box format: reading box files and scaling boxes to resized images."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chexviz.data.boxes import BOX_COLUMNS, load_boxes, scale_boxes
from chexviz.data.labels import MissingColumnsError


def write_boxes(
    path: Path, rows: list[list[object]], header: tuple[str, ...] = BOX_COLUMNS
) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


GOOD = [
    "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
    "Edema",
    1,
    2,
    30,
    40,
    390,
    320,
]


def test_load_boxes_reads_types(tmp_path: Path) -> None:
    frame = load_boxes(write_boxes(tmp_path / "b.csv", [GOOD, GOOD]))
    assert list(frame.columns) == list(BOX_COLUMNS)
    assert frame["x1"].dtype == np.int64
    assert frame["label"].tolist() == ["Edema", "Edema"]
    empty = load_boxes(write_boxes(tmp_path / "e.csv", []))
    assert len(empty) == 0
    assert list(empty.columns) == list(BOX_COLUMNS)


def test_load_boxes_errors_name_the_file_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        load_boxes(tmp_path / "nope.csv")
    with pytest.raises(MissingColumnsError, match="height"):
        load_boxes(write_boxes(tmp_path / "m.csv", [GOOD[:-1]], BOX_COLUMNS[:-1]))
    cases = [
        ([*GOOD[:2], "a", 2, 30, 40, 390, 320], "line 3, column 'x0'"),
        ([*GOOD[:2], 1.5, 2, 30, 40, 390, 320], "line 3, column 'x0'"),
        ([*GOOD[:2], 1, 2, 400, 40, 390, 320], "line 3, column 'x1'"),
        ([*GOOD[:2], 1, 2, 1, 40, 390, 320], "line 3, column 'x1'"),
        ([*GOOD[:2], 1, -2, 30, 40, 390, 320], "line 3, column 'y0'"),
        ([GOOD[0], "Edemaa", *GOOD[2:]], "line 3, column 'label'"),
    ]
    for bad, message in cases:
        path = write_boxes(tmp_path / "bad.csv", [GOOD, bad])
        with pytest.raises(ValueError, match=re.escape(message)) as info:
            load_boxes(path)
        assert "bad.csv" in str(info.value)


boxes_strategy = st.lists(
    st.tuples(st.integers(1, 600), st.integers(1, 600)).flatmap(
        lambda wh: st.tuples(
            st.integers(0, wh[0] - 1), st.integers(0, wh[1] - 1), st.just(wh[0]), st.just(wh[1])
        ).flatmap(
            lambda t: st.tuples(
                st.just(t[0]),
                st.just(t[1]),
                st.integers(t[0] + 1, t[2]),
                st.integers(t[1] + 1, t[3]),
                st.just(t[2]),
                st.just(t[3]),
            )
        )
    ),
    min_size=1,
    max_size=8,
)


@given(boxes=boxes_strategy, size=st.integers(1, 512))
def test_scale_boxes_keeps_boxes_inside_the_resized_image(
    boxes: list[tuple[int, int, int, int, int, int]], size: int
) -> None:
    frame = pd.DataFrame(boxes, columns=list(BOX_COLUMNS[2:]))
    frame.insert(0, "label", "Edema")
    frame.insert(0, "Path", "p.jpg")
    scaled = scale_boxes(frame, size)
    assert (scaled[["x0", "y0"]] >= 0).all().all()
    assert (scaled[["x1", "y1"]] <= size).all().all()
    assert (scaled.x1 > scaled.x0).all()
    assert (scaled.y1 > scaled.y0).all()
    assert (scaled.width == size).all()
    assert (scaled.height == size).all()
    # Scaling keeps relative positions and is idempotent at the same size.
    np.testing.assert_allclose(scaled.x0 / size, frame.x0 / frame.width)
    np.testing.assert_allclose(scaled.y1 / size, frame.y1 / frame.height)
    pd.testing.assert_frame_equal(scale_boxes(scaled, size), scaled)
    assert frame.x0.dtype == np.int64  # the input is not modified


def test_scale_boxes_rejects_bad_input() -> None:
    frame = pd.DataFrame([GOOD], columns=list(BOX_COLUMNS))
    for size in (0, -4, 2.5, True):
        with pytest.raises((ValueError, TypeError), match="size"):
            scale_boxes(frame, size)  # type: ignore[arg-type]
    with pytest.raises(MissingColumnsError, match="width"):
        scale_boxes(frame.drop(columns="width"), 64)
    with pytest.raises(ValueError, match="column 'x1'"):
        scale_boxes(frame.assign(x1=500), 64)
