"""NIH ChestX-ray14 as a PyTorch ``Dataset``, and its ground-truth boxes.

The release (Wang et al., CVPR 2017; https://nihcc.app.box.com/v/ChestXray-NIHCC) holds 112,120
frontal PNGs of 1024x1024 pixels and these tables:

``Data_Entry_2017.csv`` / ``Data_Entry_2017_v2020.csv``
    One row per image: ``Image Index`` (``00000001_000.png``), ``Finding Labels``
    (``Cardiomegaly|Effusion`` or ``No Finding``), ``Follow-up #``, ``Patient ID``, ``Patient
    Age``, ``Patient Gender``, ``View Position`` (``PA`` or ``AP``), then
    ``OriginalImage[Width,Height]`` and ``OriginalImagePixelSpacing[x,y]``. Those two header
    names contain a comma, unquoted, so each spans two cells: the rows have more cells than the
    header has names. The 2017 file also ends every line with a comma. Columns are read here
    as ``OriginalImage[Width]``, ``OriginalImage[Height]``, ``OriginalImagePixelSpacing[x]``
    and ``OriginalImagePixelSpacing[y]``.
``train_val_list.txt``, ``test_list.txt``
    The official patient-wise split: one image name per line.
``BBox_List_2017.csv``
    984 boxes of 8 findings on 880 images: ``Image Index``, ``Finding Label``, then x, y, w, h
    under one header name ``Bbox [x,y,w,h]`` spanning four cells (and three empty header
    cells after it). It spells Infiltration ``Infiltrate``.

Images are in ``images/`` (the NIH archives) or ``images_001/images/`` ... ``images_012/images/``
(the Kaggle copy); some are stored as RGBA, which the decoder turns to grey like any PNG.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from chexviz._internal.checks import Crop
from chexviz.data.boxes import BOX_COLUMNS
from chexviz.data.dataset import ChestXrayDataset
from chexviz.data.images import read_image_size
from chexviz.data.label_mapping import NIH_LABELS, NIH_TO_CHEXPERT, map_nih_targets, nih_sources
from chexviz.data.labels import MissingColumnsError
from chexviz.data.tables import read_text

__all__ = [
    "NIH_ENTRY_FILES",
    "NIH_SPLITS",
    "NIHChestXray14Dataset",
    "read_nih_boxes",
    "read_nih_table",
]

logger = logging.getLogger(__name__)

NIH_ENTRY_FILES: tuple[str, ...] = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
"""Label tables looked for in the data folder, newest first."""

NIH_SPLITS: dict[str, str] = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
"""The official split names and their image lists."""

NO_FINDING = "No Finding"
_BOX_ALIASES = {"Infiltrate": "Infiltration"}
_VIEWS = ("PA", "AP")
_ENTRY_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")
_BOX_COLUMNS = ("Image Index", "Finding Label", "Bbox[x]", "Bbox[y]", "Bbox[w]", "Bbox[h]")
# NIH drew the boxes of BBox_List_2017.csv on the released PNGs, 1024x1024.
_BOX_FRAME = (1024, 1024)
_IMAGE_FOLDERS = re.compile(r"^images_\d+$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CHEXPERT_OF = {source: link.target for link in NIH_TO_CHEXPERT for source in link.sources}


def read_nih_table(path: str | os.PathLike[str], required: Sequence[str]) -> pd.DataFrame:
    """Reads an NIH table, whose header names may span several cells, as text columns.

    A header name with a bracketed list (``OriginalImage[Width,Height]``, ``Bbox [x,y,w,h]``),
    split over cells by its unquoted commas or kept whole in quotes, becomes one column per
    item (``OriginalImage[Width]``, ``OriginalImage[Height]``; ``Bbox[x]`` ... ``Bbox[h]``).
    Empty header cells at the end are dropped, and so are empty cells at the end of a row; any
    other difference between a row's cells and the header is an error.

    Args:
        path: ``Data_Entry_2017*.csv`` or ``BBox_List_2017.csv`` (``.gz`` too).
        required: Column names (after expansion) that must be present.

    Returns:
        All cells as strings (empty cells as ``""``). The index is the file line minus 2, so
        row ``i`` is on line ``i + 2`` also when blank lines were skipped.

    Raises:
        FileNotFoundError: The file does not exist.
        MissingColumnsError: Required columns are missing.
        ValueError: The file is empty, not UTF-8, a header span is unterminated, or a row has
            fewer or more cells than the header, or repeats it (the message names the line).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(2, "CSV file not found", str(file))
    reader = csv.reader(io.StringIO(read_text(file), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{file} is empty")
        names = _expand_header(header, file)
        missing = [name for name in required if name not in names]
        if missing:
            if len(header) == 1 and any(mark in header[0] for mark in (";", "\t", "|")):
                raise ValueError(f"{file}: columns are not separated by commas")
            raise MissingColumnsError(missing, where=str(file))
        width = len(names)
        rows: list[list[str]] = []
        lines: list[int] = []
        for cells in reader:
            if not cells:
                continue
            line = reader.line_num
            if len(cells) < width:
                raise ValueError(
                    f"{file} line {line}: {len(cells)} cells but the header has {width} "
                    "(truncated or damaged row)"
                )
            if any(cell.strip() for cell in cells[width:]):
                raise ValueError(
                    f"{file} line {line}: {len(cells)} cells but the header has {width}"
                )
            if cells[0] == names[0]:
                raise ValueError(
                    f"{file} line {line}: the header row appears again (CSV files joined together?)"
                )
            rows.append(cells[:width])
            lines.append(line - 2)
    except csv.Error as error:
        raise ValueError(f"{file} line {reader.line_num}: not well-formed CSV ({error})") from None
    if not rows:
        raise ValueError(f"{file} has a header but no rows")
    table: pd.DataFrame = pd.DataFrame(rows, columns=names, index=pd.Index(lines), dtype=str)
    return table


def _expand_header(cells: list[str], path: Path) -> list[str]:
    while cells and not cells[-1].strip():
        cells = cells[:-1]
    names: list[str] = []
    span: list[str] | None = None
    base = ""
    for position, raw in enumerate(cells):
        cell = raw.strip()
        if span is None and "[" in cell:
            base, _, rest = cell.partition("[")
            base, span = base.strip(), []
            cell = rest
        if span is None:
            names.append(cell or f"Unnamed: {position}")
            continue
        items = cell.split(",")
        if "]" in items[-1]:
            last, _, after = items[-1].partition("]")
            if after.strip():
                raise ValueError(f"{path} header: text after ']' in {raw!r}")
            span.extend([*items[:-1], last])
            names.extend(f"{base}[{item.strip()}]" for item in span)
            span = None
        else:
            span.extend(items)
    if span is not None:
        raise ValueError(f"{path} header: '[' of {base!r} is never closed")
    return names


class NIHChestXray14Dataset(ChestXrayDataset):
    """NIH ChestX-ray14 images and targets, in NIH's labels or mapped to CheXpert's.

    Every kept row of ``Data_Entry_2017*.csv`` is one item ``(image, target)``, as in
    [`CheXpertDataset`][chexviz.data.dataset.CheXpertDataset]. ``labels`` may name NIH's
    findings (`NIH_LABELS`, the default) or CheXpert observations, mapped by
    [`chexviz.data.label_mapping`][chexviz.data.label_mapping]: ``"Pleural Effusion"`` reads
    NIH's Effusion, ``"Lung Lesion"`` is Mass or Nodule, and an observation NIH does not
    annotate (``"Fracture"``) is NaN for every image and listed in ``unannotated``. NIH labels
    have no uncertain or blank cells, so there is no uncertainty policy.

    Patients are ``Patient ID`` (``"00000001"``, zero-padded like the image names), for
    [`split_by_patient`][chexviz.data.splits.split_by_patient]; ``split="test"`` reads the
    official patient-wise test list instead.

    Attributes:
        frame: The kept rows of the label table (index: line - 2), with ``Path`` (the image
            name, as the box file names it), the label columns (``1``, ``0``, or NaN where not
            annotated) and ``patient_id``.
        unannotated: Requested labels NIH does not annotate (their targets are NaN).
        label_sources: Per requested label, the NIH finding(s) it is read from
            (``"Effusion"``, ``"Mass | Nodule (union)"``; ``""`` where not annotated).
        split: The official split read, or ``None`` for all rows.
        csv_path: The label table read.
        image_root: The data folder.
    """

    _LAYOUT_HINT: ClassVar[str] = (
        "point root at the folder holding Data_Entry_2017.csv and images/ (or images_001/images/"
        " ... images_012/images/)"
    )

    def __init__(
        self,
        root: str | os.PathLike[str],
        csv: str | os.PathLike[str] | None = None,
        *,
        split: Literal["train_val", "test"] | None = None,
        image_size: int = 128,
        in_channels: int = 1,
        crop: Crop = "whole",
        views: Sequence[str] | None = _VIEWS,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        labels: Sequence[str] = NIH_LABELS,
        on_error: Literal["raise", "skip"] = "raise",
        progress: bool = True,
        workers: int | None = None,
    ) -> None:
        """Reads and validates the NIH label table.

        Args:
            root: The data folder, holding the label table, the split lists and the images.
            csv: ``None`` for ``Data_Entry_2017_v2020.csv`` (else ``Data_Entry_2017.csv``); a
                file name looked up in ``root``; or a path.
            split: ``"train_val"`` or ``"test"`` for the official split, ``None`` for all.
            image_size: Side ``S`` of the square images.
            in_channels: 1, or 3 to replicate the grey image.
            crop: ``"whole"`` (default) resizes each image whole;
                ``"center"`` takes each image's centred square first (torchxrayvision's
                crop; see [`load_image`][chexviz.data.images.load_image]).
            views: ``View Position`` values to keep (``("PA",)`` for PA only); ``None`` keeps
                all. NIH has only ``PA`` and ``AP``; anything else is an error.
            transform: Applied to each image tensor (boxes do not follow it).
            cache_dir: Folder for the preprocessed image cache; ``None`` decodes lazily.
            labels: NIH labels and / or CheXpert observations, in target order.
            on_error: ``"raise"`` or ``"skip"`` unreadable images (counted in ``skipped``).
            progress: Show progress bars (on a terminal only).
            workers: Threads for checking and caching images.

        Raises:
            FileNotFoundError: ``root``, the table, a split list or (with ``on_error="raise"``)
                an image does not exist.
            MissingColumnsError: The table lacks a needed column.
            ValueError: An unknown label, finding, view, or split; a bad patient id; an image
                name that is not a plain file name (names the line and column); an image in
                two image folders; no rows left.
        """
        super().__init__(
            image_size=image_size,
            in_channels=in_channels,
            crop=crop,
            transform=transform,
            labels=labels,
            on_error=on_error,
            progress=progress,
            workers=workers,
        )
        folder = Path(root).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(2, "data root folder not found", str(folder))
        self.image_root = folder.resolve()
        self.csv_path = _locate_table(self.image_root, csv)
        self.split = split
        rows = read_nih_table(self.csv_path, _ENTRY_COLUMNS)
        names = rows["Image Index"].str.strip()
        self._check_names(names)
        rows["Path"] = names
        rows = self._filter_views(rows, views)
        if split is not None:
            rows = self._filter_split(rows, split)
        findings = self._findings(rows)
        raw, self.unannotated = map_nih_targets(findings, self.labels)
        self.label_sources = {label: _describe(nih_sources(label)) for label in self.labels}
        if self.unannotated:
            logger.info("NIH ChestX-ray14 does not annotate %s: NaN targets", self.unannotated)
        self.patient_ids = self._patients(rows)
        self.paths = self._locate_images(rows["Path"].tolist())
        self._finish(rows, raw, cache_dir)

    def _targets(self, raw: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        # NIH cells are never uncertain nor blank; NaN means "not annotated" and stays ignored.
        targets: npt.NDArray[np.float32] = raw.copy()
        return targets

    def _check_names(self, names: pd.Series) -> None:
        for row, name in names.items():
            if not _SAFE_NAME.match(name) or ".." in name:
                raise ValueError(
                    f"{self._where(row)}, column 'Image Index': {name!r} is not a plain image "
                    "file name (paths are refused so that no file outside the data folder is read)"
                )

    def _filter_views(self, rows: pd.DataFrame, views: Sequence[str] | None) -> pd.DataFrame:
        position = rows["View Position"].str.strip()
        unknown = ~position.isin(_VIEWS)
        if unknown.any():
            row = rows.index[int(np.argmax(unknown.to_numpy()))]
            raise ValueError(
                f"{self._where(row)}, column 'View Position': {rows.at[row, 'View Position']!r} "
                f"is not one of {list(_VIEWS)}"
            )
        if views is None:
            return rows
        wanted = [views] if isinstance(views, str) else list(views)
        bad = [view for view in wanted if view not in _VIEWS]
        if bad:
            raise ValueError(f"views {bad} are not NIH view positions {list(_VIEWS)}")
        keep = position.isin(wanted).to_numpy()
        if not keep.any():
            raise ValueError(f"{self.csv_path}: no image with a view in {wanted}")
        logger.info("views %s: kept %d of %d rows", wanted, int(keep.sum()), len(rows))
        kept: pd.DataFrame = rows[keep]
        return kept

    def _filter_split(self, rows: pd.DataFrame, split: str) -> pd.DataFrame:
        if split not in NIH_SPLITS:
            raise ValueError(f"split must be one of {list(NIH_SPLITS)} or None, got {split!r}")
        listing = self.image_root / NIH_SPLITS[split]
        if not listing.is_file():
            raise FileNotFoundError(2, f"split list for {split!r} not found", str(listing))
        known = set(rows["Path"])
        wanted = {line.strip() for line in read_text(listing).splitlines() if line.strip()}
        keep = rows["Path"].isin(wanted).to_numpy()
        if not keep.any():
            raise ValueError(f"{listing}: none of its images is a kept row of {self.csv_path}")
        absent = len(wanted - known)
        if absent:
            # Images listed but filtered out (by views) or not in this version of the table.
            logger.info("%s: %d listed images are not among the kept rows", listing, absent)
        kept: pd.DataFrame = rows[keep]
        return kept

    def _findings(self, rows: pd.DataFrame) -> npt.NDArray[np.float32]:
        out = np.zeros((len(rows), len(NIH_LABELS)), dtype=np.float32)
        column = {name: j for j, name in enumerate(NIH_LABELS)}
        # Each distinct cell is parsed once: the release has under a thousand combinations.
        for cell, positions in rows.groupby("Finding Labels", sort=False).indices.items():
            parts = [part.strip() for part in str(cell).split("|")]
            if parts == [NO_FINDING]:
                continue
            unknown = [part for part in parts if part not in column]
            if unknown:
                row = rows.index[positions[0]]
                hint = " ('No Finding' stands alone)" if NO_FINDING in unknown else ""
                raise ValueError(
                    f"{self._where(row)}, column 'Finding Labels': unknown finding "
                    f"{unknown[0]!r} in {cell!r}{hint}; NIH findings are {list(NIH_LABELS)} "
                    f"or {NO_FINDING!r}"
                )
            rows_at = np.asarray(positions, dtype=np.int64)
            columns_at = np.asarray([column[part] for part in parts], dtype=np.int64)
            out[np.ix_(rows_at, columns_at)] = 1.0
        return out

    def _patients(self, rows: pd.DataFrame) -> list[str]:
        ids = rows["Patient ID"].str.strip()
        bad = ~ids.str.fullmatch(r"\d{1,8}").fillna(False).to_numpy(dtype=bool)
        if bad.any():
            row = rows.index[int(np.argmax(bad))]
            raise ValueError(
                f"{self._where(row)}, column 'Patient ID': {rows.at[row, 'Patient ID']!r} is "
                "not a patient number"
            )
        return [f"{int(value):08d}" for value in ids]

    def _locate_images(self, names: list[str]) -> list[Path]:
        found = _image_files(self.image_root, names)
        # A missing image points at the first folder, where the error message shows it.
        return [found.get(name, self.image_root / "images" / name) for name in names]


def _image_files(root: Path, names: Iterable[str]) -> dict[str, Path]:
    """Where each named image is, in ``images/`` or ``images_NNN/images/``; absent if nowhere.

    Raises:
        ValueError: An image is in two folders.
    """
    folders = [root / "images"]
    folders += sorted(
        entry / "images"
        for entry in root.iterdir()
        if entry.is_dir() and _IMAGE_FOLDERS.match(entry.name)
    )
    wanted = set(names)
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name not in wanted:
                    continue
                if entry.name in found:
                    raise ValueError(
                        f"image {entry.name} is in two folders, {found[entry.name].parent} "
                        f"and {folder}; keep one copy"
                    )
                found[entry.name] = folder / entry.name
    return found


def _describe(sources: tuple[str, ...] | None) -> str:
    if not sources:
        return ""
    return " | ".join(sources) + (" (union)" if len(sources) > 1 else "")


def _locate_table(root: Path, csv: str | os.PathLike[str] | None) -> Path:
    if csv is not None:
        name = Path(csv).expanduser()
        path = name if name.is_absolute() else root / name
        if not path.is_file():
            raise FileNotFoundError(2, "NIH label table not found", str(path))
        return path
    for table in NIH_ENTRY_FILES:
        for candidate in (root / table, root / f"{table}.gz"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        2, f"no NIH label table ({' or '.join(NIH_ENTRY_FILES)}) in the data folder", str(root)
    )


def read_nih_boxes(
    path: str | os.PathLike[str],
    *,
    drawn_on: tuple[int, int] = _BOX_FRAME,
    root: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Reads every box of ``BBox_List_2017.csv``, with its NIH finding and CheXpert label.

    Each box keeps its NIH finding in ``nih_label`` (``Infiltrate`` is spelled
    ``Infiltration``, as in the label table) and gets in ``label`` the CheXpert observation
    that finding carries (Effusion is Pleural Effusion, Mass and Nodule are Lung Lesion; see
    [`chexviz.data.label_mapping`][chexviz.data.label_mapping]), or ``""`` where none maps
    (Infiltrate: 123 of the release's 984 boxes). Scoring
    ([`score_localization`][chexviz.evaluate.localization.score_localization]) leaves out the
    boxes whose label the model does not output and says how many.

    NIH drew the boxes on the released 1024x1024 PNGs (``drawn_on``); a box that reaches
    outside that frame is an error. With ``root``, each box is scaled from that frame to its
    image's own size, read from the file's header, so that a downsampled copy of the release
    (256-pixel PNGs, say) gets its boxes in its own pixels.

    Args:
        path: The box table.
        drawn_on: ``(width, height)`` of the images the boxes were drawn on: the release's
            PNGs, 1024x1024, also for a downsampled copy of them.
        root: The NIH data folder (``images/`` or ``images_001/images/`` ...); ``None``
            leaves the boxes in the ``drawn_on`` frame. Boxes of an image that is not there
            stay in that frame too (logged).

    Returns:
        A frame with the columns of [`BOX_COLUMNS`][chexviz.data.boxes.BOX_COLUMNS] (``Path`` is
        the image name, coordinates are float pixel edges ``x0 = x``, ``x1 = x + w``,
        ``width`` and ``height`` the size of the frame they are in) plus ``nih_label``, one
        row per line of the file, in its order (the index is the line minus 2).

    Raises:
        FileNotFoundError: The file or ``root`` does not exist.
        MissingColumnsError: A column is missing.
        ValueError: An unknown finding, an image name that is not a plain file name, a
            coordinate that is not a finite number, an empty box or one outside the
            ``drawn_on`` frame (the message names the file, line and column), an image
            whose file cannot be read, or a ``drawn_on`` that is not two positive integers.
    """
    file = Path(path)
    if (
        not isinstance(drawn_on, tuple | list)
        or len(drawn_on) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in drawn_on)
    ):
        raise ValueError(
            f"drawn_on must be (width, height), two positive integers, got {drawn_on!r}"
        )
    width, height = int(drawn_on[0]), int(drawn_on[1])
    rows = read_nih_table(file, _BOX_COLUMNS)

    def where(row: int, column: str) -> str:
        return f"{file} line {row + 2}, column {column!r}"

    out = pd.DataFrame(index=rows.index)
    out["Path"] = rows["Image Index"].str.strip()
    for row, name in out["Path"].items():
        if not _SAFE_NAME.match(name) or ".." in name:
            raise ValueError(f"{where(row, 'Image Index')}: {name!r} is not an image file name")
    findings = rows["Finding Label"].str.strip().replace(_BOX_ALIASES)
    unknown = ~findings.isin(NIH_LABELS)
    if unknown.any():
        row = rows.index[int(np.argmax(unknown.to_numpy()))]
        raise ValueError(
            f"{where(row, 'Finding Label')}: {rows.at[row, 'Finding Label']!r} is not an NIH "
            "finding"
        )
    out["label"] = findings.map(_CHEXPERT_OF).fillna("").astype(str)
    out["nih_label"] = findings
    values = {}
    for name, column in zip(("x", "y", "w", "h"), _BOX_COLUMNS[2:], strict=True):
        numbers = pd.to_numeric(rows[column].str.strip(), errors="coerce")
        bad = ~np.isfinite(numbers.to_numpy(dtype=np.float64, na_value=np.nan))
        if bad.any():
            row = rows.index[int(np.argmax(bad))]
            raise ValueError(
                f"{where(row, column)}: expected a number, got {rows.at[row, column]!r}"
            )
        values[name] = numbers.astype(np.float64)
    out["x0"], out["y0"] = values["x"], values["y"]
    out["x1"], out["y1"] = values["x"] + values["w"], values["y"] + values["h"]
    out["width"], out["height"] = width, height
    frame = f"the {width}x{height} images the boxes are drawn on"
    checks = (
        ("Bbox[w]", values["w"] > 0, "the box is empty (w must be positive)"),
        ("Bbox[h]", values["h"] > 0, "the box is empty (h must be positive)"),
        ("Bbox[x]", values["x"] >= 0, "x must be at least 0"),
        ("Bbox[y]", values["y"] >= 0, "y must be at least 0"),
        ("Bbox[w]", out["x1"] <= width, f"x + w reaches outside {frame} (x + w > {width})"),
        ("Bbox[h]", out["y1"] <= height, f"y + h reaches outside {frame} (y + h > {height})"),
    )
    for column, ok, message in checks:
        if not ok.all():
            row = rows.index[int(np.argmax(~ok.to_numpy()))]
            raise ValueError(f"{where(row, column)}: {message}")
    unmapped = out["label"] == ""
    if unmapped.any():
        logger.info(
            "%s: %d of %d boxes are of findings with no CheXpert counterpart %s (label '')",
            file,
            int(unmapped.sum()),
            len(out),
            out.loc[unmapped, "nih_label"].value_counts().to_dict(),
        )
    if root is not None:
        _to_image_pixels(out, Path(root).expanduser(), file)
    boxes: pd.DataFrame = out[[*BOX_COLUMNS, "nih_label"]]
    return boxes


def _to_image_pixels(boxes: pd.DataFrame, root: Path, file: Path) -> None:
    """Scales boxes in place from their frame to their image files' sizes."""
    if not root.is_dir():
        raise FileNotFoundError(2, "NIH data folder not found", str(root))
    names = list(dict.fromkeys(boxes["Path"]))
    found = _image_files(root, names)
    missing = [name for name in names if name not in found]
    if missing:
        logger.info(
            "%s: %d of %d boxed images are not in %s (first %s); their boxes stay in the "
            "frame they are drawn on",
            file,
            len(missing),
            len(names),
            root,
            missing[0],
        )
    for name, image in found.items():
        try:
            width, height = read_image_size(image)
        except (OSError, ValueError) as error:
            raise ValueError(f"{image}: cannot read the image size ({error})") from None
        rows = boxes["Path"] == name
        sx = width / boxes.loc[rows, "width"].astype(np.float64)
        sy = height / boxes.loc[rows, "height"].astype(np.float64)
        for column, factor in (("x0", sx), ("x1", sx), ("y0", sy), ("y1", sy)):
            boxes.loc[rows, column] = boxes.loc[rows, column] * factor
        boxes.loc[rows, "width"] = width
        boxes.loc[rows, "height"] = height
    sizes = boxes[["width", "height"]].drop_duplicates()
    logger.info(
        "%s: boxes in image pixels, sizes %s",
        file,
        [f"{w}x{h}" for w, h in sizes.itertuples(index=False)][:5],
    )
