import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import Subset

from chexviz.data.boxes import load_boxes, scale_boxes
from chexviz.data.dataset import CheXpertDataset
from chexviz.data.labels import CHEXPERT_LABELS
from chexviz.data.synthetic import make_synthetic_chexpert
from chexviz.evaluate.localization import (
    anatomical_prior,
    box_iou,
    box_mask,
    chance_pointing_rate,
    energy_in_box,
    pointing_game,
    score_localization,
    select_boxes,
    summarize_localization,
    unscored_boxes,
)
from chexviz.explain.explanation import Explanation
from chexviz.explain.gradcam import GradCAM
from chexviz.explain.overlay import map_peak
from chexviz.models.classifier import MultiLabelClassifier

SIZE = 16


@st.composite
def int_boxes(draw: st.DrawFn, size: int = SIZE) -> tuple[int, int, int, int]:
    x0 = draw(st.integers(0, size - 1))
    y0 = draw(st.integers(0, size - 1))
    x1 = draw(st.integers(x0 + 1, size))
    y1 = draw(st.integers(y0 + 1, size))
    return x0, y0, x1, y1


maps = st.lists(st.floats(0, 1), min_size=SIZE * SIZE, max_size=SIZE * SIZE).map(
    lambda values: np.asarray(values).reshape(SIZE, SIZE)
)


def test_integer_box_selects_the_slice() -> None:
    mask = box_mask((2, 1, 5, 3), (4, 6))
    expected = np.zeros((4, 6), dtype=bool)
    expected[1:3, 2:5] = True
    np.testing.assert_array_equal(mask, expected)


def test_fractional_box_covers_every_overlapped_pixel_and_is_clipped() -> None:
    mask = box_mask((0.5, 0.2, 1.2, 0.9), (3, 3))
    np.testing.assert_array_equal(mask, [[True, True, False], [False] * 3, [False] * 3])
    # a scaled edge with float error does not spill into the next pixel
    np.testing.assert_array_equal(box_mask((0, 0, 2.0000000001, 1), (1, 3)), [[True, True, False]])
    # past the edge: clipped
    assert box_mask((-5, -5, 1, 1), (3, 3)).sum() == 1


def test_several_boxes_form_a_union() -> None:
    mask = box_mask([(0, 0, 1, 1), (2, 2, 3, 3)], (3, 3))
    assert mask.sum() == 2
    assert mask[0, 0]
    assert mask[2, 2]


def test_bad_boxes() -> None:
    with pytest.raises(ValueError, match="empty"):
        box_mask((2, 0, 2, 3), (4, 4))
    with pytest.raises(ValueError, match="outside the 4x4 map"):
        box_mask((5, 5, 9, 9), (4, 4))
    with pytest.raises(ValueError, match="shape"):
        box_mask((1, 2, 3), (4, 4))
    with pytest.raises(ValueError, match="finite"):
        box_mask((0, 0, float("nan"), 2), (4, 4))


def test_pointing_game_hits_and_misses() -> None:
    heat = torch.zeros(8, 8)
    heat[2, 3] = 1.0
    assert pointing_game(heat, (3, 2, 4, 3))
    assert not pointing_game(heat, (4, 2, 8, 8))
    assert pointing_game(heat, [(4, 2, 8, 8), (0, 0, 4, 4)])


def test_pointing_game_scores_one_point_and_constant_maps_none() -> None:
    heat = np.zeros((4, 4))
    heat[0, 3] = heat[3, 0] = 1.0
    # tied maxima: the first in row-major order (top-most, then left-most) is the one point
    assert map_peak(heat) == (0, 3)
    assert pointing_game(heat, (3, 0, 4, 1))
    assert not pointing_game(heat, (0, 3, 1, 4))  # the other maximum does not count
    assert map_peak(np.zeros((4, 4))) is None
    assert not pointing_game(np.zeros((4, 4)), (0, 0, 4, 4))  # a flat map points nowhere
    assert not pointing_game(np.full((4, 4), 0.3), (0, 0, 2, 2))


def test_an_upsampled_corner_plateau_is_one_point_not_a_border_of_hits() -> None:
    """Bilinear upsampling of a 2x2 map with its maximum in a corner cell gives a plateau of
    tied pixels along two borders; only one of them may count."""
    raw = torch.tensor([[0.0, 0.0], [0.0, 1.0]])[None, None]
    heat = torch.nn.functional.interpolate(raw, size=(16, 16), mode="bilinear")[0, 0]
    plateau = heat == heat.max()
    assert plateau.sum() > 1
    peak = map_peak(heat)
    assert peak is not None
    assert plateau[peak]
    assert peak == (12, 12)  # the plateau is the 4x4 corner square; its first pixel points
    # a box over the rest of the plateau: "any tied maximum" would call it a hit
    beside = (13, 12, 16, 16)
    assert plateau.numpy()[box_mask(beside, (16, 16))].any()
    assert not pointing_game(heat, beside)
    assert pointing_game(heat, (12, 12, 13, 13))


def test_box_iou_values() -> None:
    heat = np.zeros((4, 4))
    heat[0:2, 0:2] = 1.0
    assert box_iou(heat, (0, 0, 2, 2)) == 1.0
    assert box_iou(heat, (0, 0, 4, 2)) == pytest.approx(0.5)
    assert box_iou(heat, (2, 2, 4, 4)) == 0.0
    assert box_iou(np.zeros((4, 4)), (0, 0, 2, 2)) == 0.0
    assert box_iou(heat, (0, 0, 1, 1), threshold=0.0) == pytest.approx(1 / 16)
    with pytest.raises(ValueError, match="threshold"):
        box_iou(heat, (0, 0, 1, 1), threshold=float("nan"))


def test_energy_in_box_values() -> None:
    heat = np.zeros((2, 2))
    heat[0, 0] = 3.0
    heat[1, 1] = 1.0
    assert energy_in_box(heat, (0, 0, 1, 1)) == pytest.approx(0.75)
    assert energy_in_box(np.zeros((2, 2)), (0, 0, 2, 2)) == 0.0
    assert energy_in_box(np.ones((2, 2)), (0, 0, 1, 2)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="non-negative"):
        energy_in_box(-heat, (0, 0, 1, 1))


def test_bad_maps() -> None:
    with pytest.raises(ValueError, match="2-D"):
        pointing_game(np.zeros((1, 2, 2)), (0, 0, 1, 1))
    with pytest.raises(ValueError, match="NaN"):
        energy_in_box(np.full((2, 2), np.nan), (0, 0, 1, 1))
    with pytest.raises(TypeError, match="heatmap must be"):
        box_iou([[1.0]], (0, 0, 1, 1))


def test_chance_rate_of_box_sequences() -> None:
    boxes = [(0, 0, 8, 8), [(0, 0, 4, 4), (12, 12, 16, 16)]]
    assert chance_pointing_rate(boxes, 16) == pytest.approx((0.25 + 2 * 16 / 256) / 2)
    with pytest.raises(ValueError, match="no boxes"):
        chance_pointing_rate([], 16)


@settings(max_examples=60, deadline=None)
@given(box=int_boxes(), data=st.data())
def test_single_peak_inside_box_always_hits(box: tuple[int, int, int, int], data: st.DataObject):
    x0, y0, x1, y1 = box
    row = data.draw(st.integers(y0, y1 - 1))
    col = data.draw(st.integers(x0, x1 - 1))
    heat = data.draw(maps) * 0.9
    heat[row, col] = 1.0
    assert pointing_game(heat, box)
    assert energy_in_box(heat, box) > 0


@settings(max_examples=60, deadline=None)
@given(box=int_boxes(), heat=maps, threshold=st.floats(0, 1))
def test_scores_lie_in_unit_interval(
    box: tuple[int, int, int, int], heat: np.ndarray, threshold: float
) -> None:
    assert 0.0 <= box_iou(heat, box, threshold) <= 1.0
    assert 0.0 <= energy_in_box(heat, box) <= 1.0


@settings(max_examples=60, deadline=None)
@given(box=int_boxes())
def test_box_indicator_map_scores_perfectly(box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    heat = np.zeros((SIZE, SIZE))
    heat[y0:y1, x0:x1] = 1.0
    assert box_iou(heat, box) == 1.0
    assert energy_in_box(heat, box) == 1.0
    area = (x1 - x0) * (y1 - y0) / SIZE**2
    assert chance_pointing_rate([box], SIZE) == pytest.approx(area)
    assert pointing_game(heat, box) == (area < 1.0)


@settings(max_examples=60, deadline=None)
@given(box=int_boxes(), heat=maps)
def test_energy_of_the_complement_adds_up(box: tuple[int, int, int, int], heat: np.ndarray):
    # energy inside + energy in the rest of the map = 1 when the map has any mass
    if heat.sum() == 0:
        return
    inside = energy_in_box(heat, box)
    outside_heat = heat * ~box_mask(box, heat.shape)
    assert inside == pytest.approx(1 - outside_heat.sum() / heat.sum(), abs=1e-9)


# --------------------------------------------------------------------------------------------
# score_localization on a synthetic data set

SYNTH_SIZE = 48


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[CheXpertDataset, pd.DataFrame]:
    release = make_synthetic_chexpert(
        tmp_path_factory.mktemp("synthetic"), n_patients=4, valid_patients=8, workers=1
    )
    dataset = CheXpertDataset(release.parent, "valid.csv", image_size=SYNTH_SIZE, progress=False)
    return dataset, load_boxes(release / "valid_boxes.csv")


class OracleCAM:
    """Answers with heatmaps built from the boxes themselves (or their complement)."""

    def __init__(
        self,
        dataset: CheXpertDataset,
        boxes: pd.DataFrame,
        *,
        predicted: frozenset[str] | None = None,
        invert: bool = False,
    ) -> None:
        self.path_of = {
            dataset[i][0].numpy().tobytes(): str(path) for i, path in enumerate(dataset.frame.Path)
        }
        self.boxes = scale_boxes(boxes, dataset.image_size)
        self.predicted = predicted
        self.invert = invert
        self.calls: list[int] = []

    def explain(
        self, images: torch.Tensor, classes: Sequence[Sequence[str]] | None, /
    ) -> Explanation:
        self.calls.append(len(images))
        batch = len(images)
        probabilities = torch.full((batch, len(CHEXPERT_LABELS)), 0.1)
        wanted: list[tuple[str, ...]] = []
        maps: list[dict[str, torch.Tensor]] = []
        for b, image in enumerate(images):
            path = self.path_of[image.numpy().tobytes()]
            rows = self.boxes[self.boxes.Path == path]
            boxed = tuple(dict.fromkeys(rows.label))
            if self.predicted is None:
                assert classes is not None
                names = tuple(classes[b])
                assert set(names) == set(boxed)
            else:
                assert classes is None
                names = tuple(label for label in boxed if label in self.predicted)
            for label in names:
                probabilities[b, CHEXPERT_LABELS.index(label)] = 0.9
            per_class = {}
            for label in names:
                mask = box_mask(
                    rows[rows.label == label][["x0", "y0", "x1", "y1"]].to_numpy(),
                    (SYNTH_SIZE,) * 2,
                )
                per_class[label] = torch.from_numpy((mask != self.invert).astype(np.float32))
            wanted.append(names)
            maps.append(per_class)
        return Explanation(
            images=images,
            labels=CHEXPERT_LABELS,
            probabilities=probabilities,
            thresholds=torch.full((len(CHEXPERT_LABELS),), 0.5),
            classes=tuple(wanted),
            heatmaps=tuple(maps),
            raw_maps=tuple({k: v[::8, ::8] for k, v in m.items()} for m in maps),
            zero_maps=tuple(frozenset() for _ in range(batch)),
            layer="oracle",
            method="gradcam",
        )


def _expected_findings(dataset: CheXpertDataset, boxes: pd.DataFrame) -> pd.DataFrame:
    kept = boxes[boxes.Path.isin(set(dataset.frame.Path))]
    return kept.groupby(["Path", "label"], sort=False).size().rename("n_boxes").reset_index()


def test_oracle_maps_score_perfectly(synthetic: tuple[CheXpertDataset, pd.DataFrame]) -> None:
    dataset, boxes = synthetic
    cam = OracleCAM(dataset, boxes)
    scores = score_localization(cam, dataset, boxes, classes="true", batch_size=3, progress=False)
    expected = _expected_findings(dataset, boxes)
    assert len(scores) == len(expected) > 0
    assert scores["n_boxes"].sum() == expected["n_boxes"].sum()
    assert (scores["n_boxes"] > 1).any()  # a bilateral finding or two devices
    assert scores["explained"].all()
    assert scores["predicted"].all()
    assert scores["hit"].all()
    assert (scores["iou"] == 1.0).all()
    assert (scores["energy"] == 1.0).all()
    assert ((scores["chance"] > 0) & (scores["chance"] < 1)).all()
    # every image goes through the explainer once, in batches of at most 3
    assert sum(cam.calls) == scores["index"].nunique()
    assert max(cam.calls) <= 3
    # index points at the dataset item of the row's image
    for item, path in zip(scores["index"], scores["Path"], strict=True):
        assert dataset.frame.Path.iloc[item] == path
    assert scores.dtypes["hit"] == "boolean"
    assert list(scores.columns) == [
        "index",
        "Path",
        "label",
        "n_boxes",
        "probability",
        "predicted",
        "explained",
        "zero_map",
        "hit",
        "iou",
        "energy",
        "chance",
        "prior_hit",
        "prior_iou",
        "prior_energy",
    ]
    assert scores["prior_hit"].isna().all()  # no prior given


def test_chance_is_the_box_fraction_at_dataset_size(
    synthetic: tuple[CheXpertDataset, pd.DataFrame],
) -> None:
    dataset, boxes = synthetic
    scores = score_localization(
        OracleCAM(dataset, boxes), dataset, boxes, classes="true", progress=False
    )
    first = scores.iloc[0]
    rows = boxes[(boxes.Path == first.Path) & (boxes.label == first.label)]
    scaled = scale_boxes(rows, SYNTH_SIZE)[["x0", "y0", "x1", "y1"]].to_numpy()
    assert first.chance == pytest.approx(box_mask(scaled, (SYNTH_SIZE, SYNTH_SIZE)).mean())
    kept = boxes[boxes.Path.isin(set(dataset.frame.Path))]
    assert chance_pointing_rate(kept, SYNTH_SIZE) == pytest.approx(scores["chance"].mean())


def test_maps_off_the_box_miss(synthetic: tuple[CheXpertDataset, pd.DataFrame]) -> None:
    dataset, boxes = synthetic
    cam = OracleCAM(dataset, boxes, invert=True)
    scores = score_localization(cam, dataset, boxes, classes="true", progress=False)
    assert not scores["hit"].any()
    assert (scores["energy"] == 0.0).all()
    assert (scores["iou"] == 0.0).all()


def test_positives_mode_keeps_missed_findings_unscored(
    synthetic: tuple[CheXpertDataset, pd.DataFrame],
) -> None:
    dataset, boxes = synthetic
    detected = frozenset({"Support Devices", "Pleural Effusion"})
    cam = OracleCAM(dataset, boxes, predicted=detected)
    scores = score_localization(cam, dataset, boxes, progress=False)
    assert len(scores) == len(_expected_findings(dataset, boxes))
    explained = scores["label"].isin(detected)
    assert (scores["explained"] == explained).all()
    assert (scores["predicted"] == explained).all()
    assert scores.loc[~explained, "hit"].isna().all()
    assert scores.loc[~explained, "iou"].isna().all()
    assert scores.loc[explained, "hit"].all()
    summary = summarize_localization(scores, min_findings=1)
    assert summary.loc["overall", "findings"] == len(scores)
    assert summary.loc["overall", "explained"] == explained.sum()
    assert summary.loc["overall", "hit_rate"] == 1.0
    for label in set(scores["label"]) - detected:
        assert np.isnan(summary.loc[label, "hit_rate"])


def test_subsets_and_box_paths_without_release_folder(
    synthetic: tuple[CheXpertDataset, pd.DataFrame],
) -> None:
    dataset, boxes = synthetic
    subset = Subset(dataset, [4, 1, 2])
    stripped = boxes.assign(Path=boxes.Path.str.replace("CheXpert-v1.0-small/", "", regex=False))
    scores = score_localization(
        OracleCAM(dataset, boxes),
        subset,
        stripped,
        classes="true",
        progress=False,
    )
    wanted = {str(dataset.frame.Path.iloc[i]).split("/", 1)[1] for i in (4, 1, 2)}
    assert set(scores["Path"]) <= wanted
    for item, path in zip(scores["index"], scores["Path"], strict=True):
        assert "CheXpert-v1.0-small/" + path == dataset.frame.Path.iloc[subset.indices[item]]


def test_score_localization_errors(synthetic: tuple[CheXpertDataset, pd.DataFrame]) -> None:
    dataset, boxes = synthetic
    cam = OracleCAM(dataset, boxes)
    elsewhere = boxes.assign(Path=boxes.Path.str.replace("valid/", "train/", regex=False))
    with pytest.raises(ValueError, match="another split"):
        score_localization(cam, dataset, elsewhere, classes="true", progress=False)
    with pytest.raises(KeyError, match="width"):
        score_localization(cam, dataset, boxes.drop(columns="width"), progress=False)
    with pytest.raises(ValueError, match="classes"):
        score_localization(cam, dataset, boxes, classes="all", progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="CheXpertDataset"):
        score_localization(cam, [(torch.zeros(1, 4, 4), torch.zeros(14))], boxes)  # type: ignore[arg-type]


def test_a_transformed_dataset_is_refused_not_scored_against_unmoved_boxes(
    synthetic: tuple[CheXpertDataset, pd.DataFrame],
) -> None:
    dataset, boxes = synthetic
    flipped = CheXpertDataset(
        dataset.image_root,
        "valid.csv",
        image_size=SYNTH_SIZE,
        transform=lambda image: image.flip(-1),
        progress=False,
    )
    with pytest.raises(ValueError, match="transform=None"):
        score_localization(OracleCAM(dataset, boxes), Subset(flipped, [0, 1]), boxes)


def test_boxes_of_labels_the_model_lacks_are_left_out_and_counted(
    synthetic: tuple[CheXpertDataset, pd.DataFrame], caplog: pytest.LogCaptureFixture
) -> None:
    dataset, boxes = synthetic
    model = MultiLabelClassifier(
        "simple_cnn", labels=("Cardiomegaly", "Edema"), image_size=SYNTH_SIZE
    )
    cam = GradCAM(model)
    left = unscored_boxes(boxes, model.labels)
    assert set(left["reason"]) == {"not an output of the model"}
    assert not left["label"].isin(model.labels).any()
    assert len(left) + int(boxes["label"].isin(model.labels).sum()) == len(boxes)
    with caplog.at_level(logging.WARNING):
        scores = score_localization(cam, dataset, boxes, classes="true", progress=False)
    assert set(scores["label"]) <= {"Cardiomegaly", "Edema"}
    assert f"left out {len(left)} of {len(boxes)} boxes (not an output of the model)" in (
        caplog.text
    )
    assert "Support Devices" in caplog.text
    only = MultiLabelClassifier("simple_cnn", labels=("Fracture",), image_size=SYNTH_SIZE)
    with pytest.raises(ValueError, match=r"none of the \d+ boxes is of a label the model outputs"):
        score_localization(GradCAM(only), dataset, boxes[boxes["label"] != "Fracture"])


def test_real_gradcam_end_to_end(synthetic: tuple[CheXpertDataset, pd.DataFrame]) -> None:
    dataset, boxes = synthetic
    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", image_size=SYNTH_SIZE)
    cam = GradCAM(model)
    scores = score_localization(cam, dataset, boxes, classes="true", batch_size=1, progress=False)
    first = scores.iloc[0]
    # the same call score_localization made for this image
    same_image = scores[scores["index"] == first["index"]]
    explanation = cam.explain(dataset[int(first["index"])][0][None], [list(same_image["label"])])
    rows = boxes[(boxes.Path == first.Path) & (boxes.label == first.label)]
    scaled = scale_boxes(rows, SYNTH_SIZE)[["x0", "y0", "x1", "y1"]].to_numpy()
    heat = explanation.heatmap(first["label"])
    assert first["hit"] == pointing_game(heat, scaled)
    assert first["energy"] == pytest.approx(energy_in_box(heat, scaled))
    assert first["iou"] == pytest.approx(box_iou(heat, scaled))
    assert scores["explained"].all()
    assert scores["iou"].between(0, 1).all()
    assert scores["energy"].between(0, 1).all()
    summary = summarize_localization(scores, min_findings=1)
    assert summary.index[-1] == "overall"
    assert summary.loc["overall", "findings"] == len(scores)
    assert summary.loc["overall", "chance"] == pytest.approx(scores["chance"].mean())


def test_summary_numbers() -> None:
    scores = pd.DataFrame(
        {
            "index": [0, 0, 1, 2],
            "Path": ["a", "a", "b", "c"],
            "label": ["Edema", "Cardiomegaly", "Edema", "Edema"],
            "n_boxes": [1, 1, 2, 1],
            "probability": [0.9, 0.8, 0.7, 0.2],
            "predicted": [True, True, True, False],
            "explained": [True, True, True, False],
            "zero_map": pd.array([False, False, False, None], dtype="boolean"),
            "hit": pd.array([True, False, False, None], dtype="boolean"),
            "iou": [0.5, 0.1, 0.3, np.nan],
            "energy": [0.6, 0.2, 0.4, np.nan],
            "chance": [0.1, 0.3, 0.2, 0.5],
            "prior_hit": pd.array([True, True, False, None], dtype="boolean"),
            "prior_iou": [0.2, 0.4, 0.0, np.nan],
            "prior_energy": [0.3, 0.5, 0.1, np.nan],
        }
    )
    summary = summarize_localization(scores, min_findings=1, patients=["p0", "p1", "p1"])
    assert list(summary.index) == ["Edema", "Cardiomegaly", "overall"]
    assert summary["patients"].tolist() == [2, 1, 2]
    edema = summary.loc["Edema"]
    assert (edema.findings, edema.explained) == (3, 2)
    assert edema.hit_rate == pytest.approx(0.5)
    assert edema.chance == pytest.approx(0.15)
    assert edema.iou == pytest.approx(0.4)
    overall = summary.loc["overall"]
    assert overall.hit_rate == pytest.approx(1 / 3)
    assert overall.energy == pytest.approx(0.4)
    assert overall.prior_hit_rate == pytest.approx(2 / 3)
    assert summary.loc["Edema", "prior_iou"] == pytest.approx(0.1)
    assert overall.prior_energy == pytest.approx(0.3)
    with pytest.raises(KeyError, match="hit"):
        summarize_localization(scores.drop(columns="hit"))


def test_labels_with_too_few_findings_are_counted_not_scored() -> None:
    # Twelve explained Edema findings and two of Cardiomegaly (a hit and a miss): the two
    # keep their counts, lose their scores and leave "overall", which pools Edema only.
    rows = 14
    scores = pd.DataFrame(
        {
            "index": range(rows),
            "Path": [f"p{i}" for i in range(rows)],
            "label": ["Edema"] * 12 + ["Cardiomegaly"] * 2,
            "n_boxes": 1,
            "probability": 0.9,
            "predicted": True,
            "explained": True,
            "zero_map": pd.array([False] * rows, dtype="boolean"),
            "hit": pd.array([False] * 12 + [True, True], dtype="boolean"),
            "iou": 0.1,
            "energy": 0.2,
            "chance": 0.1,
            "prior_hit": pd.array([False] * rows, dtype="boolean"),
            "prior_iou": 0.0,
            "prior_energy": 0.1,
        }
    )
    summary = summarize_localization(scores, patients=[f"patient{i // 2}" for i in range(rows)])
    cardio = summary.loc["Cardiomegaly"]
    assert cardio["status"] == "too few cases"
    assert (cardio["findings"], cardio["explained"], cardio["patients"]) == (2, 2, 1)
    assert np.isnan(cardio["hit_rate"])
    assert summary.loc["Edema", "status"] == "scored"
    assert summary.loc["overall", "hit_rate"] == 0.0  # the two hits are not pooled
    assert summary.loc["overall", "status"] == "1 of 2 labels"
    with pytest.raises(ValueError, match="min_positives"):
        summarize_localization(scores, min_findings=0)


# --------------------------------------------------------------------------------------------
# the anatomical prior


def _boxes_frame(rows: list[tuple[str, str, int, int, int, int]], side: int) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["Path", "label", "x0", "y0", "x1", "y1"])
    return frame.assign(width=side, height=side)


def test_anatomical_prior_is_the_normalised_mean_of_the_findings_masks() -> None:
    boxes = _boxes_frame(
        [
            ("a.jpg", "Edema", 0, 0, 8, 8),
            ("b.jpg", "Edema", 0, 0, 4, 4),
            ("b.jpg", "Edema", 12, 12, 16, 16),  # a second box of the same finding
            ("a.jpg", "Cardiomegaly", 4, 4, 12, 12),
        ],
        side=32,  # scaled to 16 px maps: every coordinate halves
    )
    prior = anatomical_prior(boxes, 16)
    assert list(prior) == ["Edema", "Cardiomegaly"]
    first = box_mask((0, 0, 4, 4), (16, 16)).astype(float)
    second = box_mask([(0, 0, 2, 2), (6, 6, 8, 8)], (16, 16)).astype(float)
    np.testing.assert_allclose(prior["Edema"], (first + second) / 2 / 1.0)  # min 0, max 1
    assert map_peak(prior["Edema"]) == (0, 0)
    assert set(anatomical_prior(boxes, 16, labels=["Cardiomegaly", "Fracture"])) == {"Cardiomegaly"}
    same = anatomical_prior(_boxes_frame([("a.jpg", "Edema", 0, 0, 16, 16)], 16), 16)
    assert not same["Edema"].any()  # a constant mean points nowhere
    with pytest.raises(ValueError, match="size must be positive"):
        anatomical_prior(boxes, 0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> CheXpertDataset:
    from conftest import write_chexpert

    root = tmp_path_factory.mktemp("tiny")
    write_chexpert(root, patients=8, studies=1, lateral=False, size=(SIZE, SIZE))
    return CheXpertDataset(root, image_size=SIZE, progress=False)


class PointingCAM:
    """Explains every requested class with a one-pixel map at a chosen point per image."""

    def __init__(self, dataset: CheXpertDataset, points: dict[str, tuple[int, int]]) -> None:
        self.path_of = {
            dataset[i][0].numpy().tobytes(): str(path) for i, path in enumerate(dataset.frame.Path)
        }
        self.points = points

    def explain(
        self, images: torch.Tensor, classes: Sequence[Sequence[str]] | None, /
    ) -> Explanation:
        assert classes is not None
        maps = []
        for image, names in zip(images, classes, strict=True):
            heat = torch.zeros(SIZE, SIZE)
            heat[self.points[self.path_of[image.numpy().tobytes()]]] = 1.0
            maps.append(dict.fromkeys(names, heat))
        return Explanation(
            images=images,
            labels=CHEXPERT_LABELS,
            probabilities=torch.full((len(images), len(CHEXPERT_LABELS)), 0.9),
            thresholds=torch.full((len(CHEXPERT_LABELS),), 0.5),
            classes=tuple(tuple(names) for names in classes),
            heatmaps=tuple(maps),
            raw_maps=tuple(maps),
            zero_maps=tuple(frozenset() for _ in classes),
            layer="test",
            method="gradcam",
        )


LEFT, RIGHT = (4, 0, 8, 8), (8, 8, 12, 16)


def _split_scores(tiny: CheXpertDataset, train_boxes, test_boxes, points):
    paths = list(tiny.frame.Path)
    train, test = Subset(tiny, range(0, 5)), Subset(tiny, range(5, 8))
    boxes = _boxes_frame(
        [(paths[i], "Cardiomegaly", *box) for i, box in enumerate(train_boxes)]
        + [(paths[5 + i], "Cardiomegaly", *box) for i, box in enumerate(test_boxes)],
        SIZE,
    )
    training = select_boxes(boxes, train)
    assert set(training.Path) == set(paths[:5])  # the prior never sees the test boxes
    prior = anatomical_prior(training, SIZE)
    cam = PointingCAM(tiny, {paths[5 + i]: point for i, point in enumerate(points)})
    scores = score_localization(cam, test, boxes, classes="true", progress=False, prior=prior)
    return summarize_localization(scores, min_findings=1).loc["overall"]


def test_the_prior_wins_when_the_maps_miss_the_anatomy(tiny: CheXpertDataset) -> None:
    # the finding always sits in the same place; the maps point at the opposite corner
    overall = _split_scores(tiny, [LEFT] * 5, [LEFT] * 3, [(15, 15)] * 3)
    assert overall.hit_rate == 0.0
    assert overall.prior_hit_rate == 1.0
    assert overall.prior_iou == 1.0
    assert overall.prior_energy == 1.0
    assert overall.energy == 0.0


def test_the_prior_loses_when_the_finding_moves_and_the_maps_follow(tiny: CheXpertDataset) -> None:
    # training boxes mostly on the left, so the prior points there; the test findings are on
    # the right and the maps point into each of them
    overall = _split_scores(
        tiny, [LEFT, LEFT, LEFT, RIGHT, RIGHT], [RIGHT] * 3, [(8, 8), (12, 9), (15, 11)]
    )
    assert overall.hit_rate == 1.0
    assert overall.prior_hit_rate == 0.0
    assert overall.energy == 1.0
    assert overall.prior_energy < 1.0
    assert overall.chance == pytest.approx(32 / 256)


def test_prior_maps_must_fit_the_dataset(tiny: CheXpertDataset) -> None:
    paths = list(tiny.frame.Path)
    boxes = _boxes_frame([(paths[0], "Cardiomegaly", *LEFT)], SIZE)
    cam = PointingCAM(tiny, {paths[0]: (0, 0)})
    with pytest.raises(ValueError, match=r"prior\['Cardiomegaly'\] of shape \(8, 8\)"):
        score_localization(
            cam,
            tiny,
            boxes,
            classes="true",
            progress=False,
            prior={"Cardiomegaly": np.ones((8, 8))},
        )
    with pytest.raises(KeyError, match="Path"):
        select_boxes(boxes.drop(columns="Path"), tiny)
