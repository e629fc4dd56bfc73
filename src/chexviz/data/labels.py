"""The CheXpert observations and how their label cells are read.

The 14 observation names are in the column order of the release's ``train.csv``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""The 14 CheXpert observations, in the order of the release's CSV columns."""

COMPETITION_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)
"""The five observations scored in the CheXpert competition."""

PolicyName = Literal["zeros", "ones", "ignore"]
"""How one observation's uncertain (``-1.0``) cells become targets."""

UncertaintyPolicy = PolicyName | Mapping[str, PolicyName]
"""A policy for every label (``"zeros"``, ``"ones"``, ``"ignore"``) or a per-label mapping.

A mapping names the policy of some labels; every label it does not name uses ``"zeros"``
(U-Zeros), so ``{"Atelectasis": "ones", "Edema": "ones"}`` is the U-Ones/U-Zeros mix of the
strongest published CheXpert baselines.
"""

BlankPolicy = Literal["zeros", "ignore"]
"""How blank (not mentioned) cells become targets: negative (``"zeros"``) or ignored."""

POLICY_NAMES: tuple[PolicyName, ...] = ("zeros", "ones", "ignore")
"""The accepted policy names."""

_POLICY_VALUES: dict[str, float] = {"zeros": 0.0, "ones": 1.0, "ignore": float("nan")}
_RELEASE_CELLS: dict[str, float] = {"1.0": 1.0, "0.0": 0.0, "-1.0": -1.0, "": float("nan")}


class LabelValueError(ValueError):
    """A label cell holds something other than ``1.0``, ``0.0``, ``-1.0`` or blank.

    Attributes:
        row: Index label of the offending row in the frame that was parsed.
        column: Name of the offending column.
        value: The offending cell, as read.
    """

    def __init__(self, row: object, column: str, value: object, *, where: str = "") -> None:
        # NumPy scalars would print as np.int64(7) in the message.
        self.row = row.item() if isinstance(row, np.generic) else row
        self.column = column
        self.value = value.item() if isinstance(value, np.generic) else value
        row, value = self.row, self.value
        super().__init__(
            f"{where or f'row {row!r}'}, column {column!r}: invalid label value {value!r}; "
            "expected 1.0, 0.0, -1.0 or blank"
        )


class MissingColumnsError(KeyError):
    """Required columns are missing from a CSV file or frame.

    Attributes:
        columns: The missing column names.
    """

    def __init__(self, columns: Sequence[str], where: str = "the CSV") -> None:
        self.columns = tuple(columns)
        self.message = f"{where} lacks required column(s): {list(self.columns)}"
        super().__init__(self.message)

    def __str__(self) -> str:
        # KeyError would otherwise print the message in quotes.
        return self.message


def resolve_policy(
    uncertainty: UncertaintyPolicy, labels: Sequence[str] = CHEXPERT_LABELS
) -> tuple[PolicyName, ...]:
    """Spells out an uncertainty policy as one policy name per label.

    Args:
        uncertainty: A policy name for all labels, or a mapping from label to policy name.
            Labels missing from a mapping use ``"zeros"``.
        labels: The labels, in target order.

    Returns:
        One policy name per label, in the order of ``labels``.

    Raises:
        ValueError: A policy name is unknown, or a mapping names a label that is neither in
            ``labels`` nor a CheXpert observation (most likely a typo). A CheXpert observation
            that is not in ``labels`` is accepted and has no effect, so one mapping can serve
            several label subsets.
    """
    if isinstance(uncertainty, str):
        _check_policy_name(uncertainty, "uncertainty")
        return tuple(uncertainty for _ in labels)
    if not isinstance(uncertainty, Mapping):
        raise TypeError(
            f"uncertainty must be one of {POLICY_NAMES} or a mapping label -> policy, "
            f"got {type(uncertainty).__name__}"
        )
    known = set(labels) | set(CHEXPERT_LABELS)
    unknown = [name for name in uncertainty if name not in known]
    if unknown:
        raise ValueError(
            f"uncertainty mapping names unknown label(s) {unknown}; known labels: {list(labels)}"
        )
    for name, policy in uncertainty.items():
        _check_policy_name(policy, f"uncertainty[{name!r}]")
    return tuple(uncertainty.get(name, "zeros") for name in labels)


def parse_labels(
    frame: pd.DataFrame, labels: Sequence[str] = CHEXPERT_LABELS
) -> npt.NDArray[np.float32]:
    """Reads the label cells of a CheXpert CSV frame without applying any policy.

    Cells may be numbers or their text (``"1.0"``, ``"1"``, ``" -1.0 "``); blank means an empty
    or whitespace-only string or a missing value.

    Args:
        frame: Rows of a CheXpert CSV (as read by pandas, with or without ``dtype=str``).
        labels: The label columns to read, in target order.

    Returns:
        float32 array ``[len(frame), len(labels)]`` with values in ``{1, 0, -1}`` and NaN for
        blank cells.

    Raises:
        MissingColumnsError: Label columns are missing from ``frame``; the message lists all of
            them (a ``KeyError``).
        LabelValueError: A cell is not ``1``, ``0``, ``-1`` or blank; the message names the row
            (index label) and column.
    """
    missing = [name for name in labels if name not in frame.columns]
    if missing:
        raise MissingColumnsError(missing)
    out = np.empty((len(frame), len(labels)), dtype=np.float32)
    for j, name in enumerate(labels):
        out[:, j] = _parse_column(frame[name], name)
    return out


def apply_policy(
    raw: npt.ArrayLike,
    labels: Sequence[str] = CHEXPERT_LABELS,
    *,
    uncertainty: UncertaintyPolicy = "zeros",
    blank: BlankPolicy = "zeros",
) -> npt.NDArray[np.float32]:
    """Turns parsed label cells into training targets.

    Args:
        raw: ``[N, L]`` array from [`parse_labels`][chexviz.data.labels.parse_labels] (values in
            ``{1, 0, -1}``, NaN for blank).
        labels: The ``L`` label names, in column order of ``raw``.
        uncertainty: What ``-1`` (uncertain) becomes; see
            [`UncertaintyPolicy`][chexviz.data.labels.UncertaintyPolicy].
        blank: What a blank cell becomes: ``"zeros"`` (negative, as in the CheXpert paper) or
            ``"ignore"`` (NaN, as torchxrayvision does).

    Returns:
        float32 array ``[N, L]`` with values in ``{0, 1}`` and NaN for ignored entries.

    Raises:
        ValueError: ``raw`` has the wrong shape or values, or a policy is unknown.
    """
    cells = np.asarray(raw, dtype=np.float32)
    if cells.ndim != 2 or cells.shape[1] != len(labels):
        raise ValueError(f"raw labels must have shape [N, {len(labels)}], got {list(cells.shape)}")
    observed = cells[~np.isnan(cells)]
    if not np.isin(observed, (1.0, 0.0, -1.0)).all():
        raise ValueError("raw labels must only hold 1, 0, -1 or NaN")
    _check_policy_name(blank, "blank", allowed=("zeros", "ignore"))
    policies = resolve_policy(uncertainty, labels)
    targets: npt.NDArray[np.float32] = cells.copy()
    targets[np.isnan(cells)] = _POLICY_VALUES[blank]
    for j, policy in enumerate(policies):
        targets[cells[:, j] == -1.0, j] = _POLICY_VALUES[policy]
    return targets


def encode_labels(
    frame: pd.DataFrame,
    labels: Sequence[str] = CHEXPERT_LABELS,
    *,
    uncertainty: UncertaintyPolicy = "zeros",
    blank: BlankPolicy = "zeros",
) -> npt.NDArray[np.float32]:
    """Reads the label cells of a CheXpert CSV frame and applies the policies.

    ``encode_labels(frame, labels, ...)`` is ``apply_policy(parse_labels(frame, labels), ...)``.

    Args:
        frame: Rows of a CheXpert CSV.
        labels: The label columns, in target order.
        uncertainty: What uncertain (``-1``) cells become.
        blank: What blank cells become.

    Returns:
        float32 array ``[len(frame), len(labels)]`` in ``{0, 1}`` with NaN for ignored entries.

    Raises:
        MissingColumnsError: Label columns are missing (a ``KeyError``).
        LabelValueError: A cell is not ``1``, ``0``, ``-1`` or blank.
        ValueError: A policy is unknown.

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"Edema": [1.0, -1.0, None], "Atelectasis": [-1.0, 0.0, None]})
        >>> encode_labels(frame, ("Edema", "Atelectasis"), uncertainty={"Edema": "ones"})
        array([[1., 0.],
               [1., 0.],
               [0., 0.]], dtype=float32)
    """
    return apply_policy(parse_labels(frame, labels), labels, uncertainty=uncertainty, blank=blank)


def _check_policy_name(value: object, argument: str, allowed: Sequence[str] = POLICY_NAMES) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{argument} must be one of {tuple(allowed)}, got {value!r}")


def _parse_column(column: pd.Series, name: str) -> npt.NDArray[np.float32]:
    if pd.api.types.is_bool_dtype(column.dtype) and len(column):
        # True/False would silently read as 1/0; CheXpert never writes booleans.
        raise LabelValueError(column.index[0], name, column.iloc[0])
    if pd.api.types.is_numeric_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        blank = np.isnan(values)
    else:
        # A dictionary lookup handles the release's own spellings fast (223,414 rows);
        # only other spellings (" 1", 1.0 as a number) go through text parsing.
        known = column.isin(list(_RELEASE_CELLS)).to_numpy(dtype=bool)
        values = column.map(_RELEASE_CELLS).to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        blank = column.isna().to_numpy(dtype=bool) | (known & np.isnan(values))
        other = ~known & ~blank
        if other.any():
            text = column[other].astype("string").str.strip()
            empty = (text == "").to_numpy(dtype=bool)
            values[other] = pd.to_numeric(text.where(~empty), errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
            blank[np.flatnonzero(other)[empty]] = True
    bad = ~blank & ~np.isin(values, (1.0, 0.0, -1.0))
    if bad.any():
        position = int(np.argmax(bad))
        raise LabelValueError(column.index[position], name, column.iloc[position])
    return np.asarray(values, dtype=np.float32)
