"""Synthetic stand-ins for MIMIC-CXR-JPG and NIH ChestX-ray14, with their real layouts.

Both releases need credentials or a long download, so the readers, the command line and the
external-validation example run on generated folders with the same files, columns and quirks:

`make_synthetic_mimic` writes ::

    root/mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, subject_id, study_id, ..., ViewPosition, ...
    root/mimic-cxr-2.0.0-chexpert.csv.gz   subject_id, study_id, 14 observations (alphabetical)
    root/mimic-cxr-2.0.0-negbio.csv.gz     the same columns
    root/mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split
    root/files/p10/p10000032/s50414267/<dicom_id>.jpg   (or .dcm)

with labels per study (the lateral views of a study carry them too), blank ``ViewPosition``
cells, lateral views (``LATERAL``, ``LL``), one study whose images have no label row, and
optionally DICOM files (8- and 12-bit, MONOCHROME1 and 2, windowed, RLE and JPEG 2000).

`make_synthetic_nih` writes ::

    root/Data_Entry_2017_v2020.csv   (or Data_Entry_2017.csv, whose lines end with a comma)
    root/train_val_list.txt, root/test_list.txt
    root/BBox_List_2017.csv          boxes of 8 findings on test images, 'Infiltrate' spelling
    root/images/00000001_000.png     (or images_001/images/... as in the Kaggle copy)

with the spanning ``OriginalImage[Width,Height]`` header, ``|``-separated findings or ``No
Finding``, heavy-tailed follow-up counts (a few patients hold many images) and some RGBA PNGs.

Images are drawn by the CheXpert generator's renderer: a finding with a drawable sign shows it
in its anatomical place (NIH's Effusion as a pleural effusion, Mass and Nodule as a lesion,
Infiltration as an opacity, Pneumonia as a consolidation), and NIH's boxes are the drawn
signs' boxes, in the release's 1024x1024 frame whatever the PNGs' size (the PNGs are a
downsampled copy of the release). Labels are drawn with the real data sets' frequencies:
CheXpert's for MIMIC (the same labeler), the v2020 table's for NIH.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from chexviz.data import _drawing
from chexviz.data.label_mapping import NIH_LABELS
from chexviz.data.labels import CHEXPERT_LABELS
from chexviz.data.mimic import MIMIC_TABLES
from chexviz.data.nih import NIH_SPLITS
from chexviz.data.synthetic import LABEL_FREQUENCIES

__all__ = ["NIH_FREQUENCIES", "make_synthetic_mimic", "make_synthetic_nih"]

logger = logging.getLogger(__name__)

NIH_FREQUENCIES: dict[str, float] = {
    "Atelectasis": 11_559 / 112_120,
    "Cardiomegaly": 2_776 / 112_120,
    "Consolidation": 4_667 / 112_120,
    "Edema": 2_303 / 112_120,
    "Effusion": 13_317 / 112_120,
    "Emphysema": 2_516 / 112_120,
    "Fibrosis": 1_686 / 112_120,
    "Hernia": 227 / 112_120,
    "Infiltration": 19_894 / 112_120,
    "Mass": 5_782 / 112_120,
    "Nodule": 6_331 / 112_120,
    "Pleural_Thickening": 3_385 / 112_120,
    "Pneumonia": 1_431 / 112_120,
    "Pneumothorax": 5_302 / 112_120,
}
"""Share of the 112,120 images of ``Data_Entry_2017_v2020.csv`` positive for each finding."""

_NIH_SIGNS = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Effusion": "Pleural Effusion",
    "Infiltration": "Lung Opacity",
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "Pneumonia": "Consolidation",
    "Pneumothorax": "Pneumothorax",
}
_NIH_BOXED = frozenset(
    {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia"}
    | {"Pneumothorax"}
)
_NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
_BOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
_MIMIC_METADATA = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
_VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral"}
_VIEW_MEANING["LL"] = "left lateral"
_CELLS = ("1.0", "-1.0", "0.0", "")
# RLE and JPEG 2000 are the compressed syntaxes pydicom can write; JPEG Lossless needs a
# decoder only, so the synthetic data covers the others.
_DICOM_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
)


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int of at least {minimum}, got {value!r}")
    return value


def _prepare(root: str | os.PathLike[str]) -> Path:
    folder = Path(root).expanduser()
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(
            2, "refusing to write a synthetic data set into a non-empty folder", str(folder)
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_gz(path: Path, text: str) -> None:
    # mtime=0 keeps the files byte-identical from run to run.
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        handle.write(text.encode("utf-8"))


def _study_cells(rng: np.random.Generator) -> list[str]:
    """One study's 14 CheXpert cells (CheXpert column order) at the release's frequencies."""
    cells = []
    for label in CHEXPERT_LABELS[1:]:
        frequencies = np.asarray(LABEL_FREQUENCIES[label])
        cells.append(_CELLS[int(rng.choice(4, p=frequencies / frequencies.sum()))])
    normal = "1.0" not in cells
    return ["1.0" if normal else "", *cells]


def _hex_id(rng: np.random.Generator) -> str:
    return "-".join(f"{int(part):08x}" for part in rng.integers(0, 2**32, size=5))


def make_synthetic_mimic(
    root: str | os.PathLike[str],
    *,
    patients: int = 40,
    seed: int = 0,
    image_format: Literal["jpg", "dcm"] = "jpg",
    unlabeled_studies: int = 1,
) -> Path:
    """Writes a small data set in MIMIC-CXR-JPG's layout (see the module description).

    Args:
        root: An empty or missing folder to write into.
        patients: Number of patients (each with 1 to 4 studies of 1 to 3 images).
        seed: Seed of every random choice; the same arguments give the same files.
        image_format: ``"jpg"`` as MIMIC-CXR-JPG, or ``"dcm"`` as MIMIC-CXR's DICOM files
            (needs the ``chexviz[dicom]`` extra).
        unlabeled_studies: Studies left out of the label tables, as happens in the release.

    Returns:
        ``root``, to pass to [`MIMICCXRDataset`][chexviz.data.mimic.MIMICCXRDataset].

    Raises:
        ValueError: An argument is out of range.
        FileExistsError: ``root`` exists and is not empty.
    """
    _check_count("patients", patients, 3)
    _check_count("unlabeled_studies", unlabeled_studies, 0)
    if image_format not in ("jpg", "dcm"):
        raise ValueError(f"image_format must be 'jpg' or 'dcm', got {image_format!r}")
    folder = _prepare(root)
    rng = np.random.default_rng([seed, 1])
    subjects = rng.choice(np.arange(10_000_000, 20_000_000), size=patients, replace=False)
    splits = _patient_splits(rng, patients, (("train", 0.7), ("validate", 0.1), ("test", 0.2)))
    metadata: list[list[object]] = []
    split_rows: list[list[object]] = []
    label_rows: list[list[str]] = []
    image_number = 0
    for subject, split in zip(subjects.tolist(), splits, strict=True):
        anatomy = _drawing.sample_anatomy(rng, female=bool(rng.random() < 0.5))
        for _ in range(int(rng.integers(1, 5))):
            study = int(rng.integers(50_000_000, 60_000_000))
            cells = _study_cells(rng)
            positives = {
                label for label, cell in zip(CHEXPERT_LABELS, cells, strict=True) if cell == "1.0"
            }
            signs = _drawing.sample_signs(
                tuple(label for label in _drawing.DRAWN_LABELS if label in positives), anatomy, rng
            )
            label_rows.append([str(subject), str(study), *cells])
            for view in _mimic_views(rng):
                dicom_id = _hex_id(rng)
                width = round(320 * float(rng.uniform(0.9, 1.1)))
                height = round(390 * float(rng.uniform(0.9, 1.1)))
                if view in ("PA", "AP", ""):
                    pixels, _ = _drawing.render_frontal(
                        anatomy, signs, width, height, ap=view == "AP", rng=rng
                    )
                else:
                    pixels = _drawing.render_lateral(anatomy, width, height, rng=rng)
                image = (
                    folder
                    / f"files/p{str(subject)[:2]}/p{subject}/s{study}/{dicom_id}.{image_format}"
                )
                image.parent.mkdir(parents=True, exist_ok=True)
                if image_format == "jpg":
                    Image.fromarray(pixels).save(image, format="JPEG", quality=90)
                else:
                    _save_mimic_dicom(image, pixels, image_number, str(subject), view)
                image_number += 1
                meaning = _VIEW_MEANING.get(view, "")
                metadata.append(
                    [
                        dicom_id,
                        subject,
                        study,
                        "CHEST (PA AND LAT)",
                        view,
                        height,
                        width,
                        21_800_101 + int(rng.integers(0, 2000)),
                        f"{int(rng.integers(0, 235959)):06d}.{int(rng.integers(0, 999)):03d}",
                        "CHEST (PA AND LAT)",
                        meaning,
                        "Erect" if meaning else "",
                    ]
                )
                split_rows.append([dicom_id, study, subject, split])
    # The last studies lose their label rows, so their images have no labels.
    labelled = (
        label_rows[: len(label_rows) - unlabeled_studies] if unlabeled_studies else label_rows
    )
    alphabetical = sorted(CHEXPERT_LABELS)
    order = [CHEXPERT_LABELS.index(label) for label in alphabetical]
    chexpert = [[s, t, *(cells[j] for j in order)] for s, t, *cells in labelled]
    # NegBio disagrees with the CheXpert labeler on some cells; here a few uncertain cells.
    negbio = [
        [s, t, *("0.0" if c == "-1.0" and rng.random() < 0.3 else c for c in rest)]
        for s, t, *rest in chexpert
    ]
    tables = {
        "metadata": _csv_text(_MIMIC_METADATA, metadata),
        "split": _csv_text(("dicom_id", "study_id", "subject_id", "split"), split_rows),
        "chexpert": _csv_text(("subject_id", "study_id", *alphabetical), chexpert),
        "negbio": _csv_text(("subject_id", "study_id", *alphabetical), negbio),
    }
    for role, text in tables.items():
        _write_gz(folder / f"{MIMIC_TABLES[role]}.gz", text)
    logger.info(
        "synthetic MIMIC-CXR-JPG: %d images of %d patients in %s", len(metadata), patients, folder
    )
    return folder


def _mimic_views(rng: np.random.Generator) -> list[str]:
    """ViewPosition of a study's images: a frontal view, often a lateral, a few blanks."""
    first = "" if rng.random() < 0.05 else ("AP" if rng.random() < 0.6 else "PA")
    views = [first]
    if rng.random() < 0.6:
        views.append("LATERAL" if rng.random() < 0.8 else "LL")
    if rng.random() < 0.1:
        views.append("AP")
    return views


def _save_mimic_dicom(path: Path, pixels: np.ndarray, number: int, subject: str, view: str) -> None:
    from chexviz.data.dicom import write_dicom

    # Cycle through the cases a hospital archive holds: 8- and 12-bit, MONOCHROME1 and 2,
    # with and without a window, uncompressed and compressed.
    twelve = number % 2 == 1
    values = pixels.astype(np.uint16) * 16 + 8 if twelve else pixels
    monochrome1 = number % 3 == 2
    if monochrome1:
        values = (4095 if twelve else 255) - values
    window = (2048.0, 4096.0) if twelve and number % 4 == 1 else None
    write_dicom(
        path,
        np.asarray(values, dtype=np.uint16 if twelve else np.uint8),
        bits_stored=12 if twelve else 8,
        photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2",
        modality="CR" if number % 2 else "DX",
        transfer_syntax=_DICOM_SYNTAXES[number % len(_DICOM_SYNTAXES)],
        window=window,
        patient_id=subject,
        view_position=view,
    )


def _patient_splits(
    rng: np.random.Generator, patients: int, shares: Sequence[tuple[str, float]]
) -> list[str]:
    """A split name per patient, every split holding at least one patient."""
    names = [name for name, _ in shares]
    out = list(names)
    weights = np.asarray([share for _, share in shares])
    out += [
        names[int(rng.choice(len(names), p=weights / weights.sum()))]
        for _ in range(patients - len(names))
    ]
    return [out[int(i)] for i in rng.permutation(patients)]


def make_synthetic_nih(
    root: str | os.PathLike[str],
    *,
    patients: int = 40,
    seed: int = 0,
    image_size: int = 256,
    layout: Literal["nih", "kaggle"] = "nih",
    entry_file: Literal["v2020", "2017"] = "v2020",
    rgba_every: int = 10,
) -> Path:
    """Writes a small data set in NIH ChestX-ray14's layout (see the module description).

    Args:
        root: An empty or missing folder to write into.
        patients: Number of patients; the first two hold many follow-up images (at least 6,
            and a sixth as many as the others together), the others 1 to 4.
        seed: Seed of every random choice; the same arguments give the same files.
        image_size: Side of the square PNGs (the release's are 1024). The boxes are written
            in the release's 1024x1024 frame, as for a downsampled copy of it.
        layout: ``"nih"`` puts every image in ``images/``; ``"kaggle"`` spreads them over
            ``images_001/images/``, ``images_002/images/``, ...
        entry_file: ``"v2020"`` writes ``Data_Entry_2017_v2020.csv``; ``"2017"`` writes
            ``Data_Entry_2017.csv``, whose header and rows end with a comma.
        rgba_every: Every n-th image is saved as RGBA (0 for none).

    Returns:
        ``root``, to pass to [`NIHChestXray14Dataset`][chexviz.data.nih.NIHChestXray14Dataset].

    Raises:
        ValueError: An argument is out of range.
        FileExistsError: ``root`` exists and is not empty.
    """
    _check_count("patients", patients, 4)
    _check_count("image_size", image_size, 64)
    _check_count("rgba_every", rgba_every, 0)
    if layout not in ("nih", "kaggle"):
        raise ValueError(f"layout must be 'nih' or 'kaggle', got {layout!r}")
    if entry_file not in ("v2020", "2017"):
        raise ValueError(f"entry_file must be 'v2020' or '2017', got {entry_file!r}")
    folder = _prepare(root)
    rng = np.random.default_rng([seed, 2])
    counts = [int(rng.integers(1, 5)) for _ in range(patients)]
    # Heavy tails, as in the release: two patients with many follow-up images.
    heavy = max(6, sum(counts[2:]) // 6)
    counts[0], counts[1] = heavy, heavy - 1
    splits = _patient_splits(rng, patients, (("train_val", 0.8), ("test", 0.2)))
    entries: list[list[object]] = []
    boxes: list[list[object]] = []
    lists: dict[str, list[str]] = {name: [] for name in NIH_SPLITS}
    number = 0
    for patient, (count, split) in enumerate(zip(counts, splits, strict=True), start=1):
        female = bool(rng.random() < 0.44)
        anatomy = _drawing.sample_anatomy(rng, female=female)
        age = int(rng.integers(18, 85))
        for follow_up in range(count):
            name = f"{patient:08d}_{follow_up:03d}.png"
            findings = [label for label in NIH_LABELS if rng.random() < NIH_FREQUENCIES[label]]
            view = "AP" if rng.random() < 0.4 else "PA"
            drawn_labels = {_NIH_SIGNS[f] for f in findings if f in _NIH_SIGNS}
            signs = _drawing.sample_signs(
                tuple(label for label in _drawing.DRAWN_LABELS if label in drawn_labels),
                anatomy,
                rng,
            )
            pixels, drawn = _drawing.render_frontal(
                anatomy, signs, image_size, image_size, ap=view == "AP", rng=rng
            )
            folder_name = "images" if layout == "nih" else f"images_{number // 50 + 1:03d}/images"
            image = folder / folder_name / name
            image.parent.mkdir(parents=True, exist_ok=True)
            picture = Image.fromarray(pixels)
            if rgba_every and number % rgba_every == rgba_every - 1:
                picture = picture.convert("RGBA")
            picture.save(image, format="PNG")
            number += 1
            width, height = (int(v) for v in rng.integers(2000, 3000, size=2))
            spacing = f"{float(rng.choice([0.139, 0.143, 0.168])):g}"
            entries.append(
                [
                    name,
                    "|".join(findings) if findings else "No Finding",
                    follow_up,
                    patient,
                    min(age + follow_up // 4, 95),
                    "F" if female else "M",
                    view,
                    width,
                    height,
                    spacing,
                    spacing,
                ]
            )
            lists[split].append(name)
            if split == "test":
                boxes += _nih_boxes(name, findings, drawn, 1024 / image_size)
    header = _NIH_HEADER
    if entry_file == "2017":
        table = header + ",\n" + "".join(",".join(map(str, row)) + ",\n" for row in entries)
        (folder / "Data_Entry_2017.csv").write_text(table, encoding="utf-8")
    else:
        table = header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in entries)
        (folder / "Data_Entry_2017_v2020.csv").write_text(table, encoding="utf-8")
    for split, names in lists.items():
        (folder / NIH_SPLITS[split]).write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    box_text = _BOX_HEADER + "\n" + "".join(",".join(map(str, row)) + "\n" for row in boxes)
    (folder / "BBox_List_2017.csv").write_text(box_text, encoding="utf-8")
    logger.info(
        "synthetic NIH ChestX-ray14: %d images of %d patients in %s", number, patients, folder
    )
    return folder


def _nih_boxes(
    name: str, findings: Sequence[str], drawn: dict[str, list[_drawing.Box]], scale: float
) -> list[list[object]]:
    """One box per boxable finding: the bounds of its sign's parts, as x, y, w, h.

    ``scale`` maps image pixels to the 1024x1024 frame NIH drew its boxes on.
    """
    rows: list[list[object]] = []
    for finding in findings:
        parts = drawn.get(_NIH_SIGNS.get(finding, ""), [])
        if finding not in _NIH_BOXED or not parts:
            continue
        x0 = min(part[0] for part in parts)
        y0 = min(part[1] for part in parts)
        x1 = max(part[2] for part in parts)
        y1 = max(part[3] for part in parts)
        label = "Infiltrate" if finding == "Infiltration" else finding
        x, y, w, h = (scale * value for value in (x0, y0, x1 - x0, y1 - y0))
        rows.append([name, label, x, y, w, h])
    return rows
