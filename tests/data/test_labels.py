from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chexviz.data.labels import (
    CHEXPERT_LABELS,
    COMPETITION_LABELS,
    LabelValueError,
    MissingColumnsError,
    apply_policy,
    encode_labels,
    parse_labels,
    resolve_policy,
)

NAN = float("nan")
TWO = ("Edema", "Atelectasis")


def _frame(cells: dict[str, list[object]]) -> pd.DataFrame:
    return pd.DataFrame(cells)


def test_constants_are_the_release_columns() -> None:
    assert len(CHEXPERT_LABELS) == 14
    assert CHEXPERT_LABELS[0] == "No Finding"
    assert set(COMPETITION_LABELS) <= set(CHEXPERT_LABELS)


def test_parse_reads_text_cells_as_in_the_release() -> None:
    frame = _frame({"Edema": ["1.0", "0.0", "-1.0", "", "  ", " 1 "]})
    raw = parse_labels(frame, ("Edema",))
    assert raw.dtype == np.float32
    np.testing.assert_array_equal(raw[:, 0], [1, 0, -1, NAN, NAN, 1])


def test_parse_reads_numeric_cells() -> None:
    frame = _frame({"Edema": [1.0, 0.0, -1.0, None]})
    np.testing.assert_array_equal(parse_labels(frame, ("Edema",))[:, 0], [1, 0, -1, NAN])


@pytest.mark.parametrize("bad", ["2.0", "yes", "0.5", "nan?", "-1.5"])
def test_parse_rejects_other_values_naming_row_and_column(bad: str) -> None:
    frame = pd.DataFrame({"Edema": ["1.0", bad]}, index=[10, 11])
    with pytest.raises(LabelValueError, match=r"row 11, column 'Edema'.*invalid") as info:
        parse_labels(frame, ("Edema",))
    assert info.value.row == 11
    assert info.value.column == "Edema"
    assert info.value.value == bad


def test_parse_rejects_numeric_out_of_range() -> None:
    with pytest.raises(LabelValueError, match="column 'Atelectasis'"):
        parse_labels(_frame({"Edema": [1.0], "Atelectasis": [3.0]}), TWO)


def test_parse_lists_every_missing_column() -> None:
    with pytest.raises(MissingColumnsError) as info:
        parse_labels(_frame({"Edema": [1.0]}), ("Edema", "Fracture", "Pneumonia"))
    assert info.value.columns == ("Fracture", "Pneumonia")
    assert "Fracture" in str(info.value)
    assert "Pneumonia" in str(info.value)
    assert isinstance(info.value, KeyError)


@pytest.mark.parametrize(("policy", "expected"), [("zeros", 0.0), ("ones", 1.0), ("ignore", NAN)])
def test_uncertainty_policies(policy: str, expected: float) -> None:
    frame = _frame({"Edema": ["1.0", "0.0", "-1.0", ""]})
    targets = encode_labels(frame, ("Edema",), uncertainty=policy)  # type: ignore[arg-type]
    np.testing.assert_array_equal(targets[:, 0], [1.0, 0.0, expected, 0.0])


def test_blank_is_negative_by_default_and_can_be_ignored() -> None:
    frame = _frame({"Edema": ["", "-1.0"]})
    np.testing.assert_array_equal(encode_labels(frame, ("Edema",))[:, 0], [0.0, 0.0])
    ignored = encode_labels(frame, ("Edema",), blank="ignore", uncertainty="ones")
    np.testing.assert_array_equal(ignored[:, 0], [NAN, 1.0])


def test_per_label_mapping_defaults_to_zeros() -> None:
    frame = _frame({"Edema": ["-1.0"], "Atelectasis": ["-1.0"], "Cardiomegaly": ["-1.0"]})
    labels = ("Edema", "Atelectasis", "Cardiomegaly")
    targets = encode_labels(frame, labels, uncertainty={"Atelectasis": "ones", "Edema": "ignore"})
    np.testing.assert_array_equal(targets[0], [NAN, 1.0, 0.0])


def test_mapping_may_name_chexpert_labels_outside_the_selection() -> None:
    assert resolve_policy({"Edema": "ones", "Fracture": "ignore"}, ("Edema",)) == ("ones",)


def test_mapping_rejects_unknown_label() -> None:
    with pytest.raises(ValueError, match="Atelectsis"):
        resolve_policy({"Atelectsis": "ones"})


@pytest.mark.parametrize("policy", ["U-Ones", "one", "", None])
def test_unknown_policy_names_the_argument(policy: object) -> None:
    with pytest.raises((ValueError, TypeError), match="uncertainty"):
        resolve_policy(policy)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"uncertainty\['Edema'\]"):
        resolve_policy({"Edema": policy})  # type: ignore[dict-item]


def test_unknown_blank_policy() -> None:
    with pytest.raises(ValueError, match="blank"):
        encode_labels(_frame({"Edema": [1.0]}), ("Edema",), blank="ones")  # type: ignore[arg-type]


def test_apply_policy_checks_shape_and_values() -> None:
    with pytest.raises(ValueError, match="shape"):
        apply_policy(np.zeros((2, 3)), TWO)
    with pytest.raises(ValueError, match="1, 0, -1"):
        apply_policy(np.full((1, 2), 0.5), TWO)


_CELLS = st.sampled_from(["1.0", "0.0", "-1.0", "", 1.0, 0.0, -1.0, None, " -1.0", "1"])
_POLICY = st.sampled_from(["zeros", "ones", "ignore"])


@st.composite
def _frames_and_policies(draw: st.DrawFn) -> tuple[pd.DataFrame, object, str]:
    labels = draw(st.lists(st.sampled_from(CHEXPERT_LABELS), min_size=1, max_size=5, unique=True))
    rows = draw(st.integers(min_value=1, max_value=12))
    frame = pd.DataFrame(
        {name: draw(st.lists(_CELLS, min_size=rows, max_size=rows)) for name in labels}
    )
    uncertainty = draw(
        st.one_of(_POLICY, st.dictionaries(st.sampled_from(labels), _POLICY, max_size=3))
    )
    blank = draw(st.sampled_from(["zeros", "ignore"]))
    return frame, uncertainty, blank


@settings(max_examples=150, deadline=None)
@given(_frames_and_policies())
def test_targets_follow_the_policies(case: tuple[pd.DataFrame, object, str]) -> None:
    frame, uncertainty, blank = case
    labels = tuple(frame.columns)
    raw = parse_labels(frame, labels)
    targets = encode_labels(frame, labels, uncertainty=uncertainty, blank=blank)  # type: ignore[arg-type]
    assert targets.shape == (len(frame), len(labels))
    assert targets.dtype == np.float32
    assert np.isin(targets[~np.isnan(targets)], (0.0, 1.0)).all()
    policies = resolve_policy(uncertainty, labels)  # type: ignore[arg-type]
    for j, policy in enumerate(policies):
        for i in range(len(frame)):
            cell, target = raw[i, j], targets[i, j]
            if cell in (0.0, 1.0):
                assert target == cell
            elif cell == -1.0:
                expected = {"zeros": 0.0, "ones": 1.0, "ignore": NAN}[policy]
                assert target == expected or (math.isnan(expected) and math.isnan(target))
            else:
                assert (blank == "ignore" and math.isnan(target)) or target == 0.0


@settings(max_examples=80, deadline=None)
@given(
    st.lists(_CELLS, min_size=1, max_size=8),
    st.one_of(
        st.floats(allow_nan=False).filter(lambda value: value not in (1.0, 0.0, -1.0)),
        st.text(min_size=1, max_size=4).filter(lambda text: text.strip() not in ("", "1", "0")),
    ),
    st.data(),
)
def test_any_other_cell_is_rejected(cells: list[object], bad: object, data: st.DataObject) -> None:
    position = data.draw(st.integers(min_value=0, max_value=len(cells)))
    column = [*cells[:position], bad, *cells[position:]]
    frame = pd.DataFrame({"Edema": column})
    try:
        numeric = float(str(bad).strip())
    except ValueError:
        numeric = None
    if numeric is not None and numeric in (1.0, 0.0, -1.0):
        return  # spellings such as "1.00" or "-1e0" are valid numbers
    with pytest.raises(LabelValueError) as info:
        parse_labels(frame, ("Edema",))
    assert info.value.row == position
