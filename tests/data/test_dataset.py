from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from chexviz.data.dataset import CheXpertDataset
from chexviz.data.images import ImageDecodeError
from chexviz.data.labels import CHEXPERT_LABELS, LabelValueError, MissingColumnsError
from conftest import CHEXPERT_HEADER

MakeData = Callable[..., Path]
SIZE = 16


def _rewrite_csv(release: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    path = release / "train.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(frame).to_csv(path, index=False)


def test_header_and_label_order_match_the_release() -> None:
    assert tuple(CHEXPERT_HEADER[5:]) == CHEXPERT_LABELS


def test_items_and_attributes(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=3, studies=2)
    data = CheXpertDataset(release, image_size=SIZE, progress=False)
    assert len(data) == 6  # frontal views only: 3 patients x 2 studies
    image, target = data[0]
    assert image.shape == (1, SIZE, SIZE)
    assert image.dtype == torch.float32
    assert 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
    assert target.shape == (14,)
    assert target.dtype == torch.float32
    assert data.labels == CHEXPERT_LABELS
    assert data.patient_ids == ["patient00001"] * 2 + ["patient00002"] * 2 + ["patient00003"] * 2
    assert data.frame["patient_id"].tolist() == data.patient_ids
    assert all(path.is_absolute() and path.is_file() for path in data.paths)
    assert data.paths[0] == (release / "train/patient00001/study1/view1_frontal.jpg").resolve()
    assert data.targets.shape == (6, 14)
    assert set(data.frame["Frontal/Lateral"]) == {"Frontal"}
    assert list(data.frame.columns) == [*CHEXPERT_HEADER, "patient_id"]
    # The index keeps the CSV row: laterals (odd rows) were filtered out.
    assert data.frame.index.tolist() == [0, 2, 4, 6, 8, 10]
    assert data.num_skipped == 0
    assert data.image_size == SIZE
    assert data.in_channels == 1
    assert data.cache is None
    assert "6 items" in repr(data)
    assert torch.equal(data[-1][1], data[5][1])
    with pytest.raises(IndexError):
        data[6]


def test_frame_labels_are_parsed_cells(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=4)
    data = CheXpertDataset(release, image_size=SIZE, uncertainty="ignore", blank="ignore")
    raw = data.frame[list(CHEXPERT_LABELS)].to_numpy(dtype=np.float32)
    assert set(np.unique(raw[~np.isnan(raw)])) <= {-1.0, 0.0, 1.0}
    # with both policies "ignore", targets are the cells with -1 turned to NaN
    expected = np.where(raw == -1.0, np.nan, raw)
    np.testing.assert_array_equal(data.targets, expected)
    csv = pd.read_csv(release / "train.csv", dtype=str, keep_default_na=False)
    first = csv.iloc[0]
    for j, name in enumerate(CHEXPERT_LABELS):
        cell = first[name]
        assert (np.isnan(raw[0, j]) and cell == "") or raw[0, j] == float(cell)


def test_root_may_be_parent_or_release_folder(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=2)
    from_parent = CheXpertDataset(release.parent, image_size=SIZE)
    from_release = CheXpertDataset(release, image_size=SIZE)
    assert from_parent.paths == from_release.paths
    assert from_parent.csv_path == from_release.csv_path
    assert torch.equal(from_parent[1][0], from_release[1][0])


def test_renamed_release_folder(make_chexpert: MakeData, tmp_path: Path) -> None:
    release = make_chexpert(patients=2)
    renamed = release.rename(tmp_path / "chexpert")
    data = CheXpertDataset(renamed, image_size=SIZE)
    assert data.paths[0] == (renamed / "train/patient00001/study1/view1_frontal.jpg").resolve()


def test_full_release_prefix(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=2, folder="CheXpert-v1.0")
    data = CheXpertDataset(release.parent, image_size=SIZE)
    assert data.image_root.name == "CheXpert-v1.0"
    assert len(data) == 4


def test_prefix_mismatch_is_logged(
    make_chexpert: MakeData, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    release = make_chexpert(patients=2, folder="CheXpert-v1.0")
    small = release.rename(tmp_path / "CheXpert-v1.0-small")
    with caplog.at_level(logging.WARNING):
        data = CheXpertDataset(small, image_size=SIZE)
    assert len(data) == 4
    assert "CheXpert-v1.0/" in caplog.text


def test_both_releases_is_ambiguous(make_chexpert: MakeData) -> None:
    small = make_chexpert(patients=1)
    make_chexpert(patients=1, folder="CheXpert-v1.0")
    with pytest.raises(ValueError, match="both"):
        CheXpertDataset(small.parent, image_size=SIZE)
    assert len(CheXpertDataset(small, image_size=SIZE)) == 2


def test_csv_by_name_and_absolute_path(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=3, csv_name="valid.csv", split="valid")
    data = CheXpertDataset(release.parent, "valid.csv", image_size=SIZE)
    assert "valid" in str(data.paths[0])
    absolute = CheXpertDataset(release, release / "valid.csv", image_size=SIZE)
    assert absolute.paths == data.paths
    with pytest.raises(FileNotFoundError, match=r"train\.csv"):
        CheXpertDataset(release, image_size=SIZE)
    with pytest.raises(FileNotFoundError, match="root"):
        CheXpertDataset(release / "nowhere", image_size=SIZE)


def test_laterals_kept_on_request(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=2)
    data = CheXpertDataset(release, image_size=SIZE, frontal_only=False)
    assert len(data) == 8
    assert set(data.frame["Frontal/Lateral"]) == {"Frontal", "Lateral"}


def test_frontal_filter_without_view_column(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=2)
    _rewrite_csv(release, lambda frame: frame.drop(columns=["Frontal/Lateral", "AP/PA"]))
    data = CheXpertDataset(release, image_size=SIZE)
    assert len(data) == 4
    assert all(path.name.endswith("_frontal.jpg") for path in data.paths)


def test_policies_reach_the_targets(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=6)
    zeros = CheXpertDataset(release, image_size=SIZE)
    mixed = CheXpertDataset(
        release, image_size=SIZE, uncertainty={"Atelectasis": "ones", "Edema": "ones"}
    )
    raw = zeros.frame[list(CHEXPERT_LABELS)].to_numpy(dtype=np.float32)
    for j, name in enumerate(CHEXPERT_LABELS):
        uncertain = raw[:, j] == -1.0
        assert (zeros.targets[uncertain, j] == 0.0).all()
        expected = 1.0 if name in ("Atelectasis", "Edema") else 0.0
        assert (mixed.targets[uncertain, j] == expected).all()
    assert mixed.uncertainty[CHEXPERT_LABELS.index("Edema")] == "ones"
    subset = CheXpertDataset(release, image_size=SIZE, labels=("Edema", "Cardiomegaly"))
    assert subset.targets.shape == (len(subset), 2)
    assert subset[0][1].shape == (2,)


def test_three_channels(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=1)
    grey = CheXpertDataset(release, image_size=SIZE)
    rgb = CheXpertDataset(release, image_size=SIZE, in_channels=3)
    image = rgb[0][0]
    assert image.shape == (3, SIZE, SIZE)
    assert torch.equal(image[1], grey[0][0][0])


def test_transform_applies_to_images(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=1)
    data = CheXpertDataset(release, image_size=SIZE, transform=lambda image: image.flip(-1))
    plain = CheXpertDataset(release, image_size=SIZE)
    assert torch.equal(data[0][0], plain[0][0].flip(-1))


def test_cache_matches_lazy_and_is_reused(
    make_chexpert: MakeData, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    release = make_chexpert(patients=3)
    lazy = CheXpertDataset(release, image_size=SIZE)
    with caplog.at_level(logging.INFO, logger="chexviz.data.cache"):
        cached = CheXpertDataset(release, image_size=SIZE, cache_dir=tmp_path / "c", progress=False)
    assert "building image cache" in caplog.text
    assert cached.cache is not None
    for index in range(len(lazy)):
        assert torch.equal(cached[index][0], lazy[index][0])
        torch.testing.assert_close(cached[index][1], lazy[index][1], rtol=0, atol=0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="chexviz.data.cache"):
        again = CheXpertDataset(release, image_size=SIZE, cache_dir=tmp_path / "c", in_channels=3)
    assert "using image cache" in caplog.text
    assert again.cache is not None
    assert again.cache.path == cached.cache.path
    assert torch.equal(again[2][0][0], lazy[2][0][0])
    other = CheXpertDataset(release, image_size=SIZE * 2, cache_dir=tmp_path / "c")
    assert other.cache is not None
    assert other.cache.path != cached.cache.path
    laterals = CheXpertDataset(
        release, image_size=SIZE, cache_dir=tmp_path / "c", frontal_only=False
    )
    assert laterals.cache is not None
    assert laterals.cache.path != cached.cache.path


def test_cached_dataset_pickles_without_pixels(make_chexpert: MakeData, tmp_path: Path) -> None:
    release = make_chexpert(patients=2)
    data = CheXpertDataset(release, image_size=64, cache_dir=tmp_path / "c")
    data[0]  # opens the memory map
    clone = pickle.loads(pickle.dumps(data))
    assert torch.equal(clone[3][0], data[3][0])
    assert len(pickle.dumps(data)) < 64 * 64 * len(data)


def test_dataloader_batches(make_chexpert: MakeData, tmp_path: Path) -> None:
    release = make_chexpert(patients=3)
    data = CheXpertDataset(release, image_size=SIZE, cache_dir=tmp_path / "c", blank="ignore")
    images, targets = next(iter(DataLoader(data, batch_size=4)))
    assert images.shape == (4, 1, SIZE, SIZE)
    assert targets.shape == (4, 14)


def test_missing_columns_are_listed(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=1)
    _rewrite_csv(release, lambda frame: frame.drop(columns=["Edema", "Fracture"]))
    with pytest.raises(MissingColumnsError, match=r"train\.csv.*'Edema', 'Fracture'"):
        CheXpertDataset(release, image_size=SIZE)
    # Only the labels asked for are required.
    assert len(CheXpertDataset(release, image_size=SIZE, labels=("Cardiomegaly",))) == 2


def test_invalid_label_names_line_and_column(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=2)

    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[2, "Pneumonia"] = "2.0"
        return frame

    _rewrite_csv(release, corrupt)
    with pytest.raises(LabelValueError, match=r"train\.csv line 4, column 'Pneumonia'.*'2\.0'"):
        CheXpertDataset(release, image_size=SIZE)


@pytest.mark.parametrize(
    "bad_path",
    [
        "/etc/passwd",
        "CheXpert-v1.0-small/../../secret.jpg",
        "C:\\data\\x.jpg",
        "../x/patient1/a.jpg",
    ],
)
def test_path_escaping_the_root_names_the_line(make_chexpert: MakeData, bad_path: str) -> None:
    release = make_chexpert(patients=2)

    def escape(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[2, "Path"] = bad_path
        return frame

    _rewrite_csv(release, escape)
    with pytest.raises(ValueError, match=r"line 4: Path .* escapes"):
        CheXpertDataset(release, image_size=SIZE)


def test_path_without_patient_folder(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=2)

    def rename(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[0, "Path"] = "CheXpert-v1.0-small/train/x/study1/view1_frontal.jpg"
        return frame

    _rewrite_csv(release, rename)
    with pytest.raises(ValueError, match="line 2: no patient folder"):
        CheXpertDataset(release, image_size=SIZE)


def test_invalid_view_value(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=1)

    def typo(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[1, "Frontal/Lateral"] = "Frontl"
        return frame

    _rewrite_csv(release, typo)
    with pytest.raises(ValueError, match="line 3, column 'Frontal/Lateral': 'Frontl'"):
        CheXpertDataset(release, image_size=SIZE)


def test_missing_image_names_file_and_line(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=2)
    (release / "train/patient00002/study1/view1_frontal.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 4.*line 6.*patient00002/study1"):
        CheXpertDataset(release, image_size=SIZE)
    with pytest.raises(FileNotFoundError, match=r"line 6.*patient00002/study1"):
        CheXpertDataset(release, image_size=SIZE, cache_dir=release.parent / "c")


def test_all_images_missing_hints_at_root(make_chexpert: MakeData, tmp_path: Path) -> None:
    release = make_chexpert(patients=1)
    elsewhere = tmp_path / "csv-only"
    elsewhere.mkdir()
    (elsewhere / "train.csv").write_text((release / "train.csv").read_text())
    with pytest.raises(FileNotFoundError, match="none of the 2 image files exist"):
        CheXpertDataset(elsewhere, image_size=SIZE)


def _corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def test_corrupt_image_lazy_read_names_file_and_line(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=2)
    _corrupt(release / "train/patient00001/study2/view1_frontal.jpg")
    data = CheXpertDataset(release, image_size=SIZE)
    data[0]
    with pytest.raises(ImageDecodeError, match=r"patient00001/study2/view1_frontal\.jpg.*line 4"):
        data[1]


def test_corrupt_image_fails_the_cache_build(make_chexpert: MakeData, tmp_path: Path) -> None:
    release = make_chexpert(patients=2)
    _corrupt(release / "train/patient00001/study2/view1_frontal.jpg")
    with pytest.raises(ImageDecodeError, match=r"study2/view1_frontal\.jpg.*line 4"):
        CheXpertDataset(release, image_size=SIZE, cache_dir=tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []


@pytest.mark.parametrize("cached", [False, True])
def test_skip_drops_unreadable_rows_and_reports_them(
    make_chexpert: MakeData, tmp_path: Path, caplog: pytest.LogCaptureFixture, cached: bool
) -> None:
    release = make_chexpert(patients=3)
    (release / "train/patient00002/study1/view1_frontal.jpg").unlink()
    (release / "train/patient00003/study2/view1_frontal.jpg").write_text("garbage")
    full = CheXpertDataset(release, image_size=SIZE, on_error="skip", frontal_only=False)
    cache_dir = tmp_path / "c" if cached else None
    with caplog.at_level(logging.WARNING):
        data = CheXpertDataset(release, image_size=SIZE, on_error="skip", cache_dir=cache_dir)
    assert "skipped 2 of 6" in caplog.text
    assert data.num_skipped == 2
    assert len(data) == 4
    assert data.skipped.index.tolist() == [4, 10]
    assert "not found" in data.skipped["error"].iloc[0]
    assert "line 12" in data.skipped["error"].iloc[1]
    missing = release.resolve() / "train/patient00002/study1/view1_frontal.jpg"
    assert missing not in data.paths
    assert len(data.patient_ids) == len(data.targets) == len(data.frame) == 4
    kept_rows = full.frame.index.get_indexer(data.frame.index)
    np.testing.assert_array_equal(data.targets, full.targets[kept_rows])
    for index in range(len(data)):
        data[index]
    if cached:
        with pytest.raises(ImageDecodeError, match="recorded as unreadable"):
            CheXpertDataset(release, image_size=SIZE, cache_dir=cache_dir)


def test_skip_with_nothing_readable(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=1, lateral=False, studies=1)
    (release / "train/patient00001/study1/view1_frontal.jpg").unlink()
    with pytest.raises(ValueError, match="none of the 1 images could be read"):
        CheXpertDataset(release, image_size=SIZE, on_error="skip")


def test_lateral_only_csv_is_empty_after_filtering(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=1)
    _rewrite_csv(release, lambda frame: frame[frame["Frontal/Lateral"] == "Lateral"])
    with pytest.raises(ValueError, match="no frontal image"):
        CheXpertDataset(release, image_size=SIZE)


def test_empty_csv(make_chexpert: MakeData) -> None:
    release = make_chexpert(patients=1)
    _rewrite_csv(release, lambda frame: frame.iloc[:0])
    with pytest.raises(ValueError, match="no rows"):
        CheXpertDataset(release, image_size=SIZE)
    (release / "train.csv").write_text("")
    with pytest.raises(ValueError, match="empty"):
        CheXpertDataset(release, image_size=SIZE)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image_size": 0}, "image_size"),
        ({"in_channels": 2}, "in_channels"),
        ({"on_error": "ignore"}, "on_error"),
        ({"blank": "ones"}, "blank"),
        ({"uncertainty": "U-Ones"}, "uncertainty"),
        ({"labels": ()}, "labels"),
        ({"labels": ("Edema", "Edema")}, "repeated"),
        ({"workers": 0}, "workers"),
    ],
)
def test_invalid_arguments(
    make_chexpert: MakeData, options: dict[str, object], message: str
) -> None:
    release = make_chexpert(patients=1)
    with pytest.raises(ValueError, match=message):
        CheXpertDataset(release, **options)  # type: ignore[arg-type]


def test_center_crop_dataset_items_and_cache(make_chexpert: MakeData, tmp_path: Path) -> None:
    from chexviz.data.images import load_image, to_tensor

    release = make_chexpert(patients=2, studies=1)
    whole = CheXpertDataset(release, image_size=SIZE, progress=False, cache_dir=tmp_path / "c")
    center = CheXpertDataset(
        release, image_size=SIZE, crop="center", progress=False, cache_dir=tmp_path / "c"
    )
    lazy = CheXpertDataset(release, image_size=SIZE, crop="center", progress=False)
    expected = to_tensor(load_image(center.paths[0], size=SIZE, crop="center"))
    assert torch.equal(center[0][0], expected)
    assert torch.equal(lazy[0][0], expected)
    assert not torch.equal(whole[0][0], expected)
    assert whole.cache is not None
    assert center.cache is not None
    assert whole.cache.path != center.cache.path
    assert "crop='center'" in repr(center)
    assert "crop=" not in repr(whole)
    with pytest.raises(ValueError, match="crop must be 'whole' or 'center'"):
        CheXpertDataset(release, image_size=SIZE, crop="middle", progress=False)  # type: ignore[arg-type]
