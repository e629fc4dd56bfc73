"""A synthetic data set in the exact format of the CheXpert release, with ground-truth boxes.

The real CheXpert images cannot be downloaded without registering, so the demo, the tests and
the documentation run on a generated stand-in. `make_synthetic_chexpert` writes

```
root/CheXpert-v1.0-small/
    train.csv, valid.csv                 # the release's 19 columns and cell encodings
    train/patient00001/study1/view1_frontal.jpg ...
    valid/patient00201/study1/view1_frontal.jpg ...
    train_boxes.csv, valid_boxes.csv     # Path,label,x0,y0,x1,y1,width,height
    gt_segmentations_val.json            # CheXlocalize ground truth of valid/: RLE masks
    gt_annotations_val.json              # ... and the same as polygons
    hb_segmentations_val.json            # a human benchmark: a second reader's RLE masks
    hb_salient_pt_val.json               # ... and its most representative points
    chexviz_synthetic.json               # the manifest: arguments and generator version
```

Frontal images are drawn chest radiographs (lungs, heart, mediastinum, diaphragm, ribs,
clavicles, spine, soft tissue, noise) in which every observation of `SIGN_LABELS` that is
labelled positive (``1.0``) shows a visible sign in its anatomical place, and the sign's pixel
box is written to the box file. The validation images with a sign also get CheXlocalize-format
ground truth (see `chexviz.data.chexlocalize`): the pixels of each drawn sign, as polygons
(their outer contours) and as the RLE masks those polygons fill, so the two files agree pixel
for pixel. A simulated second reader annotates the same images as CheXlocalize's human
benchmark (``hb_segmentations_*.json``, ``hb_salient_pt_*.json``): each finding shifted by a
few pixels and dilated or eroded, small findings sometimes missed, and one point of its mask
marked as the most representative. Uncertain (``-1.0``), negative and blank labels get no sign, so
the uncertain cells are really negative images; lateral views never carry signs or boxes.
Labels follow the frequencies of the real ``train.csv`` (`LABEL_FREQUENCIES`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from chexviz._internal.progress import CountProgress
from chexviz._internal.system import usable_cpus
from chexviz._version import __version__
from chexviz.data import _drawing
from chexviz.data.boxes import BOX_COLUMNS
from chexviz.data.chexlocalize import (
    LOCALIZATION_LABELS,
    CheXlocalizeFormat,
    Polygon,
    cxr_id,
    mask_to_polygons,
    polygons_to_mask,
    write_chexlocalize,
    write_salient_points,
)
from chexviz.data.labels import CHEXPERT_LABELS

__all__ = [
    "LABEL_FREQUENCIES",
    "MANIFEST_NAME",
    "SIGN_LABELS",
    "make_synthetic_chexpert",
]

logger = logging.getLogger(__name__)

SIGN_LABELS: tuple[str, ...] = LOCALIZATION_LABELS
"""The observations drawn as a visible, boxed sign on frontal images, in CSV column order.

They are the 10 pathologies CheXlocalize's radiologists localise
([`LOCALIZATION_LABELS`][chexviz.data.chexlocalize.LOCALIZATION_LABELS]), so the synthetic
set carries ground truth for exactly the findings the real benchmark scores.

The others (No Finding, Pneumonia, Pleural Other, Fracture) are labelled with their real
frequencies but have nothing to see: a model cannot learn them from this data set.
"""

MANIFEST_NAME = "chexviz_synthetic.json"
"""File name of the manifest written inside the generated ``CheXpert-v1.0-small`` folder."""

LABEL_FREQUENCIES: Mapping[str, tuple[float, float, float, float]] = {
    "No Finding": (0.100, 0.0, 0.0, 0.900),
    "Enlarged Cardiomediastinum": (0.048, 0.056, 0.097, 0.799),
    "Cardiomegaly": (0.121, 0.036, 0.050, 0.793),
    "Lung Opacity": (0.473, 0.025, 0.030, 0.472),
    "Lung Lesion": (0.041, 0.007, 0.006, 0.946),
    "Edema": (0.234, 0.058, 0.093, 0.615),
    "Consolidation": (0.066, 0.124, 0.126, 0.684),
    "Pneumonia": (0.027, 0.084, 0.013, 0.876),
    "Atelectasis": (0.149, 0.151, 0.006, 0.694),
    "Pneumothorax": (0.087, 0.014, 0.252, 0.647),
    "Pleural Effusion": (0.386, 0.052, 0.158, 0.404),
    "Pleural Other": (0.016, 0.012, 0.001, 0.971),
    "Fracture": (0.040, 0.003, 0.011, 0.946),
    "Support Devices": (0.519, 0.005, 0.027, 0.449),
}
"""Per observation, the fractions of ``train.csv`` rows that are positive, uncertain, negative
and blank in the real release; the generator samples every study's labels from them."""

_FOLDER = "CheXpert-v1.0-small"
_HEADER = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS)
_CELLS = ("1.0", "-1.0", "0.0", "")
_GENERATOR = "chexviz.synthetic"  # a stable identity written in manifests, not a module path
_GENERATOR_VERSION = 4  # bump whenever the output for given arguments changes
_SPLITS = {"train": 0, "valid": 1}
_MAX_PATIENTS = 99_999  # patient ids have five digits, as in the release
_FEMALE = 90_777 / 223_413
_AP = 161_590 / (161_590 + 29_420)
_STUDY_P = 1 / 2.9  # a geometric number of studies per patient, mean 2.9 as in the release
_MAX_STUDIES = 10
_MIN_PARALLEL_PATIENTS = 64
_TRUTH_FILES: dict[CheXlocalizeFormat, str] = {
    "segmentations": "gt_segmentations_val.json",
    "annotations": "gt_annotations_val.json",
}
# The reference's human-benchmark names (hb_*_test.json), for the split that has ground truth.
_HUMAN_FILES = ("hb_segmentations_val.json", "hb_salient_pt_val.json")
_HUMAN_STREAM = 2  # the second reader's random stream, apart from the splits' 0 and 1
_HUMAN_SHIFT = 4  # pixels the second reader's outline moves at most, in x and in y
_HUMAN_RADIUS = (1, 5)  # pixels it grows or shrinks by (the upper bound excluded)
_HUMAN_SMALL = 0.01  # a finding below this fraction of the image ...
_HUMAN_MISS = 0.3  # ... is missed this often


class _Task(NamedTuple):
    """Patients ``start .. stop - 1`` of one split, written into ``folder``."""

    folder: str
    seed: int
    split: str
    first_number: int
    start: int
    stop: int


class _Result(NamedTuple):
    rows: list[list[str]]
    boxes: list[list[str | int]]
    # (CXR id, (height, width), label -> polygons) of each validation image with a sign.
    truths: list[tuple[str, tuple[int, int], dict[str, list[Polygon]]]]


def make_synthetic_chexpert(
    root: str | os.PathLike[str],
    *,
    n_patients: int = 200,
    seed: int = 0,
    valid_patients: int = 20,
    progress: bool = False,
    workers: int | None = None,
) -> Path:
    """Writes (or reuses) a synthetic CheXpert-format data set under ``root``.

    Train patients are ``patient00001`` up to ``n_patients``; validation patients are numbered
    after them, as in the release. A train patient has a geometric number of studies (mean
    2.9, at most 10), a validation patient one; a study has 1-3 views, mostly a frontal one
    (AP or PA) and sometimes a lateral. All views of a study share its labels. ``train.csv``
    uses the four cell values ``1.0``, ``0.0``, ``-1.0`` and blank; ``valid.csv`` only ``1.0``
    and ``0.0``. Every patient is drawn from its own seeded generator, so the output depends
    only on ``seed`` and the arguments, not on ``workers``, and a train patient looks the same
    whatever ``n_patients`` is.

    The set is written to a temporary folder in ``root`` and renamed into place when complete,
    so an interrupted run never leaves a set that a later call would trust. A later call with
    the same arguments finds the manifest and returns at once; a call with other arguments
    replaces the synthetic set.

    Args:
        root: Folder to create ``CheXpert-v1.0-small`` in (created if missing).
        n_patients: Number of train patients (at least 1).
        seed: Seed of every random choice (at least 0).
        valid_patients: Number of validation patients (0 writes a ``valid.csv`` with only the
            header).
        progress: Show a progress bar (only on a terminal).
        workers: Threads to draw with. None uses one per available CPU (at most 8) for 64
            patients or more and draws in the calling thread for fewer.

    Returns:
        The ``CheXpert-v1.0-small`` folder. CSV paths are relative to its parent, ``root``.

    Raises:
        ValueError: An argument is out of range (the message names it).
        TypeError: An argument is not an integer.
        FileExistsError: ``root/CheXpert-v1.0-small`` exists but is not a synthetic set made
            by this function (it has no manifest); it is never overwritten.
        NotADirectoryError: ``root`` is a file.
        PermissionError: ``root`` cannot be created or written to.
    """
    _check_int("n_patients", n_patients, 1)
    _check_int("valid_patients", valid_patients, 0)
    _check_int("seed", seed, 0)
    if workers is not None:
        _check_int("workers", workers, 1)
    if n_patients + valid_patients > _MAX_PATIENTS:
        raise ValueError(
            f"n_patients + valid_patients must be at most {_MAX_PATIENTS} (five-digit patient "
            f"ids), got {n_patients} + {valid_patients}"
        )
    root = Path(root).expanduser()
    target = root / _FOLDER
    arguments = {"n_patients": n_patients, "seed": seed, "valid_patients": valid_patients}
    if target.exists() or target.is_symlink():
        manifest = _read_manifest(target)
        if manifest is None:
            raise FileExistsError(
                f"{target} exists and is not a chexviz synthetic data set (it has no "
                f"{MANIFEST_NAME}); refusing to overwrite it. Pass another root."
            )
        if _matches(manifest, arguments) and _is_complete(target, manifest):
            logger.info("reusing the synthetic CheXpert set in %s", target)
            return target
        logger.warning(
            "replacing the synthetic CheXpert set in %s (made with %s) by one with %s",
            target,
            manifest.get("arguments"),
            arguments,
        )
    _prepare_root(root)
    try:
        workdir = Path(tempfile.mkdtemp(prefix=".chexviz-synthetic-", dir=root))
    except OSError as error:
        raise PermissionError(f"cannot write in the synthetic data root {root}: {error}") from error
    try:
        staged = workdir / _FOLDER
        started = time.perf_counter()
        counts = _generate(staged, seed, n_patients, valid_patients, progress, workers)
        elapsed = time.perf_counter() - started
        images = counts["train_images"] + counts["valid_images"]
        logger.info(
            "drew %d synthetic images in %.1f s (%.0f images/minute)",
            images,
            elapsed,
            60.0 * images / max(elapsed, 1e-9),
        )
        _write_json(
            staged / MANIFEST_NAME,
            {
                "generator": _GENERATOR,
                "generator_version": _GENERATOR_VERSION,
                "chexviz_version": __version__,
                "arguments": arguments,
                "sign_labels": list(SIGN_LABELS),
                "counts": counts,
            },
        )
        _install(staged, target, workdir, arguments)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return target


# ----------------------------------------------------------------------------------------------
# Checks


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


# ----------------------------------------------------------------------------------------------
# Folders and the manifest


def _prepare_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"the synthetic data root {root} is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PermissionError(f"cannot create the synthetic data root {root}: {error}") from error
    if not os.access(root, os.W_OK | os.X_OK):
        raise PermissionError(f"the synthetic data root {root} is not writable")


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a synthetic set; None when ``folder`` has none (not ours)."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        logger.warning("unreadable synthetic-set manifest %s", path)
        return {}
    return data if isinstance(data, dict) else {}


def _matches(manifest: Mapping[str, Any], arguments: Mapping[str, int]) -> bool:
    return (
        manifest.get("generator") == _GENERATOR
        and manifest.get("generator_version") == _GENERATOR_VERSION
        and manifest.get("arguments") == dict(arguments)
    )


def _is_complete(folder: Path, manifest: Mapping[str, Any]) -> bool:
    """Whether every file the manifest promises is there (a user may have deleted some)."""
    counts = manifest.get("counts", {})
    for split in _SPLITS:
        for name, key in ((f"{split}.csv", "images"), (f"{split}_boxes.csv", "boxes")):
            path = folder / name
            if not path.is_file():
                return False
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))[1:]
            if len(rows) != counts.get(f"{split}_{key}"):
                return False
            if key == "images" and not all((folder.parent / row[0]).is_file() for row in rows):
                return False
    localized = counts.get("valid_localized")
    if localized is None:
        return False
    return localized == 0 or all(
        (folder / name).is_file() for name in (*_TRUTH_FILES.values(), *_HUMAN_FILES)
    )


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _install(staged: Path, target: Path, workdir: Path, arguments: Mapping[str, int]) -> None:
    """Renames the finished set into place, moving an old synthetic set out of the way."""
    if target.exists() or target.is_symlink():
        target.rename(workdir / "replaced")  # deleted with the work folder
    try:
        staged.rename(target)
    except OSError:
        # Another process finished the same set first: use it if it is the one asked for.
        manifest = _read_manifest(target)
        if manifest is None or not _matches(manifest, arguments):
            raise
        logger.info("another process wrote %s first; using it", target)


# ----------------------------------------------------------------------------------------------
# Generation


def _resolve_workers(workers: int | None, patients: int) -> int:
    if workers is not None:
        return workers
    if patients < _MIN_PARALLEL_PATIENTS:
        return 1
    return min(usable_cpus(), 8)


def _generate(
    folder: Path,
    seed: int,
    n_patients: int,
    valid_patients: int,
    progress: bool,
    workers: int | None,
) -> dict[str, int]:
    total = n_patients + valid_patients
    n_workers = min(_resolve_workers(workers, total), total)
    chunk = max(1, min(16, math.ceil(total / (8 * n_workers))))
    tasks = [
        _Task(str(folder), seed, split, first, start, min(start + chunk, count))
        for split, count, first in (
            ("train", n_patients, 1),
            ("valid", valid_patients, n_patients + 1),
        )
        for start in range(0, count, chunk)
    ]
    results: dict[str, list[_Result]] = {split: [] for split in _SPLITS}
    with tqdm(
        total=total, desc="synthetic CheXpert", unit="patient", disable=None if progress else True
    ) as bar:
        # The bar shows only on a terminal; the log lines show life in a pipe or a log too.
        lines, done = CountProgress("synthetic CheXpert: patients", total), 0
        for task, result in zip(tasks, _run(tasks, n_workers), strict=True):
            results[task.split].append(result)
            bar.update(task.stop - task.start)
            done += task.stop - task.start
            lines.update(done)
    counts: dict[str, int] = {}
    for split in _SPLITS:
        rows = [row for result in results[split] for row in result.rows]
        boxes = [box for result in results[split] for box in result.boxes]
        _write_csv(folder / f"{split}.csv", _HEADER, rows)
        _write_csv(folder / f"{split}_boxes.csv", BOX_COLUMNS, boxes)
        counts[f"{split}_images"] = len(rows)
        counts[f"{split}_boxes"] = len(boxes)
    truths = [truth for result in results["valid"] for truth in result.truths]
    counts["valid_localized"] = len(truths)
    if truths:
        for format, name in _TRUTH_FILES.items():
            masks = (
                (
                    cxr,
                    {label: polygons_to_mask(polygons, size) for label, polygons in drawn.items()},
                )
                for cxr, size, drawn in truths
            )
            write_chexlocalize(folder / name, masks, format=format)
        _write_human_benchmark(folder, seed, truths)
    return counts


def _write_human_benchmark(
    folder: Path, seed: int, truths: list[tuple[str, tuple[int, int], dict[str, list[Polygon]]]]
) -> None:
    """A second reader's segmentations and salient points of every localised CXR.

    Each CXR draws from its own generator (``[seed, 2, its index]``), so the files depend on
    ``seed`` alone and the streams of the images, labels and ground truth are untouched.
    """
    points: dict[str, dict[str, list[tuple[int, int]]]] = {}

    def second_reader() -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        for index, (cxr, size, drawn) in enumerate(truths):
            rng = np.random.default_rng([seed, _HUMAN_STREAM, index])
            masks: dict[str, np.ndarray] = {}
            points[cxr] = {}
            for label, polygons in drawn.items():
                mask = _second_reading(polygons_to_mask(polygons, size), rng)
                masks[label] = mask
                rows, columns = np.nonzero(mask)
                if len(rows):
                    pick = int(rng.integers(len(rows)))
                    points[cxr][label] = [(int(columns[pick]), int(rows[pick]))]
            yield cxr, masks

    write_chexlocalize(folder / _HUMAN_FILES[0], second_reader())
    write_salient_points(folder / _HUMAN_FILES[1], points)


def _second_reading(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One finding as another radiologist would outline it: moved, grown or shrunk, or missed.

    Every draw is made whatever the outcome, so each finding takes the same count of numbers
    from ``rng``.
    """
    dx, dy = (int(v) for v in rng.integers(-_HUMAN_SHIFT, _HUMAN_SHIFT + 1, size=2))
    radius = int(rng.integers(*_HUMAN_RADIUS))
    grow = bool(rng.random() < 0.5)
    miss = bool(rng.random() < _HUMAN_MISS)
    if miss and np.count_nonzero(mask) < _HUMAN_SMALL * mask.size:
        return np.zeros_like(mask)
    height, width = mask.shape
    moved = cv2.warpAffine(
        mask.astype(np.uint8),
        np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]),
        (width, height),
        flags=cv2.INTER_NEAREST,
        borderValue=0,
    )
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    changed = (cv2.dilate if grow else cv2.erode)(moved, kernel)
    if not changed.any():  # eroded away: the reader still outlines what is there
        changed = moved
    return changed.astype(np.bool_)


def _run(tasks: list[_Task], workers: int) -> Iterator[_Result]:
    if workers == 1:
        yield from map(_run_task, tasks)
        return
    # Threads, not processes: NumPy and PIL's JPEG encoder release the GIL, and a process pool
    # would re-import the caller's script (and torch) in every worker, which breaks scripts
    # without an ``if __name__ == "__main__"`` guard.
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        yield from pool.map(_run_task, tasks)
    finally:
        # After a failure, drop the patients not started yet instead of drawing them first.
        pool.shutdown(wait=True, cancel_futures=True)


def _write_csv(path: Path, header: Iterable[str], rows: Iterable[Iterable[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _run_task(task: _Task) -> _Result:
    result = _Result([], [], [])
    for index in range(task.start, task.stop):
        _make_patient(task, index, result)
    return result


def _make_patient(task: _Task, index: int, out: _Result) -> None:
    rng = np.random.default_rng([task.seed, _SPLITS[task.split], index])
    valid = task.split == "valid"
    female = bool(rng.random() < _FEMALE)
    age = int(np.clip(round(rng.normal(60.4, 17.0)), 18, 90))
    anatomy = _drawing.sample_anatomy(rng, female=female)
    patient = f"patient{task.first_number + index:05d}"
    n_studies = 1 if valid else min(int(rng.geometric(_STUDY_P)), _MAX_STUDIES)
    for study in range(1, n_studies + 1):
        if study > 1:  # later studies: the patient may have had a birthday
            age = min(age + int(rng.integers(0, 2)), 90)
        cells = _sample_labels(rng, valid=valid)
        positives = tuple(
            label for label, cell in zip(CHEXPERT_LABELS, cells, strict=True) if cell == "1.0"
        )
        signs = _drawing.sample_signs(
            tuple(label for label in SIGN_LABELS if label in positives), anatomy, rng
        )
        for view, (frontal, projection) in enumerate(_sample_views(rng), start=1):
            width = round(390 * float(rng.uniform(0.9, 1.1)))
            height = round(320 * float(rng.uniform(0.9, 1.1)))
            kind = "frontal" if frontal else "lateral"
            relative = f"{_FOLDER}/{task.split}/{patient}/study{study}/view{view}_{kind}.jpg"
            drawn: dict[str, list[_drawing.Box]] = {}
            if frontal:
                pixels, drawn, masks = _drawing.render_frontal(
                    anatomy, signs, width, height, ap=projection == "AP", rng=rng, masks=True
                )
                missing = [label for label in signs if not drawn.get(label)]
                if missing:  # would make the box file disagree with the labels
                    raise RuntimeError(f"signs {missing} of {relative} fell outside the image")
                if valid and masks:
                    polygons = {
                        label: mask_to_polygons(masks[label])
                        for label in SIGN_LABELS
                        if label in masks
                    }
                    out.truths.append((cxr_id(relative), (height, width), polygons))
            else:
                pixels = _drawing.render_lateral(anatomy, width, height, rng=rng)
            path = Path(task.folder).parent / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path, format="JPEG", quality=90)
            out.rows.append(
                [
                    relative,
                    "Female" if female else "Male",
                    str(age),
                    kind.title(),
                    projection,
                    *cells,
                ]
            )
            for label in SIGN_LABELS:
                for x0, y0, x1, y1 in drawn.get(label, ()):
                    out.boxes.append([relative, label, x0, y0, x1, y1, width, height])


def _sample_labels(rng: np.random.Generator, *, valid: bool) -> list[str]:
    """One study's 14 label cells, in CheXpert column order.

    A tenth of the studies are normal (No Finding ``1.0``, nothing positive); in the others
    every observation is positive with its frequency scaled up by 1/0.9, so the overall
    positive rate matches the release. ``valid.csv`` turns uncertain and blank into ``0.0``.
    """
    p_normal = LABEL_FREQUENCIES["No Finding"][0]
    normal = bool(rng.random() < p_normal)
    cells: list[str] = []
    for label in CHEXPERT_LABELS[1:]:
        pos, unc, neg, blank = LABEL_FREQUENCIES[label]
        if normal:
            probs = np.array([0.0, 0.0, neg, blank])
        else:
            p = pos / (1.0 - p_normal)
            rest = (1.0 - p) / (unc + neg + blank)
            probs = np.array([p, unc * rest, neg * rest, blank * rest])
        cell = _CELLS[int(rng.choice(4, p=probs / probs.sum()))]
        cells.append(("1.0" if cell == "1.0" else "0.0") if valid else cell)
    if valid:
        return ["0.0" if "1.0" in cells else "1.0", *cells]
    return ["1.0" if normal else "", *cells]


def _sample_views(rng: np.random.Generator) -> list[tuple[bool, str]]:
    """``(frontal, AP/PA cell)`` per view: 81% of studies have one view, 18% two, 1% three.

    The first view is frontal 97% of the time, later ones 25%, which gives the release's
    share of lateral images (14.5%).
    """
    draw = float(rng.random())
    n_views = 1 if draw < 0.81 else 2 if draw < 0.99 else 3
    views = []
    for view in range(n_views):
        frontal = bool(rng.random() < (0.97 if view == 0 else 0.25))
        projection = ("AP" if rng.random() < _AP else "PA") if frontal else ""
        views.append((frontal, projection))
    return views
