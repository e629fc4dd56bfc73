"""The synthetic CheXpert-format data set: real layout and encodings, boxes, determinism, reuse."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from chexviz._internal.progress import PROGRESS_LOGGER
from chexviz.data import _drawing, synthetic
from chexviz.data.boxes import BOX_COLUMNS, load_boxes, scale_boxes
from chexviz.data.labels import CHEXPERT_LABELS
from chexviz.data.synthetic import (
    LABEL_FREQUENCIES,
    MANIFEST_NAME,
    SIGN_LABELS,
    make_synthetic_chexpert,
)
from conftest import CHEXPERT_HEADER

PATH = re.compile(
    r"^CheXpert-v1\.0-small/(train|valid)/patient(\d{5})/study(\d+)/view([123])_(frontal|lateral)\.jpg$"
)
N_PATIENTS, N_VALID, SEED = 16, 4, 3


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return make_synthetic_chexpert(
        root, n_patients=N_PATIENTS, valid_patients=N_VALID, seed=SEED, workers=1
    )


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def file_digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# -- layout, header, encodings -------------------------------------------------------------------


def test_layout_matches_the_release(release: Path) -> None:
    assert release.name == "CheXpert-v1.0-small"
    names = {p.name for p in release.iterdir()}
    assert {
        "train.csv",
        "valid.csv",
        "train",
        "valid",
        "train_boxes.csv",
        "valid_boxes.csv",
    } <= names
    assert MANIFEST_NAME in names
    for split, first, count in (("train", 1, N_PATIENTS), ("valid", N_PATIENTS + 1, N_VALID)):
        _, rows = read_rows(release / f"{split}.csv")
        numbers = set()
        for row in rows:
            match = PATH.match(row["Path"])
            assert match, row["Path"]
            assert match.group(1) == split
            numbers.add(int(match.group(2)))
            # Paths are relative to the folder that contains CheXpert-v1.0-small.
            assert (release.parent / row["Path"]).is_file()
            assert match.group(5) == row["Frontal/Lateral"].lower()
        assert numbers == set(range(first, first + count))
    on_disk = {str(p.relative_to(release.parent)) for p in release.rglob("*.jpg")}
    listed = {r["Path"] for s in ("train", "valid") for r in read_rows(release / f"{s}.csv")[1]}
    assert on_disk == listed


def test_header_is_the_real_one(release: Path) -> None:
    for split in ("train", "valid"):
        header, _ = read_rows(release / f"{split}.csv")
        assert header == CHEXPERT_HEADER
    assert (release / "train_boxes.csv").read_text().splitlines()[0] == ",".join(BOX_COLUMNS)


def test_cells_use_the_real_encodings(release: Path) -> None:
    _, train = read_rows(release / "train.csv")
    _, valid = read_rows(release / "valid.csv")
    for row in train + valid:
        assert row["Sex"] in {"Male", "Female"}
        assert 18 <= int(row["Age"]) <= 90
        assert row["Age"] == str(int(row["Age"]))
        if row["Frontal/Lateral"] == "Frontal":
            assert row["AP/PA"] in {"AP", "PA"}
        else:
            assert row["Frontal/Lateral"] == "Lateral"
            assert row["AP/PA"] == ""
        others = [row[label] for label in CHEXPERT_LABELS[1:]]
        if row["No Finding"] == "1.0":
            assert "1.0" not in others
    train_cells = Counter(row[label] for row in train for label in CHEXPERT_LABELS[1:])
    assert set(train_cells) == {"1.0", "0.0", "-1.0", ""}  # uncertain and blank both occur
    assert {row["No Finding"] for row in train} == {"1.0", ""}
    valid_cells = {row[label] for row in valid for label in CHEXPERT_LABELS}
    assert valid_cells <= {"1.0", "0.0"}
    for row in valid:
        assert (row["No Finding"] == "1.0") == ("1.0" not in [row[x] for x in CHEXPERT_LABELS[1:]])


def test_studies_share_labels_and_patients_their_sex(release: Path) -> None:
    _, rows = read_rows(release / "train.csv")
    by_study: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    by_patient: dict[str, set[str]] = defaultdict(set)
    ages: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        study = row["Path"].rsplit("/", 1)[0]
        by_study[study].add(tuple(row[label] for label in CHEXPERT_LABELS))
        patient = study.rsplit("/", 1)[0]
        by_patient[patient].add(row["Sex"])
        ages[patient].append(int(row["Age"]))
    assert all(len(labels) == 1 for labels in by_study.values())
    assert all(len(sexes) == 1 for sexes in by_patient.values())
    assert all(a == sorted(a) for a in ages.values())  # studies are in time order
    studies_per_patient = Counter(s.rsplit("/", 1)[0] for s in by_study)
    assert max(studies_per_patient.values()) > 1


def test_views_include_laterals_and_several_per_study(release: Path) -> None:
    _, rows = read_rows(release / "train.csv")
    views = Counter(row["Frontal/Lateral"] for row in rows)
    assert views["Lateral"] > 0
    assert views["Frontal"] > views["Lateral"]
    assert {row["AP/PA"] for row in rows if row["Frontal/Lateral"] == "Frontal"} == {"AP", "PA"}
    assert any(PATH.match(row["Path"]).group(4) == "2" for row in rows)  # type: ignore[union-attr]
    assert all(
        PATH.match(row["Path"]).group(4) == "1"  # type: ignore[union-attr]
        for row in rows
        if row["Path"].endswith("view1_frontal.jpg") or row["Path"].endswith("view1_lateral.jpg")
    )


def test_images_are_greyscale_jpegs_of_varying_size(release: Path) -> None:
    _, rows = read_rows(release / "train.csv")
    sizes = set()
    for row in rows:
        with Image.open(release.parent / row["Path"]) as image:
            assert image.format == "JPEG"
            assert image.mode == "L"
            width, height = image.size
            assert 351 <= width <= 429
            assert 288 <= height <= 352
            sizes.add(image.size)
            pixels = np.asarray(image)
        assert pixels.std() > 20  # not a flat image
    assert len(sizes) > len(rows) // 2


# -- boxes ---------------------------------------------------------------------------------------


def test_boxes_exactly_for_frontal_positives_of_sign_labels(release: Path) -> None:
    for split in ("train", "valid"):
        _, rows = read_rows(release / f"{split}.csv")
        boxes = load_boxes(release / f"{split}_boxes.csv")
        expected = {
            (row["Path"], label)
            for row in rows
            if row["Frontal/Lateral"] == "Frontal"
            for label in SIGN_LABELS
            if row[label] == "1.0"
        }
        assert set(zip(boxes["Path"], boxes["label"], strict=True)) == expected
        assert expected  # the fixture has positives
        sizes = {}
        for path in set(boxes["Path"]):
            with Image.open(release.parent / path) as image:
                sizes[path] = image.size
        for row in boxes.itertuples():
            assert (row.width, row.height) == sizes[row.Path]
            assert 0 <= row.x0 < row.x1 <= row.width
            assert 0 <= row.y0 < row.y1 <= row.height


def test_boxes_are_much_smaller_than_the_image(release: Path) -> None:
    boxes = load_boxes(release / "train_boxes.csv")
    area = (boxes.x1 - boxes.x0) * (boxes.y1 - boxes.y0) / (boxes.width * boxes.height)
    assert area.mean() < 0.2
    assert area.max() < 0.5


def test_effusion_is_brighter_in_its_box_than_the_same_region_without_one(release: Path) -> None:
    _, rows = read_rows(release / "train.csv")
    boxes = load_boxes(release / "train_boxes.csv")
    boxes = boxes[boxes.label == "Pleural Effusion"]
    negatives = [
        r["Path"]
        for r in rows
        if r["Frontal/Lateral"] == "Frontal" and r["Pleural Effusion"] != "1.0"
    ]
    assert len(boxes) >= 3
    assert len(negatives) >= 3
    size = 128

    def load(path: str) -> np.ndarray:
        with Image.open(release.parent / path) as image:
            return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), float)

    negative_images = [load(p) for p in negatives]
    gaps = []
    for box in scale_boxes(boxes, size).itertuples():
        region = np.s_[int(box.y0) : int(np.ceil(box.y1)), int(box.x0) : int(np.ceil(box.x1))]
        inside = load(box.Path)[region].mean()
        gaps.append(inside - np.mean([img[region].mean() for img in negative_images]))
    assert np.mean(gaps) > 15


@pytest.mark.parametrize("label", SIGN_LABELS)
def test_each_sign_changes_the_image_inside_its_box(label: str) -> None:
    # The same scan drawn with and without the sign: the difference is the sign.
    for seed in range(3):
        rng = np.random.default_rng(seed)
        anatomy = _drawing.sample_anatomy(rng, female=seed == 1)
        signs = _drawing.sample_signs((label,), anatomy, rng)
        width, height = 380 + 10 * seed, 330 - 10 * seed

        base, none = _drawing.render_frontal(
            anatomy, {}, width, height, ap=seed == 2, rng=np.random.default_rng(seed + 10)
        )
        image, boxes = _drawing.render_frontal(
            anatomy, signs, width, height, ap=seed == 2, rng=np.random.default_rng(seed + 10)
        )
        assert none == {}
        assert set(boxes) == {label}
        diff = np.abs(image.astype(float) - base)
        inside = np.zeros(diff.shape, bool)
        for x0, y0, x1, y1 in boxes[label]:
            inside[y0:y1, x0:x1] = True
        assert diff[inside].mean() > 3, "the sign is hardly visible"
        assert diff[inside].sum() > 0.8 * diff.sum(), "the sign is mostly outside its box"
        assert inside.mean() < 0.3


def test_sign_labels_are_the_drawn_ones_in_csv_order() -> None:
    assert SIGN_LABELS == _drawing.DRAWN_LABELS
    assert list(SIGN_LABELS) == [label for label in CHEXPERT_LABELS if label in SIGN_LABELS]


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    labels=st.sets(st.sampled_from(SIGN_LABELS), min_size=1),
    width=st.integers(200, 480),
    height=st.integers(200, 420),
)
def test_any_combination_of_signs_gets_boxes_inside_the_image(
    seed: int, labels: set[str], width: int, height: int
) -> None:
    rng = np.random.default_rng(seed)
    anatomy = _drawing.sample_anatomy(rng, female=bool(seed % 2))
    signs = _drawing.sample_signs(tuple(labels), anatomy, rng)
    image, boxes = _drawing.render_frontal(anatomy, signs, width, height, ap=False, rng=rng)
    assert image.shape == (height, width)
    assert image.dtype == np.uint8
    assert set(boxes) == labels
    for parts in boxes.values():
        for x0, y0, x1, y1 in parts:
            assert 0 <= x0 < x1 <= width
            assert 0 <= y0 < y1 <= height


# -- label frequencies ---------------------------------------------------------------------------


def test_label_frequencies_follow_the_release() -> None:
    rng = np.random.default_rng(0)
    studies = [synthetic._sample_labels(rng, valid=False) for _ in range(6000)]
    for column, label in enumerate(CHEXPERT_LABELS):
        cells = Counter(study[column] for study in studies)
        for cell, expected in zip(
            ("1.0", "-1.0", "0.0", ""), LABEL_FREQUENCIES[label], strict=True
        ):
            observed = cells[cell] / len(studies)
            assert abs(observed - expected) < 0.02 + 0.15 * expected, (label, cell, observed)


def test_valid_labels_are_binary_with_release_positive_rates() -> None:
    rng = np.random.default_rng(1)
    studies = [synthetic._sample_labels(rng, valid=True) for _ in range(6000)]
    assert {cell for study in studies for cell in study} == {"1.0", "0.0"}
    for column, label in enumerate(CHEXPERT_LABELS[1:], start=1):
        rate = sum(study[column] == "1.0" for study in studies) / len(studies)
        assert abs(rate - LABEL_FREQUENCIES[label][0]) < 0.02 + 0.15 * LABEL_FREQUENCIES[label][0]


def test_every_frequency_row_sums_to_one() -> None:
    assert set(LABEL_FREQUENCIES) == set(CHEXPERT_LABELS)
    for row in LABEL_FREQUENCIES.values():
        assert sum(row) == pytest.approx(1.0, abs=2e-3)


# -- determinism and reuse -----------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_train_patients_do_not_depend_on_n(
    release: Path, tmp_path: Path
) -> None:
    small = make_synthetic_chexpert(tmp_path / "a", n_patients=3, valid_patients=0, seed=SEED)
    again = make_synthetic_chexpert(tmp_path / "b", n_patients=3, valid_patients=0, seed=SEED)
    assert file_digests(small) == file_digests(again)
    big = file_digests(release)
    for name, digest in file_digests(small / "train").items():
        assert big[f"train/{name}"] == digest
    _, small_rows = read_rows(small / "train.csv")
    _, big_rows = read_rows(release / "train.csv")
    assert small_rows == big_rows[: len(small_rows)]


def test_another_seed_gives_another_set(tmp_path: Path) -> None:
    a = make_synthetic_chexpert(tmp_path / "a", n_patients=2, valid_patients=0, seed=0)
    b = make_synthetic_chexpert(tmp_path / "b", n_patients=2, valid_patients=0, seed=1)
    assert (a / "train.csv").read_bytes() != (b / "train.csv").read_bytes()


def test_worker_threads_give_the_same_bytes(tmp_path: Path) -> None:
    one = make_synthetic_chexpert(tmp_path / "one", n_patients=4, valid_patients=2, workers=1)
    two = make_synthetic_chexpert(tmp_path / "two", n_patients=4, valid_patients=2, workers=2)
    assert file_digests(one) == file_digests(two)


def test_same_arguments_reuse_the_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = make_synthetic_chexpert(tmp_path, n_patients=2, valid_patients=1)
    manifest = json.loads((first / MANIFEST_NAME).read_text())
    assert manifest["arguments"] == {"n_patients": 2, "seed": 0, "valid_patients": 1}
    assert manifest["counts"]["train_images"] == len(read_rows(first / "train.csv")[1])

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated a set that should have been reused")

    with monkeypatch.context() as patch:
        patch.setattr(synthetic, "_generate", fail)
        assert make_synthetic_chexpert(tmp_path, n_patients=2, valid_patients=1) == first
        with pytest.raises(AssertionError, match="regenerated"):
            make_synthetic_chexpert(tmp_path, n_patients=3, valid_patients=1)


def test_other_arguments_replace_the_set(tmp_path: Path) -> None:
    make_synthetic_chexpert(tmp_path, n_patients=2, valid_patients=1)
    folder = make_synthetic_chexpert(tmp_path, n_patients=3, valid_patients=0)
    _, rows = read_rows(folder / "train.csv")
    assert {PATH.match(r["Path"]).group(2) for r in rows} == {"00001", "00002", "00003"}  # type: ignore[union-attr]
    assert read_rows(folder / "valid.csv")[1] == []
    assert not (folder / "valid").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["CheXpert-v1.0-small"]


def test_a_set_with_missing_files_is_regenerated(tmp_path: Path) -> None:
    folder = make_synthetic_chexpert(tmp_path, n_patients=2, valid_patients=0)
    victim = next(folder.rglob("*.jpg"))
    digest = hashlib.sha256(victim.read_bytes()).hexdigest()
    victim.unlink()
    make_synthetic_chexpert(tmp_path, n_patients=2, valid_patients=0)
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failed_run_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    calls = 0
    original = _drawing.render_frontal

    def flaky(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls > 3:
            raise RuntimeError("disk on fire")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_drawing, "render_frontal", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        make_synthetic_chexpert(tmp_path, n_patients=8, valid_patients=0, workers=workers)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_synthetic_is_never_overwritten(tmp_path: Path) -> None:
    real = tmp_path / "CheXpert-v1.0-small"
    real.mkdir()
    (real / "train.csv").write_text(",".join(CHEXPERT_HEADER) + "\n")
    with pytest.raises(FileExistsError, match="not a chexviz synthetic"):
        make_synthetic_chexpert(tmp_path, n_patients=1)
    assert (real / "train.csv").read_text() == ",".join(CHEXPERT_HEADER) + "\n"


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_patients": 0}, ValueError, "n_patients"),
        ({"n_patients": -3}, ValueError, "n_patients"),
        ({"valid_patients": -1}, ValueError, "valid_patients"),
        ({"seed": -1}, ValueError, "seed"),
        ({"workers": 0}, ValueError, "workers"),
        ({"n_patients": 2.5}, TypeError, "n_patients"),
        ({"n_patients": True}, TypeError, "n_patients"),
        ({"n_patients": "10"}, TypeError, "n_patients"),
        ({"n_patients": 99_990, "valid_patients": 10}, ValueError, "five-digit"),
    ],
)
def test_bad_arguments_are_named(
    tmp_path: Path, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        make_synthetic_chexpert(tmp_path, **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_root_that_is_a_file_is_named(tmp_path: Path) -> None:
    root = tmp_path / "file"
    root.write_text("x")
    with pytest.raises(NotADirectoryError, match=re.escape(str(root))):
        make_synthetic_chexpert(root, n_patients=1)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX, non-root")
def test_unwritable_root_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=re.escape(str(locked))):
            make_synthetic_chexpert(locked, n_patients=1)
        with pytest.raises(PermissionError, match=re.escape(str(locked / "sub"))):
            make_synthetic_chexpert(locked / "sub", n_patients=1)
    finally:
        locked.chmod(0o700)


# -- load_boxes / scale_boxes --------------------------------------------------------------------


def test_unwritable_root_is_named_even_when_running_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # root ignores permission bits, so simulate what an unprivileged user meets.
    monkeypatch.setattr(synthetic.os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match=f"{re.escape(str(tmp_path))} is not writable"):
        make_synthetic_chexpert(tmp_path, n_patients=1)

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(PermissionError, match=re.escape(str(tmp_path / "new"))):
        make_synthetic_chexpert(tmp_path / "new", n_patients=1)


def test_generation_logs_its_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A large set ran for minutes with no output in a pipe; the last patient always gets a line.
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        make_synthetic_chexpert(tmp_path, n_patients=4, valid_patients=2, seed=0)
    lines = [record.getMessage() for record in caplog.records if record.name == PROGRESS_LOGGER]
    assert lines
    assert lines[-1].startswith("synthetic CheXpert: patients 6/6 (")
    assert lines[-1].endswith("time left 0:00")
