"""Fuzz tests of the new readers: DICOM files, NIH and MIMIC-CXR-JPG tables, NIH boxes.

Like tests/test_fuzz.py: every input either loads with valid outputs or fails with an error
chexviz documents, naming the file at fault; never another exception type or a hang.
``CHEXVIZ_FUZZ_EXAMPLES`` sets the number of examples per target (50 by default).
"""

from __future__ import annotations

import functools
import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from chexviz.data.dicom import write_dicom
from chexviz.data.images import ImageDecodeError, load_image
from chexviz.data.label_mapping import NIH_LABELS
from chexviz.data.labels import CHEXPERT_LABELS, MissingColumnsError
from chexviz.data.mimic import MIMICCXRDataset
from chexviz.data.nih import NIHChestXray14Dataset, read_nih_boxes
from test_fuzz import FUZZ, _no_hang

# pydicom reports what it repairs or ignores in damaged headers; the outcome is what counts.
QUIET = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")

# --- DICOM ----------------------------------------------------------------------------------


@functools.cache
def _dicom(seed: int, bits: int, syntax: str, photometric: str, windowed: bool) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 2**bits, (32, 36)).astype(np.uint8 if bits == 8 else np.uint16)
    with tempfile.TemporaryDirectory() as folder:
        path = write_dicom(
            Path(folder) / "x.dcm",
            pixels,
            bits_stored=bits,
            photometric=photometric,
            transfer_syntax=syntax,
            window=(2.0 ** (bits - 1), 2.0 ** (bits - 1)) if windowed else None,
            rescale=(1.5, -100.0) if seed % 3 == 0 else None,
        )
        return path.read_bytes()


@st.composite
def dicom_bytes(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A DICOM radiograph's bytes, and whether they are intact."""
    data = _dicom(
        draw(st.integers(0, 20)),
        draw(st.sampled_from([8, 12, 16])),
        draw(st.sampled_from([ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless])),
        draw(st.sampled_from(["MONOCHROME1", "MONOCHROME2"])),
        draw(st.booleans()),
    )
    damage = draw(
        st.sampled_from(["none", "none", "truncate", "flip", "flip-header", "garbage", "prefix"])
    )
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage in ("flip", "flip-header"):
        end = min(len(data), 700) if damage == "flip-header" else len(data)
        position = draw(st.integers(128, end - 1))
        data = (
            data[:position]
            + bytes([data[position] ^ draw(st.integers(1, 255))])
            + (data[position + 1 :])
        )
    elif damage == "garbage":
        data = b"\0" * 128 + b"DICM" + draw(st.binary(max_size=400))
    elif damage == "prefix":
        data = draw(st.binary(min_size=1, max_size=16)) + data
    return data, damage == "none"


@QUIET
@FUZZ
@given(image=dicom_bytes(), size=st.integers(1, 24), channels=st.sampled_from([1, 3]))
def test_fuzz_dicom(image: tuple[bytes, bool], size: int, channels: int) -> None:
    data, intact = image
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "image.dcm"
        path.write_bytes(data)
        with _no_hang():
            try:
                out = load_image(path, size=size, in_channels=channels)
            except ImageDecodeError as caught:
                error: ImageDecodeError | None = caught
            else:
                error = None
    if error is not None:
        event("refused")
        assert error.path == path
        assert str(error).startswith(f"{path}: ")
        assert not intact, f"an intact DICOM was refused: {error}"
        return
    event("decoded")
    assert out.dtype == np.uint8
    assert out.shape == ((size, size) if channels == 1 else (size, size, 3))


# --- tables ---------------------------------------------------------------------------------

_JUNK = [",", "|", "\n", '"', "[", "]", "x", " ", "\x00", ";", "-1.0", "No Finding", "../"]


@st.composite
def mutated(draw: st.DrawFn, text: str) -> tuple[str, bool]:
    """``text`` with a few random edits, and whether it was left unchanged."""
    edits = draw(st.integers(0, 3))
    for _ in range(edits):
        kind = draw(st.sampled_from(["insert", "delete", "truncate", "duplicate-line", "swap"]))
        position = draw(st.integers(0, max(len(text) - 1, 0)))
        if kind == "insert":
            text = text[:position] + draw(st.sampled_from(_JUNK)) + text[position:]
        elif kind == "delete":
            text = text[:position] + text[position + draw(st.integers(1, 8)) :]
        elif kind == "truncate":
            text = text[:position]
        elif kind == "duplicate-line":
            lines = text.split("\n")
            line = draw(st.integers(0, len(lines) - 1))
            lines.insert(line, lines[line])
            text = "\n".join(lines)
        else:
            lines = text.split("\n")
            a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text, edits == 0


_NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
_NIH_ROWS = [
    ("00000001_000.png", "Cardiomegaly", 1, "PA"),
    ("00000001_001.png", "Effusion|Mass", 1, "AP"),
    ("00000002_000.png", "No Finding", 2, "PA"),
    ("00000003_000.png", "Nodule|Pleural_Thickening", 3, "AP"),
]


def _png(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 10), 90, dtype=np.uint8)).save(folder / name)


@QUIET
@FUZZ
@given(
    case=mutated(
        "\n".join(
            [_NIH_HEADER]
            + [f"{n},{f},0,{p},40,F,{v},2500,2048,0.168,0.168" for n, f, p, v in _NIH_ROWS]
        )
        + "\n"
    ),
    labels=st.sampled_from([NIH_LABELS, CHEXPERT_LABELS]),
    on_error=st.sampled_from(["raise", "skip"]),
)
def test_fuzz_nih_table(case: tuple[str, bool], labels: tuple[str, ...], on_error: str) -> None:
    text, intact = case
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for name, *_ in _NIH_ROWS:
            _png(root / "images", name)
        (root / "Data_Entry_2017_v2020.csv").write_text(text, encoding="utf-8")
        with _no_hang():
            try:
                data = NIHChestXray14Dataset(
                    root,
                    image_size=4,
                    labels=labels,
                    on_error=on_error,
                    progress=False,  # type: ignore[arg-type]
                )
            except (ValueError, FileNotFoundError, MissingColumnsError) as error:
                message = f"{error} {getattr(error, 'filename', '')}"
                event(f"refused: {type(error).__name__}")
            else:
                message = ""
                event("loaded")
                assert len(data) == len(data.paths) == len(data.patient_ids) == len(data.targets)
                finite = data.targets[~np.isnan(data.targets)]
                assert np.isin(finite, (0.0, 1.0)).all()
                for path in data.paths:
                    assert path.parent.parent == root.resolve()
                for index in range(len(data)):
                    assert data[index][0].shape == (1, 4, 4)
    if message:
        assert str(root) in message, f"names no file: {message}"
        assert not intact, f"the release's own table was refused: {message}"


_MIMIC_LABELS = "\n".join(
    [
        ",".join(["subject_id", "study_id", *sorted(CHEXPERT_LABELS)]),
        ",".join(["10000032", "50414267", *(["1.0", "", "-1.0", "0.0"] * 4)[:14]]),
        ",".join(["10000764", "57375967", *([""] * 13 + ["1.0"])]),
    ]
)
_MIMIC_IMAGES = (
    ("aaaa-0001", "10000032", "50414267", "PA"),
    ("aaaa-0002", "10000032", "50414267", "LATERAL"),
    ("aaaa-0003", "10000764", "57375967", "AP"),
)
_METADATA = "\n".join(
    ["dicom_id,subject_id,study_id,ViewPosition"] + [",".join(row) for row in _MIMIC_IMAGES]
)


@QUIET
@FUZZ
@given(labels=mutated(_MIMIC_LABELS + "\n"), metadata=mutated(_METADATA + "\n"))
def test_fuzz_mimic_tables(labels: tuple[str, bool], metadata: tuple[str, bool]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for dicom, subject, study, _ in _MIMIC_IMAGES:
            _png(root / f"files/p{subject[:2]}/p{subject}/s{study}", f"{dicom}.jpg")
        for role, (text, _) in (("chexpert", labels), ("metadata", metadata)):
            table = root / f"mimic-cxr-2.0.0-{role}.csv.gz"
            table.write_bytes(gzip.compress(text.encode(), mtime=0))
        with _no_hang():
            try:
                data = MIMICCXRDataset(root, image_size=4, views=None, progress=False)
            except (ValueError, FileNotFoundError, MissingColumnsError) as error:
                message = f"{error} {getattr(error, 'filename', '')}"
                event(f"refused: {type(error).__name__}")
            else:
                message = ""
                event("loaded")
                assert len(data) == len(data.targets) == len(data.patient_ids)
                assert all(patient.startswith("p") for patient in data.patient_ids)
                for path in data.paths:
                    assert str(path).startswith(str(root.resolve() / "files"))
                finite = data.targets[~np.isnan(data.targets)]
                assert np.isin(finite, (0.0, 1.0)).all()
    if message:
        assert str(root) in message, f"names no file: {message}"
        assert not (labels[1] and metadata[1]), f"valid tables were refused: {message}"


_BOXES = (
    "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
    "00013118_008.png,Atelectasis,225.08,547.01,86.77,79.18\n"
    "00014716_007.png,Infiltrate,686.1,131.5,185.4,313.4\n"
    "00029817_009.png,Mass,221.8,317.0,155.1,216.9\n"
)


@QUIET
@FUZZ
@given(case=mutated(_BOXES))
def test_fuzz_nih_boxes(case: tuple[str, bool]) -> None:
    text, intact = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "BBox_List_2017.csv"
        path.write_text(text, encoding="utf-8")
        with _no_hang():
            try:
                boxes = read_nih_boxes(path)
            except (ValueError, MissingColumnsError) as error:
                message = str(error)
            else:
                message = ""
                assert (boxes["x0"] < boxes["x1"]).all()
                assert (boxes["y0"] < boxes["y1"]).all()
                assert (boxes["x1"] <= 1024).all()
                assert boxes["label"].isin([*CHEXPERT_LABELS, ""]).all()
    if message:
        assert str(path) in message, f"names no file: {message}"
        assert not intact, f"the release's own boxes were refused: {message}"
