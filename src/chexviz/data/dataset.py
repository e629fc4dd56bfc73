"""The CheXpert data set as a PyTorch ``Dataset``.

[`CheXpertDataset`][chexviz.data.dataset.CheXpertDataset] reads the release's ``train.csv`` or
``valid.csv`` exactly as published (or any CSV in the same format), turns label cells into
targets with an uncertainty policy, and yields ``(image, target)`` pairs: a float image
``[in_channels, S, S]`` in ``[0, 1]`` and a float target ``[L]`` with NaN for ignored entries.

[`ChestXrayDataset`][chexviz.data.dataset.ChestXrayDataset] holds what every chexviz data set
shares (label policies, lazy or cached decoding, ``on_error``, transforms); the readers of other
releases ([`MIMICCXRDataset`][chexviz.data.mimic.MIMICCXRDataset],
[`NIHChestXray14Dataset`][chexviz.data.nih.NIHChestXray14Dataset]) build on it.

Images are decoded lazily on every access, or once into a memory-mapped cache with
``cache_dir=`` (see [`chexviz.data.cache`][chexviz.data.cache]).
"""

from __future__ import annotations

import logging
import operator
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from chexviz._internal.checks import Crop, check_crop, check_in_channels
from chexviz.data.cache import (
    LOAD_ERRORS,
    ImageCache,
    cache_key,
    default_workers,
    open_or_build_cache,
)
from chexviz.data.images import ImageDecodeError, load_image, read_image_size, to_tensor
from chexviz.data.labels import (
    CHEXPERT_LABELS,
    BlankPolicy,
    LabelValueError,
    UncertaintyPolicy,
    apply_policy,
    parse_labels,
    resolve_policy,
)
from chexviz.data.tables import read_table

__all__ = ["RELEASE_FOLDERS", "ChestXrayDataset", "CheXpertDataset"]

logger = logging.getLogger(__name__)

RELEASE_FOLDERS: tuple[str, ...] = ("CheXpert-v1.0-small", "CheXpert-v1.0")
"""Folder names of the downsampled and the full-resolution release; CSV paths start with one."""

_VIEW_COLUMN = "Frontal/Lateral"
_PATIENT = re.compile(r"(?:^|/)(patient[^/]+)/")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")
_PROBE_CHUNK = 256


class ChestXrayDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """What every chexviz data set shares: targets, decoding, the cache and bad-image handling.

    The readers of the releases ([`CheXpertDataset`][chexviz.data.dataset.CheXpertDataset],
    [`MIMICCXRDataset`][chexviz.data.mimic.MIMICCXRDataset],
    [`NIHChestXray14Dataset`][chexviz.data.nih.NIHChestXray14Dataset]) derive from it, so their
    items, label policies, cache, ``on_error`` handling and error messages are the same. It is
    not built directly: a subclass reads its release's tables, sets ``csv_path``,
    ``image_root``, ``paths`` and ``patient_ids``, and hands the kept rows and their raw label
    cells to ``_finish``.

    Every item is ``(image, target)``: ``image`` is float32 ``[in_channels, image_size,
    image_size]`` in ``[0, 1]`` (the whole radiograph, or its centred square, resized;
    normalisation is left to the model) and ``target`` float32 ``[len(labels)]`` in
    ``{0, 1}`` with NaN for ignored entries.

    Attributes:
        frame: The kept rows (index: the row's 0-based position in ``csv_path``, so its line
            is ``index + 2``), label columns as floats ``1, 0, -1`` or NaN, plus
            ``patient_id``.
        labels: The target labels, in target order.
        patient_ids: Patient id of each item.
        paths: Absolute image file of each item.
        targets: float32 ``[N, L]`` targets after the policies.
        image_size: Side ``S`` of the images.
        in_channels: 1, or 3 for the grey image replicated in three channels.
        crop: ``"whole"``, or ``"center"`` for each image's centred square.
        uncertainty: The policy of each label, in target order.
        blank: The blank policy.
        csv_path: The table whose lines error messages name.
        image_root: The folder images are read from; nothing outside it is ever opened.
        transform: Callable applied to each image tensor after decoding, or ``None``.
        cache: The image cache in use, or ``None`` when images are read lazily.
        skipped: Rows skipped because their image could not be read (only with
            ``on_error="skip"``): their columns plus ``error``.
    """

    _LAYOUT_HINT: ClassVar[str] = "point root at the folder of the data set"
    """Completes the error raised when no image file exists at all."""

    csv_path: Path
    image_root: Path
    paths: list[Path]
    patient_ids: list[str]

    def __init__(
        self,
        *,
        image_size: int = 128,
        in_channels: int = 1,
        crop: Crop = "whole",
        uncertainty: UncertaintyPolicy = "zeros",
        blank: BlankPolicy = "zeros",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        labels: Sequence[str] = CHEXPERT_LABELS,
        on_error: Literal["raise", "skip"] = "raise",
        progress: bool = True,
        workers: int | None = None,
    ) -> None:
        """Checks and stores the options shared by every data set.

        Args:
            image_size: Side ``S`` of the square images.
            in_channels: 1, or 3 to replicate the grey image.
            crop: ``"whole"`` (default) resizes each image whole;
                ``"center"`` takes each image's centred square first (torchxrayvision's
                crop; see [`load_image`][chexviz.data.images.load_image]).
            uncertainty: What uncertain (``-1.0``) cells become (see
                [`UncertaintyPolicy`][chexviz.data.labels.UncertaintyPolicy]).
            blank: What blank cells become: ``"zeros"`` or ``"ignore"``.
            transform: Applied to each image tensor after decoding.
            labels: The target labels, in target order.
            on_error: ``"raise"`` or ``"skip"`` unreadable images.
            progress: Show progress bars (on a terminal only).
            workers: Threads for checking and caching images; ``None`` picks
                [`default_workers()`][chexviz.data.cache.default_workers].

        Raises:
            ValueError: An option is invalid (names it).
            TypeError: ``labels`` is a string.
        """
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        check_in_channels(in_channels)
        self.crop: Crop = check_crop(crop)
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if workers is not None and (isinstance(workers, bool) or workers < 1):
            raise ValueError(f"workers must be a positive int or None, got {workers!r}")
        self.labels: tuple[str, ...] = _check_labels(labels)
        self.uncertainty = resolve_policy(uncertainty, self.labels)
        # apply_policy validates blank too, but only after the CSV has been read.
        if blank not in ("zeros", "ignore"):
            raise ValueError(f"blank must be 'zeros' or 'ignore', got {blank!r}")
        self.blank: BlankPolicy = blank
        self.image_size = image_size
        self.in_channels = in_channels
        self.transform = transform
        self._on_error = on_error
        self._progress = progress
        self._workers = default_workers() if workers is None else workers

    def _parse(self, rows: pd.DataFrame, source: Path | None = None) -> npt.NDArray[np.float32]:
        """Raw label cells of ``rows``; errors name the line of ``source`` (or ``csv_path``)."""
        try:
            return parse_labels(rows, self.labels)
        except LabelValueError as error:
            raise LabelValueError(
                error.row, error.column, error.value, where=self._where(error.row, source)
            ) from None

    def _targets(self, raw: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Targets from raw cells under the data set's policies."""
        return apply_policy(
            raw,
            self.labels,
            uncertainty=dict(zip(self.labels, self.uncertainty, strict=True)),
            blank=self.blank,
        )

    def _finish(
        self,
        rows: pd.DataFrame,
        raw: npt.NDArray[np.float32],
        cache_dir: str | os.PathLike[str] | None,
    ) -> None:
        """Builds targets and frame, then checks or caches the images of the kept ``rows``."""
        self.targets: npt.NDArray[np.float32] = self._targets(raw)
        self.frame: pd.DataFrame = rows.copy()
        for j, name in enumerate(self.labels):
            self.frame[name] = raw[:, j]
        self.frame["patient_id"] = self.patient_ids

        self.cache: ImageCache | None = None
        self._images: np.memmap[Any, np.dtype[np.uint8]] | None = None
        self._slots: npt.NDArray[np.int64] = np.arange(len(self.paths), dtype=np.int64)
        if cache_dir is not None:
            failures = self._build_cache(Path(cache_dir).expanduser(), rows)
        else:
            failures = self._check_files()
        self.skipped: pd.DataFrame = self._drop(failures, rows)
        logger.info(
            "%s: %d items, %d labels, %dx%d, %s",
            self.csv_path,
            len(self),
            len(self.labels),
            self.image_size,
            self.image_size,
            "cached" if self.cache is not None else "lazy decoding",
        )

    @property
    def raw_labels(self) -> npt.NDArray[np.float32]:
        """The label cells as read, before any policy: ``[N, L]`` in ``{1, 0, -1}``, NaN blank.

        Evaluation builds its answer key from these, so that it does not depend on the
        training policy (see [`evaluation_targets`][chexviz.training.metrics.evaluation_targets]).
        """
        cells: npt.NDArray[np.float32] = self.frame[list(self.labels)].to_numpy(dtype=np.float32)
        return cells

    @property
    def num_skipped(self) -> int:
        """Number of rows skipped because their image could not be read."""
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns item ``index`` as ``(image [C, S, S], target [L])``.

        Args:
            index: Item position (negative values count from the end).

        Returns:
            The image (float32 in ``[0, 1]``, after ``transform``) and the target (float32,
            NaN for ignored entries).

        Raises:
            IndexError: ``index`` is out of range.
            FileNotFoundError: The image file vanished (lazy reading).
            ImageDecodeError: The image cannot be decoded (lazy reading).
        """
        position = operator.index(index)
        if not -len(self) <= position < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        position %= len(self)
        if self.cache is not None:
            pixels = self._memmap()[self._slots[position]]
        else:
            pixels = self._load(self.paths[position], self.frame.index[position])
        image = to_tensor(pixels, self.in_channels)
        if self.transform is not None:
            image = self.transform(image)
        return image, torch.from_numpy(self.targets[position].copy())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} items from {str(self.csv_path)!r}, "
            f"image_size={self.image_size}, in_channels={self.in_channels}, "
            f"{'' if self.crop == 'whole' else f'crop={self.crop!r}, '}"
            f"{'cached' if self.cache is not None else 'lazy'})"
        )

    def __getstate__(self) -> dict[str, Any]:
        # A pickled memmap would copy the whole cache into every DataLoader worker.
        state = self.__dict__.copy()
        state["_images"] = None
        return state

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.__dict__.update(state)

    def _memmap(self) -> np.memmap[Any, np.dtype[np.uint8]]:
        if self._images is None:
            assert self.cache is not None
            self._images = self.cache.open()
        return self._images

    def _where(self, row: object, source: Path | None = None) -> str:
        line = f"line {row + 2}" if isinstance(row, (int, np.integer)) else f"row {row!r}"
        return f"{source or self.csv_path} {line}"

    def _check_inside(self, path: Path, row: object) -> None:
        # Paths were checked lexically; a symbolic link inside the data folder could still lead
        # anywhere, so the real target is checked before any of its bytes is read.
        real = os.path.realpath(path)
        root = str(self.image_root)
        if not real.startswith(os.path.join(root, "")):
            raise ValueError(
                f"{self._where(row)}: image {str(path)!r} is a symbolic link to {real!r}, "
                f"outside the data folder {root!r}; chexviz only reads images inside it"
            )

    def _load(self, path: Path, row: object) -> npt.NDArray[np.uint8]:
        self._check_inside(path, row)
        try:
            return load_image(path, size=self.image_size, crop=self.crop)
        except FileNotFoundError:
            raise FileNotFoundError(
                2, f"image file not found ({self._where(row)})", str(path)
            ) from None
        except ImageDecodeError as error:
            raise ImageDecodeError(path, f"{error.reason} ({self._where(row)})") from error

    def _build_cache(self, cache_dir: Path, rows: pd.DataFrame) -> dict[int, str]:
        row_labels = rows.index
        self.cache = open_or_build_cache(
            cache_dir,
            cache_key(
                rows,
                image_size=self.image_size,
                image_root=self.image_root,
                csv_path=self.csv_path,
                crop=self.crop,
            ),
            len(self.paths),
            self.image_size,
            lambda slot: self._load(self.paths[slot], row_labels[slot]),
            on_error=self._on_error,
            workers=self._workers,
            progress=self._progress,
            description=str(self.csv_path),
        )
        failures = self.cache.failures
        if failures and self._on_error == "raise":
            slot = min(failures)
            raise ImageDecodeError(
                self.paths[slot],
                f"recorded as unreadable when the cache {self.cache.path} was built "
                f"({failures[slot]}); use on_error='skip', or fix the file and delete the cache",
            )
        return failures

    def _check_files(self) -> dict[int, str]:
        if self._on_error == "raise":
            # os.path.isfile, unlike Path.is_file, answers False for names the OS refuses
            # (too long, NUL byte) instead of raising an error that names no CSV line.
            missing = [slot for slot, path in enumerate(self.paths) if not os.path.isfile(path)]
            if missing:
                raise self._missing_error(missing)
            return {}

        # Without a cache, only the header of each image can be checked up front cheaply.
        def probe(start: int) -> dict[int, str]:
            errors = {}
            for slot in range(start, min(start + _PROBE_CHUNK, len(self.paths))):
                self._check_inside(self.paths[slot], self.frame.index[slot])
                try:
                    read_image_size(self.paths[slot])
                except LOAD_ERRORS as error:
                    errors[slot] = f"{error} ({self._where(self.frame.index[slot])})"
            return errors

        failures: dict[int, str] = {}
        with (
            ThreadPoolExecutor(max_workers=self._workers) as pool,
            tqdm(
                total=len(self.paths),
                unit="img",
                desc="checking",
                disable=None if self._progress else True,
            ) as bar,
        ):
            starts = range(0, len(self.paths), _PROBE_CHUNK)
            for start, errors in zip(starts, pool.map(probe, starts), strict=True):
                failures.update(errors)
                bar.update(min(_PROBE_CHUNK, len(self.paths) - start))
        return failures

    def _missing_error(self, missing: list[int]) -> FileNotFoundError:
        first = missing[0]
        where = self._where(self.frame.index[first])
        if len(missing) == len(self.paths):
            hint = (
                f"none of the {len(missing)} image files exist under {self.image_root}; "
                f"{self._LAYOUT_HINT}; first ({where})"
            )
        else:
            hint = f"{len(missing)} of {len(self.paths)} image files are missing; first ({where})"
        return FileNotFoundError(2, hint, str(self.paths[first]))

    def _drop(self, failures: Mapping[int, str], rows: pd.DataFrame) -> pd.DataFrame:
        skipped: pd.DataFrame = rows.iloc[sorted(failures)].copy()
        skipped["error"] = [failures[slot] for slot in sorted(failures)]
        if not failures:
            return skipped
        if len(failures) == len(self.paths):
            raise ValueError(
                f"{self.csv_path}: none of the {len(self.paths)} images could be read; "
                f"first error: {skipped['error'].iloc[0]}"
            )
        keep = np.ones(len(self.paths), dtype=bool)
        keep[list(failures)] = False
        logger.warning(
            "%s: skipped %d of %d rows whose image could not be read; first: %s",
            self.csv_path,
            len(failures),
            len(self.paths),
            skipped["error"].iloc[0],
        )
        self._slots = self._slots[keep]
        self.frame = self.frame[keep]
        self.targets = self.targets[keep]
        self.paths = [path for path, kept in zip(self.paths, keep, strict=True) if kept]
        self.patient_ids = [
            patient for patient, kept in zip(self.patient_ids, keep, strict=True) if kept
        ]
        return skipped


class CheXpertDataset(ChestXrayDataset):
    """CheXpert images and targets from a release CSV.

    Every kept CSV row is one item ``(image, target)``: ``image`` is float32
    ``[in_channels, image_size, image_size]`` in ``[0, 1]`` (the whole radiograph, or its
    centred square, resized; normalisation is left to the model) and ``target`` is float32
    ``[len(labels)]`` with values in ``{0, 1}`` and NaN where the uncertainty or blank policy
    says "ignore".

    Rows are validated when the data set is built: label cells must be ``1.0``, ``0.0``,
    ``-1.0`` or blank, image paths must stay inside the data folder and name a patient folder,
    and image files must exist. Nothing is dropped silently: bad rows raise an error naming the
    CSV line (or, with ``on_error="skip"``, unreadable images are skipped, logged and listed in
    ``skipped``).

    Attributes:
        frame: The kept rows with their CSV columns (label columns as floats ``1, 0, -1`` or
            NaN for blank) plus ``patient_id``. Its index is the row's position in the CSV
            (0-based, header excluded), so the CSV line number is ``index + 2``.
        labels: The target labels, in target order.
        patient_ids: Patient id of each item (``"patient00001"``), from the image path.
        paths: Absolute image file of each item.
        targets: float32 ``[N, L]`` targets after the policies.
        image_size: Side ``S`` of the images.
        in_channels: 1, or 3 for the grey image replicated in three channels.
        crop: ``"whole"``, or ``"center"`` for each image's centred square.
        uncertainty: The policy of each label, in target order (``"zeros"``, ``"ones"`` or
            ``"ignore"``).
        blank: The blank policy.
        csv_path: The CSV file read.
        image_root: The release folder that CSV paths are resolved against.
        transform: Callable applied to each image tensor after decoding, or ``None``.
        cache: The image cache in use, or ``None`` when images are read lazily.
        skipped: Rows skipped because their image could not be read (only with
            ``on_error="skip"``): their CSV columns plus ``error``.
    """

    _LAYOUT_HINT: ClassVar[str] = (
        "point root at the folder holding train/ and valid/ (CheXpert-v1.0-small) or at its parent"
    )

    def __init__(
        self,
        root: str | os.PathLike[str],
        csv: str | os.PathLike[str] | None = None,
        *,
        image_size: int = 128,
        in_channels: int = 1,
        crop: Crop = "whole",
        uncertainty: UncertaintyPolicy = "zeros",
        blank: BlankPolicy = "zeros",
        frontal_only: bool = True,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        labels: Sequence[str] = CHEXPERT_LABELS,
        on_error: Literal["raise", "skip"] = "raise",
        progress: bool = True,
        workers: int | None = None,
    ) -> None:
        """Reads and validates a CheXpert CSV.

        Args:
            root: The folder that contains ``CheXpert-v1.0-small`` (or ``CheXpert-v1.0``), or
                that release folder itself (also when renamed). CSV paths such as
                ``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`` are
                resolved inside the release folder either way.
            csv: ``None`` for ``train.csv``; a file name such as ``"valid.csv"`` looked up in
                the release folder, then in ``root``; or an absolute path.
            image_size: Side ``S`` of the square images.
            in_channels: 1, or 3 to replicate the grey image (for ImageNet-style backbones).
            crop: ``"whole"`` (default) resizes each image whole;
                ``"center"`` takes each image's centred square first (torchxrayvision's
                crop; see [`load_image`][chexviz.data.images.load_image]).
            uncertainty: What uncertain (``-1.0``) cells become: ``"zeros"`` (U-Zeros),
                ``"ones"`` (U-Ones), ``"ignore"`` (NaN, masked out of the loss), or a mapping
                from label to one of these; labels missing from the mapping use ``"zeros"``.
            blank: What blank cells (observation not mentioned) become: ``"zeros"``
                (negative, as in the CheXpert paper) or ``"ignore"`` (NaN).
            frontal_only: Keep only frontal views (``Frontal/Lateral == "Frontal"``; for a CSV
                without that column, files named ``*_frontal.*``).
            transform: Applied to each image tensor ``[C, S, S]`` (for augmentation).
                Ground-truth boxes are not carried through it, so the localisation scorers
                refuse a dataset that has one.
            cache_dir: Folder for the preprocessed image cache; ``None`` decodes each image
                on every access.
            labels: Label columns to use as targets, in target order.
            on_error: ``"raise"`` (default) stops at the first missing or unreadable image;
                ``"skip"`` drops such rows, logs how many, and lists them in ``skipped``.
            progress: Show progress bars while checking or caching images (only when stderr
                is a terminal).
            workers: Threads for checking and caching images; ``None`` picks
                [`default_workers()`][chexviz.data.cache.default_workers].

        Raises:
            FileNotFoundError: ``root``, the CSV or (with ``on_error="raise"``) an image file
                does not exist.
            MissingColumnsError: The CSV lacks ``Path`` or label columns (lists them all).
            LabelValueError: A label cell is invalid (names the CSV line and column).
            ImageDecodeError: An image cannot be decoded while building the cache (with
                ``on_error="raise"``; names the file and CSV line).
            ValueError: Invalid arguments, a path escaping the data folder or without a
                patient folder (names the CSV line), or no rows left after filtering.
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
        self.csv_path, self.image_root = _locate(Path(root).expanduser(), csv)
        rows = read_table(self.csv_path, ["Path", *self.labels])
        if frontal_only:
            rows = self._frontal(rows)
        self.paths = self._resolve_paths(rows)
        self.patient_ids = self._patients(rows)
        self._finish(rows, self._parse(rows), cache_dir)

    def _frontal(self, rows: pd.DataFrame) -> pd.DataFrame:
        if _VIEW_COLUMN in rows.columns:
            views = rows[_VIEW_COLUMN].astype("string").str.strip()
            invalid = ~views.isin(["Frontal", "Lateral"]).to_numpy(dtype=bool)
            if invalid.any():
                row = rows.index[int(np.argmax(invalid))]
                raise ValueError(
                    f"{self._where(row)}, column {_VIEW_COLUMN!r}: "
                    f"{rows.at[row, _VIEW_COLUMN]!r} is neither 'Frontal' nor 'Lateral'"
                )
            keep = (views == "Frontal").to_numpy(dtype=bool)
        else:
            logger.info("%s has no %r column; frontal views are *_frontal.* files", _VIEW_COLUMN)
            names = rows["Path"].astype("string").str.rsplit("/", n=1).str[-1]
            keep = names.str.contains("_frontal.", regex=False).fillna(False).to_numpy(dtype=bool)
        if not keep.any():
            raise ValueError(
                f"{self.csv_path}: no frontal image among its {len(rows)} rows "
                "(use frontal_only=False to keep lateral views)"
            )
        logger.info("frontal_only: kept %d of %d rows", int(keep.sum()), len(rows))
        kept: pd.DataFrame = rows[keep]
        return kept

    def _resolve_paths(self, rows: pd.DataFrame) -> list[Path]:
        prefixes = {*RELEASE_FOLDERS, self.image_root.name}
        root = str(self.image_root)
        mismatch = ""
        paths = []
        for row, value in zip(rows.index, rows["Path"], strict=True):
            text = value.strip().replace("\\", "/") if isinstance(value, str) else ""
            parts = [part for part in text.split("/") if part not in ("", ".")]
            if not parts:
                raise ValueError(f"{self._where(row)}: empty Path")
            if "\x00" in text:
                raise ValueError(f"{self._where(row)}: Path {value!r} contains a NUL character")
            if text.startswith("/") or _WINDOWS_DRIVE.match(text) or ".." in parts:
                raise ValueError(
                    f"{self._where(row)}: Path {value!r} escapes the data folder; CSV paths "
                    "must be relative, like CheXpert-v1.0-small/train/patient00001/..."
                )
            if parts[0] in prefixes and len(parts) > 1:
                if parts[0] != self.image_root.name and self.image_root.name in RELEASE_FOLDERS:
                    mismatch = parts[0]
                parts = parts[1:]
            # One string join: Path.joinpath(*parts) is the slowest step for 200,000 rows.
            paths.append(Path(root + "/" + "/".join(parts)))
        if mismatch:
            logger.warning(
                "%s names images under %s/ but they are read from %s",
                self.csv_path,
                mismatch,
                self.image_root,
            )
        return paths

    def _patients(self, rows: pd.DataFrame) -> list[str]:
        patients = []
        for row, value in zip(rows.index, rows["Path"], strict=True):
            match = _PATIENT.search(value.replace("\\", "/"))
            if match is None:
                raise ValueError(
                    f"{self._where(row)}: no patient folder (patientNNNNN) in Path {value!r}"
                )
            patients.append(match.group(1))
        return patients


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    if isinstance(labels, str):
        raise TypeError("labels must be a sequence of column names, not a string")
    names = tuple(labels)
    if not names:
        raise ValueError("labels must name at least one column")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"labels are repeated: {duplicates}")
    return names


def _locate(root: Path, csv: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    if not root.is_dir():
        raise FileNotFoundError(2, "data root folder not found", str(root))
    releases = [root / name for name in RELEASE_FOLDERS if (root / name).is_dir()]
    if len(releases) > 1:
        raise ValueError(
            f"{root} holds both {RELEASE_FOLDERS[0]} and {RELEASE_FOLDERS[1]}; "
            "pass the one to use as root"
        )
    image_root = (releases[0] if releases else root).resolve()
    name = Path("train.csv" if csv is None else csv).expanduser()
    if name.is_absolute():
        if not name.is_file():
            raise FileNotFoundError(2, "CSV file not found", str(name))
        return name, image_root
    tried = [image_root / name, root.resolve() / name]
    for candidate in tried:
        if candidate.is_file():
            return candidate, image_root
    raise FileNotFoundError(
        2, f"CSV file {str(name)!r} not found; tried {[str(path) for path in tried]}", str(name)
    )
