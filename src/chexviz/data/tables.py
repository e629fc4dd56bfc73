"""Reading the CSV tables of chest X-ray releases strictly.

Every reader (CheXpert's ``train.csv``, MIMIC-CXR-JPG's ``mimic-cxr-2.0.0-*.csv.gz``, NIH's
``Data_Entry_2017.csv``) goes through [`read_table`][chexviz.data.tables.read_table], so they all
refuse the same damaged files with the same kind of message: a missing column, a file cut
mid-row, a row with fewer cells than the header, a header repeated mid-file (two exports joined),
another delimiter, text that is not UTF-8. Files ending in ``.gz`` are decompressed on the fly.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from chexviz.data.labels import MissingColumnsError

__all__ = ["read_table", "read_text"]


def read_text(path: str | os.PathLike[str]) -> str:
    """Reads a UTF-8 text file, decompressing it first when its name ends in ``.gz``.

    Args:
        path: The file.

    Returns:
        Its text, without a byte-order mark.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not UTF-8 text, or not valid gzip data (the message names it).
    """
    file = Path(path)
    try:
        if file.name.endswith(".gz"):
            with gzip.open(file, "rt", encoding="utf-8-sig", newline="") as handle:
                return handle.read()
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{file} is not UTF-8 text ({error})") from None
    except (gzip.BadGzipFile, EOFError) as error:
        raise ValueError(f"{file} is not a complete gzip file ({error})") from None


def read_table(path: str | os.PathLike[str], required: Sequence[str]) -> pd.DataFrame:
    """Reads a comma-separated table whose ``required`` columns must all be present.

    Required columns are read as text, and only an empty cell counts as missing: pandas would
    otherwise turn ``"NA"``, ``"null"`` or ``"None"`` into NaN without a word. Other columns
    keep pandas' own types.

    Args:
        path: A ``.csv`` file, or a gzip-compressed ``.csv.gz``.
        required: Column names the table must have; the first is also used to spot a header
            row repeated inside the file.

    Returns:
        The rows, indexed ``0 .. n - 1`` in file order (so row ``i`` is on line ``i + 2``).

    Raises:
        FileNotFoundError: The file does not exist.
        MissingColumnsError: Required columns are missing (all are listed).
        ValueError: The file is empty, has no rows, is not UTF-8 or not well-formed CSV, uses
            another delimiter, has a row with fewer or (unnamed) more cells than the header,
            or repeats its header row; the message names the file and line.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(2, "CSV file not found", str(file))
    try:
        header = pd.read_csv(file, nrows=0)
        missing = [name for name in required if name not in header.columns]
        if missing:
            _check_delimiter(file, header.columns)
            raise MissingColumnsError(missing, where=str(file))
        rows = pd.read_csv(
            file,
            dtype=dict.fromkeys(required, str),
            keep_default_na=False,
            na_values=[""],
        )
    except pd.errors.EmptyDataError:
        raise ValueError(f"{file} is empty") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{file} is not UTF-8 text ({error})") from None
    except (gzip.BadGzipFile, EOFError) as error:
        raise ValueError(f"{file} is not a complete gzip file ({error})") from None
    except pd.errors.ParserError as error:
        raise ValueError(f"{file} is not a well-formed CSV file ({error})") from None
    if rows.empty:
        raise ValueError(f"{file} has a header but no rows")
    if not rows.index.equals(pd.RangeIndex(len(rows))):
        # pandas turns the leading cells into an index when every row is longer than the header.
        raise ValueError(
            f"{file} line 2: more cells than the {len(header.columns)} columns of the header"
        )
    _check_field_counts(file, len(header.columns), len(rows))
    if required:
        first = required[0]
        repeated = (rows[first] == first).to_numpy(dtype=bool)
        if repeated.any():
            raise ValueError(
                f"{file} line {int(np.argmax(repeated)) + 2}: the header row appears again "
                "(CSV files joined together?)"
            )
    return rows


def _check_delimiter(path: Path, columns: pd.Index) -> None:
    if len(columns) == 1:
        for delimiter in (";", "\t", "|"):
            if delimiter in str(columns[0]):
                raise ValueError(
                    f"{path}: columns are separated by {delimiter!r}; chexviz reads "
                    "comma-separated files like the public releases"
                )


def _check_field_counts(path: Path, fields: int, rows: int) -> None:
    """Refuses rows with fewer cells than the header, which pandas would read as blank cells."""
    text = read_text(path)
    # Without quotes every comma separates cells, so one count settles the common case.
    if '"' not in text and text.count(",") == (fields - 1) * (rows + 1):
        return
    reader = csv.reader(io.StringIO(text, newline=""))
    for cells in reader:
        if cells and len(cells) < fields:
            raise ValueError(
                f"{path} line {reader.line_num}: {len(cells)} cells but the header has {fields} "
                "columns (truncated or damaged row)"
            )
