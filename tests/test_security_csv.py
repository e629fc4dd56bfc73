"""CSV files from hospital exports: paths stay inside the data folder, odd files read or fail.

tests/test_dataset.py covers lexical escapes (``/etc/passwd``, ``../``, drive letters); these
tests cover symbolic links and the ways a real export differs from the release CSV.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chexviz.data.dataset import CheXpertDataset
from chexviz.data.labels import LabelValueError, MissingColumnsError

MakeData = Callable[..., Path]
SIZE = 8


def _secret(folder: Path) -> Path:
    """An image outside the data folder; its pixels must never reach a data set."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "secret.png"
    Image.fromarray(np.full((12, 12), 123, dtype=np.uint8)).save(path)
    return path


def _link_file_outside(release: Path, tmp_path: Path) -> Path:
    target = release / "train/patient00002/study1/view1_frontal.jpg"
    target.unlink()
    target.symlink_to(_secret(tmp_path / "outside"))
    return target


def _link_folder_outside(release: Path, tmp_path: Path) -> Path:
    folder = release / "train/patient00002"
    moved = tmp_path / "outside" / "patient00002"
    shutil.move(folder, moved)
    folder.symlink_to(moved, target_is_directory=True)
    return folder


@pytest.mark.parametrize("link", [_link_file_outside, _link_folder_outside])
@pytest.mark.parametrize("mode", ["lazy", "cache", "skip"])
def test_symbolic_link_out_of_the_root_is_refused(
    make_chexpert: MakeData,
    tmp_path: Path,
    link: Callable[[Path, Path], Path],
    mode: str,
) -> None:
    release = make_chexpert(patients=2)
    link(release, tmp_path)
    options: dict[str, object] = {"image_size": SIZE}
    if mode == "cache":
        options["cache_dir"] = tmp_path / "cache"
    if mode == "skip":
        options["on_error"] = "skip"
    pattern = r"train\.csv line 6: image .*patient00002/study1.* is a symbolic link to .*outside"
    if mode == "lazy":
        # Construction only checks that files exist; no byte is read before this check.
        data = CheXpertDataset(release, **options)  # type: ignore[arg-type]
        data[0]
        with pytest.raises(ValueError, match=pattern):
            data[2]
    else:
        with pytest.raises(ValueError, match=pattern):
            CheXpertDataset(release, **options)  # type: ignore[arg-type]
    if mode == "cache":
        assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def test_links_inside_the_root_and_a_linked_root_are_fine(
    make_chexpert: MakeData, tmp_path: Path
) -> None:
    release = make_chexpert(patients=2)
    reference = CheXpertDataset(release, image_size=SIZE)
    # A study folder linked to another place inside the release, and the root itself a link.
    study = release / "train/patient00002/study1"
    shutil.move(study, release / "moved-study")
    study.symlink_to(release / "moved-study", target_is_directory=True)
    linked_root = tmp_path / "linked-root"
    linked_root.symlink_to(release.parent, target_is_directory=True)
    data = CheXpertDataset(linked_root, image_size=SIZE, cache_dir=tmp_path / "c")
    for index in range(len(data)):
        assert np.array_equal(data[index][0], reference[index][0])


def _lines(release: Path) -> list[str]:
    return (release / "train.csv").read_text().splitlines()


def _write(release: Path, text: str | bytes) -> None:
    path = release / "train.csv"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        with open(path, "w", newline="") as handle:
            handle.write(text)


def _same(data: CheXpertDataset, reference: CheXpertDataset) -> None:
    assert data.paths == reference.paths
    assert data.patient_ids == reference.patient_ids
    np.testing.assert_array_equal(data.targets, reference.targets)


@pytest.mark.parametrize(
    "variant",
    ["bom", "crlf", "bom-crlf", "quoted", "no-final-newline", "blank-lines"],
)
def test_export_variants_read_like_the_release(make_chexpert: MakeData, variant: str) -> None:
    release = make_chexpert(patients=2)
    reference = CheXpertDataset(release, image_size=SIZE, frontal_only=False)
    lines = _lines(release)
    if variant == "bom":
        _write(release, "\ufeff" + "\n".join(lines) + "\n")
    elif variant == "crlf":
        _write(release, "\r\n".join(lines) + "\r\n")
    elif variant == "bom-crlf":
        _write(release, "\ufeff" + "\r\n".join(lines) + "\r\n")
    elif variant == "quoted":
        rows = list(csv.reader(lines))
        with open(release / "train.csv", "w", newline="") as handle:
            csv.writer(handle, quoting=csv.QUOTE_ALL).writerows(rows)
    elif variant == "no-final-newline":
        _write(release, "\n".join(lines))
    else:
        _write(release, "\n\n".join(lines) + "\n\n")
    _same(CheXpertDataset(release, image_size=SIZE, frontal_only=False), reference)


def test_extra_named_columns_are_kept(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=2)
    reference = CheXpertDataset(release, image_size=SIZE)
    lines = _lines(release)
    _write(release, "\n".join([lines[0] + ",Site,Note"] + [f"{x},A,hi" for x in lines[1:]]))
    data = CheXpertDataset(release, image_size=SIZE)
    _same(data, reference)
    assert list(data.frame["Site"]) == ["A"] * len(data)


@pytest.mark.parametrize(("delimiter", "shown"), [(";", "';'"), ("\t", r"'\\t'"), ("|", "'|'")])
def test_other_delimiters_are_named(make_chexpert: MakeData, delimiter: str, shown: str) -> None:
    release = make_chexpert(patients=1)
    _write(release, "\n".join(x.replace(",", delimiter) for x in _lines(release)) + "\n")
    with pytest.raises(ValueError, match=rf"train\.csv: columns are separated by {shown}"):
        CheXpertDataset(release, image_size=SIZE)


def test_repeated_header_row_is_named(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=2)
    lines = _lines(release)
    _write(release, "\n".join([*lines[:4], lines[0], *lines[4:]]) + "\n")
    with pytest.raises(ValueError, match=r"train\.csv line 5: the header row appears again"):
        CheXpertDataset(release, image_size=SIZE)


def test_unnamed_extra_cells_are_refused(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=2)
    lines = _lines(release)
    # pandas would silently turn the first column into the index.
    _write(release, "\n".join([lines[0]] + [x + ",surplus" for x in lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"line 2: more cells than the 19 columns"):
        CheXpertDataset(release, image_size=SIZE)
    # Only some rows too long: pandas' own message, with the file named.
    _write(release, "\n".join([*lines[:3], lines[3] + ",x,y", *lines[4:]]) + "\n")
    with pytest.raises(ValueError, match=r"train\.csv is not a well-formed CSV.*line 4"):
        CheXpertDataset(release, image_size=SIZE)


@pytest.mark.parametrize("quoted", [False, True])
def test_truncated_row_is_refused_not_read_as_blank_labels(
    make_chexpert: MakeData, quoted: bool
) -> None:
    release = make_chexpert(patients=3)
    rows = list(csv.reader(_lines(release)))
    rows[4] = rows[4][:12]  # an export cut short: the last 7 labels would read as blank
    with open(release / "train.csv", "w", newline="") as handle:
        quoting = csv.QUOTE_ALL if quoted else csv.QUOTE_MINIMAL
        csv.writer(handle, quoting=quoting, lineterminator="\n").writerows(rows)
    with pytest.raises(ValueError, match=r"train\.csv line 5: 12 cells but the header has 19"):
        CheXpertDataset(release, image_size=SIZE)


def test_file_cut_mid_row(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=3)
    text = (release / "train.csv").read_text()
    _write(release, text[: len(text) - 25])
    with pytest.raises(ValueError, match=r"line 13: \d+ cells but the header has 19"):
        CheXpertDataset(release, image_size=SIZE)


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        ("Path,Sex\r\n".encode("utf-16"), ValueError, "is not UTF-8 text"),
        (
            "Path,Edema\nCheXpert-v1.0-small/train/patient1/é.jpg,1.0\n".encode("latin-1"),
            ValueError,
            "is not UTF-8 text",
        ),
        (bytes(range(128, 256)) * 64, ValueError, "is not UTF-8 text"),
        (b'Path,Edema\n"unterminated,1.0\n', ValueError, "is not a well-formed CSV"),
        (b"", ValueError, "is empty"),
        (b"\n\n\n", ValueError, "is empty"),
        (b"Path,Edema\n", ValueError, "has a header but no rows"),
        (b"just some text\n", MissingColumnsError, "lacks required column"),
    ],
    ids=["utf-16", "latin-1", "binary", "open-quote", "empty", "newlines", "header-only", "text"],
)
def test_unreadable_files_name_the_file(
    make_chexpert: MakeData, content: bytes, error: type[Exception], message: str
) -> None:
    release = make_chexpert(patients=1)
    _write(release, content)
    with pytest.raises(error, match=message) as info:
        CheXpertDataset(release, image_size=SIZE, labels=("Edema",), frontal_only=False)
    assert "train.csv" in str(info.value)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("CheXpert-v1.0-small/train/patient00001/a\x00b.jpg", "contains a NUL character"),
        ("CheXpert-v1.0-small/train/patient00001/" + "x" * 300 + ".jpg", "1 of 2 image files"),
        ("CheXpert-v1.0-small/train/patient00001/" + "d/" * 3000 + "x.jpg", "1 of 2 image files"),
    ],
    ids=["nul", "name-too-long", "path-too-long"],
)
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_paths_the_os_refuses_name_the_line(
    make_chexpert: MakeData, path: str, message: str, on_error: str
) -> None:
    release = make_chexpert(patients=1, studies=2, lateral=False)
    lines = _lines(release)
    lines[2] = path + lines[2][lines[2].index(",") :]
    _write(release, "\n".join(lines) + "\n")
    if on_error == "skip" and "NUL" not in message:
        data = CheXpertDataset(release, image_size=SIZE, on_error="skip")
        assert len(data) == 1
        assert "line 3" in data.skipped["error"].iloc[0]
        return
    with pytest.raises((ValueError, FileNotFoundError), match=message) as info:
        CheXpertDataset(release, image_size=SIZE, on_error=on_error)  # type: ignore[arg-type]
    assert "line 3" in str(info.value)


def test_label_cells_are_not_silently_coerced(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=1)
    lines = _lines(release)
    for cell in ("NA", "null", "None", "TRUE", "nan", "1.0;0.0"):
        cells = next(csv.reader([lines[1]]))
        cells[10] = cell  # Edema
        with open(release / "train.csv", "w", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows([lines[0].split(","), cells])
        with pytest.raises(LabelValueError, match=r"line 2, column 'Edema'"):
            CheXpertDataset(release, image_size=SIZE)


def test_large_export_with_one_bad_row_names_it(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=1, studies=1, lateral=False)
    header, row = _lines(release)
    rows = [row] * 50_000
    rows[41_999] = row.rsplit(",", 3)[0]
    _write(release, "\n".join([header, *rows]) + "\n")
    with pytest.raises(ValueError, match=r"line 42001: 16 cells but the header has 19"):
        CheXpertDataset(release, image_size=SIZE, progress=False)
    rows[41_999] = row
    _write(release, "\n".join([header, *rows]) + "\n")
    assert len(CheXpertDataset(release, image_size=SIZE, progress=False)) == 50_000
    assert os.path.getsize(release / "train.csv") > 4_000_000
