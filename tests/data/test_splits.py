from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import Subset

from chexviz.data.dataset import CheXpertDataset
from chexviz.data.splits import REFERENCE_SPLIT, split_by_patient


class Patients:
    """A stand-in data set: only patient ids, one per item."""

    def __init__(self, images_per_patient: list[int], *, reverse: bool = False) -> None:
        ids = [f"patient{p:05d}" for p, n in enumerate(images_per_patient) for _ in range(n)]
        self.patient_ids = ids[::-1] if reverse else ids

    def __len__(self) -> int:
        return len(self.patient_ids)

    def __getitem__(self, index: int) -> str:
        return self.patient_ids[index]


def _patients_of(split: Subset[str]) -> set[str]:
    return {split.dataset.patient_ids[i] for i in split.indices}  # type: ignore[attr-defined]


def _check_disjoint(splits: tuple[Subset[str], ...]) -> None:
    seen: set[str] = set()
    for split in splits:
        patients = _patients_of(split)
        assert not patients & seen
        seen |= patients
        assert list(split.indices) == sorted(split.indices)


def test_counts_are_exact_and_patients_disjoint() -> None:
    data = Patients([1, 2, 3, 1, 1, 2, 4, 1, 2, 1] * 5)
    splits = split_by_patient(data, (40, 20, 10), seed=3)
    assert [len(split) for split in splits] == [40, 20, 10]
    _check_disjoint(splits)
    # Every image of a chosen patient is in the split.
    for split in splits:
        for patient in _patients_of(split):
            assert sum(data.patient_ids[i] == patient for i in split.indices) == (
                data.patient_ids.count(patient)
            )


def test_fractions_summing_to_one_use_every_image() -> None:
    data = Patients([2, 1, 3, 1, 1, 2, 2, 1] * 10)
    splits = split_by_patient(data, (0.7, 0.1, 0.2))
    assert sum(len(split) for split in splits) == len(data)
    assert len(splits[0]) == round(0.7 * len(data))
    assert len(splits[1]) == round(0.1 * len(data))
    _check_disjoint(splits)


def test_fractions_below_one_leave_images_out() -> None:
    data = Patients([1] * 100)
    train, test = split_by_patient(data, (0.5, 0.25))
    assert (len(train), len(test)) == (50, 25)


def test_reproducible_and_seed_dependent() -> None:
    data = Patients([1, 2, 3] * 30)
    first = split_by_patient(data, (0.6, 0.4), seed=7)
    again = split_by_patient(data, (0.6, 0.4), seed=7)
    other = split_by_patient(data, (0.6, 0.4), seed=8)
    assert [s.indices for s in first] == [s.indices for s in again]
    assert [s.indices for s in first] != [s.indices for s in other]


def test_independent_of_item_order() -> None:
    forward = Patients([1, 2, 3, 1] * 10)
    backward = Patients([1, 2, 3, 1] * 10, reverse=True)
    one = split_by_patient(forward, (30, 20), seed=1)
    two = split_by_patient(backward, (30, 20), seed=1)
    assert [_patients_of(s) for s in one] == [_patients_of(s) for s in two]


def test_reference_protocol_on_a_realistic_patient_mix() -> None:
    # About 64k patients with 1-4 frontal images each, as in train.csv (191,027 frontal rows).
    rng = np.random.default_rng(0)
    counts = rng.choice([1, 2, 3, 4, 6], size=64_000, p=[0.45, 0.25, 0.15, 0.1, 0.05]).tolist()
    data = Patients(counts)
    splits = split_by_patient(data, REFERENCE_SPLIT, seed=0)
    assert [len(split) for split in splits] == [30_000, 5_000, 5_000]
    _check_disjoint(splits)


def test_subset_input_is_flattened() -> None:
    data = Patients([2, 1, 1, 3, 1, 2] * 4)
    outer = Subset(data, list(range(5, len(data))))  # type: ignore[arg-type]
    inner = Subset(outer, list(range(2, len(outer))))
    splits = split_by_patient(inner, (0.5, 0.5), seed=2)
    assert all(split.dataset is data for split in splits)
    covered = sorted(i for split in splits for i in split.indices)
    assert covered == list(range(7, len(data)))
    _check_disjoint(splits)


def test_short_split_warns(caplog: pytest.LogCaptureFixture) -> None:
    data = Patients([2] * 5)
    with caplog.at_level(logging.WARNING, logger="chexviz.data.splits"):
        (split,) = split_by_patient(data, (3,))
    assert len(split) == 2
    assert "not 3" in caplog.text


@pytest.mark.parametrize(
    ("sizes", "error", "message"),
    [
        ((0.7, 0.4), ValueError, "sum to at most 1"),
        ((60, 50), ValueError, "ask for 110 images"),
        ((), ValueError, "at least one"),
        ((10, 0.5), TypeError, "all fractions"),
        ((0.0, 0.5), ValueError, r"\(0, 1\]"),
        ((1.5,), ValueError, r"\(0, 1\]"),
        ((-3, 5), ValueError, "positive"),
        ((True, 2), TypeError, "numbers"),
        (("10",), TypeError, "numbers"),
        ((0.001, 0.5), ValueError, "split 0 would be empty"),
    ],
)
def test_invalid_sizes(sizes: tuple[object, ...], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        split_by_patient(Patients([1] * 100), sizes)  # type: ignore[arg-type]


def test_needs_patient_ids() -> None:
    with pytest.raises(TypeError, match="patient_ids"):
        split_by_patient([1, 2, 3], (1, 1))  # type: ignore[arg-type]


def test_on_a_chexpert_dataset(make_chexpert: Callable[..., Path]) -> None:
    release = make_chexpert(patients=5, studies=2)
    data = CheXpertDataset(release, image_size=8)
    train, test = split_by_patient(data, (6, 4), seed=0)
    assert (len(train), len(test)) == (6, 4)
    assert not {data.patient_ids[i] for i in train.indices} & {
        data.patient_ids[i] for i in test.indices
    }
    assert train[0][0].shape == (1, 8, 8)


@st.composite
def _cases(draw: st.DrawFn) -> tuple[list[int], tuple[float, ...] | tuple[int, ...], int]:
    counts = draw(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=60))
    total = sum(counts)
    splits = draw(st.integers(min_value=1, max_value=4))
    if draw(st.booleans()) and total >= splits:
        sizes: tuple[float, ...] | tuple[int, ...] = tuple(
            draw(st.lists(st.integers(1, total // splits), min_size=splits, max_size=splits))
        )
    else:
        weights = draw(st.lists(st.integers(1, 10), min_size=splits, max_size=splits))
        scale = draw(st.sampled_from([1.0, 0.8]))
        sizes = tuple(scale * w / sum(weights) for w in weights)
    return counts, sizes, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=150, deadline=None)
@given(_cases())
def test_split_properties(case: tuple[list[int], tuple[float, ...] | tuple[int, ...], int]) -> None:
    counts, sizes, seed = case
    data = Patients(counts)
    try:
        splits = split_by_patient(data, sizes, seed=seed)
    except ValueError as error:
        # Only a fraction rounding to zero, or a size smaller than every patient left, fails.
        failure = str(error)
    else:
        failure = ""
    if failure:
        assert "would be empty" in failure
        return
    _check_disjoint(splits)
    assert len(splits) == len(sizes)
    fractions = isinstance(sizes[0], float)
    targets = [round(s * len(data)) if fractions else int(s) for s in sizes]
    takes_rest = fractions and abs(sum(sizes) - 1.0) < 1e-9
    for number, (split, target) in enumerate(zip(splits, targets, strict=True)):
        if takes_rest and number == len(splits) - 1:
            assert sum(len(s) for s in splits) == len(data)
        else:
            # Exact unless no remaining patient fits the gap, which is smaller than a patient.
            assert target - max(counts) < len(split) <= target
    assert [s.indices for s in splits] == [
        s.indices for s in split_by_patient(Patients(counts), sizes, seed=seed)
    ]


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 200), st.integers(0, 1000), st.data())
def test_counts_exact_with_one_image_per_patient(
    total: int, seed: int, data: st.DataObject
) -> None:
    first = data.draw(st.integers(1, total - 1))
    second = data.draw(st.integers(1, total - first))
    splits = split_by_patient(Patients([1] * total), (first, second), seed=seed)
    assert [len(split) for split in splits] == [first, second]
