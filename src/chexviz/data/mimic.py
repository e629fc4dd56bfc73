"""MIMIC-CXR-JPG (and MIMIC-CXR's DICOM files) as a PyTorch ``Dataset``.

MIMIC-CXR-JPG v2.0.0 / v2.1.0 (Johnson et al., https://physionet.org/content/mimic-cxr-jpg/)
holds the radiographs of the Beth Israel Deaconess Medical Center as JPEGs, and four tables,
gzip-compressed:

``mimic-cxr-2.0.0-chexpert.csv.gz`` (and ``-negbio``)
    One row per **study**: ``subject_id``, ``study_id``, then CheXpert's 14 observations in
    alphabetical order, with CheXpert's cells (``1.0``, ``0.0``, ``-1.0``, blank), from the
    CheXpert (or NegBio) labeler run on the study's report. Every image of a study carries its
    study's labels, lateral views included.
``mimic-cxr-2.0.0-metadata.csv.gz``
    One row per image: ``dicom_id``, ``subject_id``, ``study_id``, ``ViewPosition`` (``PA``,
    ``AP``, ``LATERAL``, ``LL``, ``AP AXIAL``, ... or blank), and DICOM header fields.
``mimic-cxr-2.0.0-split.csv.gz``
    The official split: ``dicom_id``, ``study_id``, ``subject_id``, ``split`` (``train``,
    ``validate`` or ``test``), by patient.

Images are at ``files/p<first two digits of subject_id>/p<subject_id>/s<study_id>/<dicom_id>.jpg``;
MIMIC-CXR's DICOM release uses the same layout with ``.dcm`` (``image_suffix=".dcm"``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import torch

from chexviz._internal.checks import Crop
from chexviz.data.dataset import ChestXrayDataset
from chexviz.data.labels import CHEXPERT_LABELS, BlankPolicy, UncertaintyPolicy
from chexviz.data.tables import read_table

__all__ = ["MIMIC_SPLITS", "MIMIC_TABLES", "MIMICCXRDataset"]

logger = logging.getLogger(__name__)

MIMIC_TABLES: dict[str, str] = {
    "metadata": "mimic-cxr-2.0.0-metadata.csv",
    "split": "mimic-cxr-2.0.0-split.csv",
    "chexpert": "mimic-cxr-2.0.0-chexpert.csv",
    "negbio": "mimic-cxr-2.0.0-negbio.csv",
}
"""The tables read, by role; each is looked for as ``<name>.gz``, then ``<name>``."""

MIMIC_SPLITS: tuple[str, ...] = ("train", "validate", "test")
"""The values of the ``split`` column."""

_ID = re.compile(r"^\d{2,}$")
_DICOM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")
_SUFFIXES = (".jpg", ".dcm")


class MIMICCXRDataset(ChestXrayDataset):
    """MIMIC-CXR-JPG images with their study's CheXpert labels, in CheXpert's label order.

    Every kept image of ``mimic-cxr-2.0.0-metadata.csv.gz`` is one item ``(image, target)``, as
    in [`CheXpertDataset`][chexviz.data.dataset.CheXpertDataset], with the same uncertainty and
    blank policies. Targets come from the image's study row of the labeler's table, so the
    images of one study share them. Images whose study has no label row are left out, with a
    warning, and listed in ``unlabeled``.

    Patients are ``subject_id`` (``"p10000032"``, the folder name), for
    [`split_by_patient`][chexviz.data.splits.split_by_patient]; ``split="test"`` reads the
    official split instead.

    Attributes:
        frame: The kept rows of the metadata table (index: line - 2), with ``split`` when a
            split was asked for, ``Path`` (relative to ``root``), the label columns
            (``1, 0, -1`` or NaN for blank) and ``patient_id``.
        unlabeled: Metadata rows (after the view and split filters) whose study has no row
            in the label table.
        labels_path: The label table read.
        split: The official split read, or ``None`` for all images.
        csv_path: The metadata table (error messages name its lines).
        image_root: The data folder (holding ``files/``).
    """

    _LAYOUT_HINT: ClassVar[str] = (
        "point root at the folder holding files/ and the mimic-cxr-2.0.0-*.csv.gz tables"
    )

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        split: Literal["train", "validate", "test"] | None = None,
        labeler: Literal["chexpert", "negbio"] = "chexpert",
        image_size: int = 128,
        in_channels: int = 1,
        crop: Crop = "whole",
        uncertainty: UncertaintyPolicy = "zeros",
        blank: BlankPolicy = "zeros",
        views: Sequence[str] | None = ("PA", "AP"),
        image_suffix: str = ".jpg",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        labels: Sequence[str] = CHEXPERT_LABELS,
        on_error: Literal["raise", "skip"] = "raise",
        progress: bool = True,
        workers: int | None = None,
    ) -> None:
        """Reads and validates the MIMIC-CXR-JPG tables.

        Args:
            root: The data folder (``.../mimic-cxr-jpg/2.0.0``), holding ``files/`` and the
                tables.
            split: ``"train"``, ``"validate"`` or ``"test"`` for the official split, ``None``
                for every image.
            labeler: Labels from the CheXpert labeler (``mimic-cxr-2.0.0-chexpert``) or from
                NegBio (``mimic-cxr-2.0.0-negbio``).
            image_size: Side ``S`` of the square images.
            in_channels: 1, or 3 to replicate the grey image.
            crop: ``"whole"`` (default) resizes each image whole;
                ``"center"`` takes each image's centred square first (torchxrayvision's
                crop; see [`load_image`][chexviz.data.images.load_image]).
            uncertainty: What uncertain (``-1.0``) cells become, as for CheXpert.
            blank: What blank cells become: ``"zeros"`` or ``"ignore"``.
            views: ``ViewPosition`` values to keep; the default keeps frontal views (PA and
                AP); ``None`` keeps every image, blank views included.
            image_suffix: ``".jpg"`` for MIMIC-CXR-JPG, ``".dcm"`` for MIMIC-CXR's DICOMs.
            transform: Applied to each image tensor.
            cache_dir: Folder for the preprocessed image cache; ``None`` decodes lazily.
            labels: Label columns, in target order (CheXpert's order by default).
            on_error: ``"raise"`` or ``"skip"`` unreadable images (counted in ``skipped``).
            progress: Show progress bars (on a terminal only).
            workers: Threads for checking and caching images.

        Raises:
            FileNotFoundError: ``root``, a table or (with ``on_error="raise"``) an image does
                not exist.
            MissingColumnsError: A table lacks a column (lists them).
            LabelValueError: A label cell is invalid (names the label table's line, column).
            ValueError: A malformed id or split value, a study labelled twice, an image
                without a split row or with another patient there, an unknown argument, or
                no image left (the message names the table, line and column).
        """
        super().__init__(
            image_size=image_size,
            in_channels=in_channels,
            crop=crop,
            uncertainty=uncertainty,
            blank=blank,
            transform=transform,
            labels=labels,
            on_error=on_error,
            progress=progress,
            workers=workers,
        )
        if labeler not in ("chexpert", "negbio"):
            raise ValueError(f"labeler must be 'chexpert' or 'negbio', got {labeler!r}")
        if image_suffix not in _SUFFIXES:
            raise ValueError(f"image_suffix must be one of {_SUFFIXES}, got {image_suffix!r}")
        if split is not None and split not in MIMIC_SPLITS:
            raise ValueError(f"split must be one of {list(MIMIC_SPLITS)} or None, got {split!r}")
        folder = Path(root).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(2, "data root folder not found", str(folder))
        self.image_root = folder.resolve()
        self.csv_path = _table(self.image_root, "metadata")
        self.labels_path = _table(self.image_root, labeler)
        self.split = split

        rows = read_table(self.csv_path, ["dicom_id", "subject_id", "study_id", "ViewPosition"])
        self._check_ids(rows, self.csv_path, ("subject_id", "study_id"))
        self._check_dicom_ids(rows, self.csv_path)
        rows = self._filter_views(rows, views)
        if split is not None:
            rows = self._filter_split(rows, split)
        rows, raw = self._join_labels(rows)
        subjects = rows["subject_id"].str.strip()
        studies = rows["study_id"].str.strip()
        dicoms = rows["dicom_id"].str.strip()
        rows["Path"] = [
            f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}{image_suffix}"
            for subject, study, dicom in zip(subjects, studies, dicoms, strict=True)
        ]
        self.patient_ids = [f"p{subject}" for subject in subjects]
        root_text = str(self.image_root)
        self.paths = [Path(root_text + "/" + path) for path in rows["Path"]]
        self._finish(rows, raw, cache_dir)

    def _check_ids(self, rows: pd.DataFrame, source: Path, columns: Sequence[str]) -> None:
        for column in columns:
            ids = rows[column].fillna("").str.strip()
            bad = ~ids.str.match(_ID).to_numpy(dtype=bool)
            if bad.any():
                row = rows.index[int(np.argmax(bad))]
                raise ValueError(
                    f"{self._where(row, source)}, column {column!r}: {rows.at[row, column]!r} "
                    "is not a numeric id"
                )

    def _check_dicom_ids(self, rows: pd.DataFrame, source: Path) -> None:
        ids = rows["dicom_id"].fillna("").str.strip()
        bad = ~(ids.str.match(_DICOM_ID) & ~ids.str.contains("..", regex=False)).to_numpy(
            dtype=bool
        )
        if bad.any():
            row = rows.index[int(np.argmax(bad))]
            raise ValueError(
                f"{self._where(row, source)}, column 'dicom_id': {rows.at[row, 'dicom_id']!r} is "
                "not a plain file name (paths are refused so that nothing outside the data "
                "folder is read)"
            )

    def _filter_views(self, rows: pd.DataFrame, views: Sequence[str] | None) -> pd.DataFrame:
        if views is None:
            return rows
        wanted = [views] if isinstance(views, str) else [str(view).strip() for view in views]
        position = rows["ViewPosition"].fillna("").str.strip()
        keep = position.isin(wanted).to_numpy(dtype=bool)
        if not keep.any():
            raise ValueError(
                f"{self.csv_path}: no image with a ViewPosition in {wanted} among its "
                f"{len(rows)} rows (views=None keeps them all)"
            )
        logger.info(
            "views %s: kept %d of %d images (%d with a blank ViewPosition left out)",
            wanted,
            int(keep.sum()),
            len(rows),
            int((position == "").sum()),
        )
        kept: pd.DataFrame = rows[keep]
        return kept

    def _filter_split(self, rows: pd.DataFrame, split: str) -> pd.DataFrame:
        path = _table(self.image_root, "split")
        table = read_table(path, ["dicom_id", "study_id", "subject_id", "split"])
        values = table["split"].fillna("").str.strip()
        bad = ~values.isin(MIMIC_SPLITS).to_numpy(dtype=bool)
        if bad.any():
            row = table.index[int(np.argmax(bad))]
            raise ValueError(
                f"{self._where(row, path)}, column 'split': {table.at[row, 'split']!r} is not "
                f"one of {list(MIMIC_SPLITS)}"
            )
        keys = table["dicom_id"].str.strip()
        repeated = keys.duplicated().to_numpy(dtype=bool)
        if repeated.any():
            row = table.index[int(np.argmax(repeated))]
            raise ValueError(
                f"{self._where(row, path)}, column 'dicom_id': {keys[row]!r} has a split row "
                "already"
            )
        lookup = pd.DataFrame(
            {
                "split": values.to_numpy(),
                "split_subject": table["subject_id"].str.strip().to_numpy(),
            },
            index=pd.Index(keys.to_numpy()),
        )
        dicoms = rows["dicom_id"].str.strip()
        found = dicoms.isin(lookup.index).to_numpy(dtype=bool)
        if not found.all():
            row = rows.index[int(np.argmax(~found))]
            raise ValueError(
                f"{self._where(row)}: image {dicoms[row]!r} has no row in {path}, so its split "
                "is unknown"
            )
        matched = lookup.loc[dicoms.to_numpy()]
        moved = matched["split_subject"].to_numpy() != rows["subject_id"].str.strip().to_numpy()
        if moved.any():
            row = rows.index[int(np.argmax(moved))]
            raise ValueError(
                f"{self._where(row)}: image {dicoms[row]!r} belongs to subject "
                f"{rows.at[row, 'subject_id']!r} but {path} names subject "
                f"{matched['split_subject'].iloc[int(np.argmax(moved))]!r}"
            )
        rows = rows.assign(split=matched["split"].to_numpy())
        keep = (rows["split"] == split).to_numpy(dtype=bool)
        if not keep.any():
            raise ValueError(f"{path}: no kept image is in split {split!r}")
        logger.info("split %r: kept %d of %d images", split, int(keep.sum()), len(rows))
        kept: pd.DataFrame = rows[keep]
        return kept

    def _join_labels(self, rows: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        path = self.labels_path
        table = read_table(path, ["subject_id", "study_id", *self.labels])
        self._check_ids(table, path, ("subject_id", "study_id"))
        raw = self._parse(table, source=path)
        keys = table["subject_id"].str.strip() + "/" + table["study_id"].str.strip()
        repeated = keys.duplicated().to_numpy(dtype=bool)
        if repeated.any():
            row = table.index[int(np.argmax(repeated))]
            raise ValueError(
                f"{self._where(row, path)}: study {keys[row]!r} (subject/study) is labelled twice"
            )
        position = pd.Series(np.arange(len(table)), index=pd.Index(keys.to_numpy()))
        wanted = (rows["subject_id"].str.strip() + "/" + rows["study_id"].str.strip()).to_numpy()
        labelled = np.isin(wanted, position.index.to_numpy())
        self.unlabeled: pd.DataFrame = rows[~labelled].copy()
        if not labelled.all():
            logger.warning(
                "%s: %d of %d images belong to studies without a row in %s; left out (listed "
                "in .unlabeled)",
                self.csv_path,
                int((~labelled).sum()),
                len(rows),
                path.name,
            )
        if not labelled.any():
            raise ValueError(f"{path}: none of the kept images' studies has a label row")
        kept: pd.DataFrame = rows[labelled].copy()
        return kept, raw[position.loc[wanted[labelled]].to_numpy()]


def _table(root: Path, role: str) -> Path:
    name = MIMIC_TABLES[role]
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    others = sorted(root.glob(f"mimic-cxr-*-{role}.csv*"))
    if len(others) == 1:
        return others[0]
    if others:
        raise ValueError(
            f"several {role} tables in {root}: {[path.name for path in others]}; keep one"
        )
    raise FileNotFoundError(2, f"MIMIC-CXR-JPG {role} table {name}(.gz) not found", str(root))
