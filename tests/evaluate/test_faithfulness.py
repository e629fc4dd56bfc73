import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from chexviz.evaluate.faithfulness import (
    PerturbationCurve,
    deletion_score,
    insertion_score,
    perturbation_curve,
    score_faithfulness,
)
from chexviz.explain.explanation import Explanation

SIZE = 8


class RegionModel(nn.Module):
    """Logit 0 is 10 * (mean of the top-left 4x4 region - 0.5); logit 1 is its negation."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.inner = nn.Dropout(0.5)  # only to check that training flags are restored
        self.labels = ("Region", "Anti")
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        logit = self.scale * (x[:, 0, :4, :4].mean(dim=(1, 2)) - 0.5)
        return torch.stack([logit, -logit], dim=1)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _region_map() -> torch.Tensor:
    heat = torch.zeros(SIZE, SIZE)
    heat[:4, :4] = 1.0
    return heat


def _elsewhere_map() -> torch.Tensor:
    return 1.0 - _region_map()


def test_deletion_curve_matches_the_known_answer() -> None:
    model = RegionModel()
    image = torch.ones(1, SIZE, SIZE)
    curve = perturbation_curve(
        model, image, _region_map(), 0, mode="deletion", steps=4, baseline="zero"
    )
    np.testing.assert_allclose(curve.fractions, [0, 0.25, 0.5, 0.75, 1])
    high, low = _sigmoid(5), _sigmoid(-5)
    np.testing.assert_allclose(curve.probabilities, [high, low, low, low, low], rtol=1e-6)
    assert curve.auc == pytest.approx(0.25 * (high + low) / 2 + 0.75 * low, rel=1e-6)


def test_region_map_beats_a_map_elsewhere() -> None:
    model = RegionModel()
    image = 0.2 + 0.8 * _region_map()[None]
    for baseline in ("zero", "mean", 0.1, "blur"):
        on = deletion_score(model, image, _region_map(), "Region", baseline=baseline)
        off = deletion_score(model, image, _elsewhere_map(), "Region", baseline=baseline)
        assert on < off
        on = insertion_score(model, image, _region_map(), "Region", baseline=baseline)
        off = insertion_score(model, image, _elsewhere_map(), "Region", baseline=baseline)
        assert on > off


def test_insertion_is_deletion_run_backwards_for_the_mirror_class() -> None:
    model = RegionModel()
    image = torch.ones(1, SIZE, SIZE)
    deletion = perturbation_curve(model, image, _region_map(), 0, mode="deletion", baseline="zero")
    insertion = perturbation_curve(model, image, _region_map(), 1, mode="insertion", baseline=0.0)
    # the end points see the same two images, and Anti's probability is 1 - Region's
    assert insertion.probabilities[-1] == pytest.approx(1 - deletion.probabilities[0], rel=1e-4)
    assert insertion.probabilities[0] == pytest.approx(1 - deletion.probabilities[-1], rel=1e-4)


def test_blur_of_a_constant_image_changes_nothing() -> None:
    model = RegionModel()
    image = torch.full((1, SIZE, SIZE), 0.7)
    curve = perturbation_curve(model, image, torch.rand(SIZE, SIZE), 0, mode="deletion")
    np.testing.assert_allclose(curve.probabilities, _sigmoid(2.0), rtol=1e-5)


def test_blur_removes_detail_but_keeps_the_mean() -> None:
    model = RegionModel()
    image = torch.zeros(1, 32, 32)
    image[0, 1::2, :] = 1.0  # stripes: region mean 0.5, logit 0
    curve = perturbation_curve(
        model, image, torch.rand(32, 32), 0, mode="deletion", steps=2, blur_sigma=3.0
    )
    assert curve.probabilities[-1] == pytest.approx(0.5, abs=0.05)


def test_model_state_is_left_alone_and_batches_are_few() -> None:
    model = RegionModel()
    model.train()
    model.inner.eval()
    before = model.scale.detach().clone()
    image = torch.rand(1, SIZE, SIZE)
    curve = perturbation_curve(
        model, image, torch.rand(SIZE, SIZE), 0, mode="insertion", steps=20, batch_size=8
    )
    assert len(curve.probabilities) == 21
    assert model.calls == 3  # ceil(21 / 8)
    assert model.training
    assert not model.inner.training
    assert model.scale.grad is None
    assert torch.equal(model.scale.detach(), before)


def test_ties_follow_the_seed() -> None:
    model = RegionModel()
    image = torch.rand(1, SIZE, SIZE)
    flat = np.zeros((SIZE, SIZE))
    a = deletion_score(model, image, flat, 0, seed=1, baseline="zero")
    b = deletion_score(model, image, flat, 0, seed=1, baseline="zero")
    c = deletion_score(model, image, flat, 0, seed=2, baseline="zero")
    assert a == b
    assert a != c


def test_auc_of_a_curve() -> None:
    curve = PerturbationCurve("deletion", np.array([0, 0.5, 1.0]), np.array([1.0, 0.0, 0.0]))
    assert curve.auc == pytest.approx(0.25)


def test_bad_arguments() -> None:
    model = RegionModel()
    image = torch.ones(1, SIZE, SIZE)
    heat = _region_map()
    with pytest.raises(ValueError, match=r"heatmap of shape \(4, 4\).*\(8, 8\)"):
        deletion_score(model, image, torch.zeros(4, 4), 0)
    with pytest.raises(ValueError, match="baseline"):
        deletion_score(model, image, heat, 0, baseline="noise")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        deletion_score(model, image, heat, 0, steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        insertion_score(model, image, heat, 0, batch_size=0)
    with pytest.raises(ValueError, match="out of range"):
        deletion_score(model, image, heat, 5)
    with pytest.raises(KeyError, match="'Fracture'"):
        deletion_score(model, image, heat, "Fracture")
    with pytest.raises(ValueError, match="mode"):
        perturbation_curve(model, image, heat, 0, mode="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        deletion_score(model, image[0], heat, 0)
    with pytest.raises(ValueError, match="blur_sigma"):
        deletion_score(model, image, heat, 0, blur_sigma=0.0)
    with pytest.raises(ValueError, match="NaN"):
        deletion_score(model, image, torch.full((SIZE, SIZE), float("nan")), 0)
    with pytest.raises(ValueError, match=r"no \.labels"):
        deletion_score(nn.Conv2d(1, 1, 1), image, heat, "Region")


def _explanation(images: torch.Tensor) -> Explanation:
    batch = images.shape[0]
    probabilities = torch.full((batch, 2), 0.9)
    maps = [{"Region": _region_map(), "Anti": torch.zeros(SIZE, SIZE)} for _ in range(batch)]
    return Explanation(
        images=images,
        labels=("Region", "Anti"),
        probabilities=probabilities,
        thresholds=torch.full((2,), 0.5),
        classes=tuple(("Region", "Anti") for _ in range(batch)),
        heatmaps=tuple(maps),
        raw_maps=tuple({k: v[:2, :2] for k, v in m.items()} for m in maps),
        zero_maps=tuple(frozenset({"Anti"}) for _ in range(batch)),
        layer="features",
        method="gradcam",
    )


def test_score_faithfulness_rows_and_reference() -> None:
    model = RegionModel()
    frame = score_faithfulness(model, _explanation(torch.ones(2, 1, SIZE, SIZE)), baseline="zero")
    # per image and mode: one pass per random field (5) for both classes, one per class
    assert model.calls == 2 * 2 * (5 + 2)
    assert list(frame.columns) == [
        "index",
        "label",
        "probability",
        "zero_map",
        "deletion",
        "insertion",
        "deletion_random",
        "deletion_random_std",
        "insertion_random",
        "insertion_random_std",
    ]
    assert frame["index"].tolist() == [0, 0, 1, 1]
    assert frame["label"].tolist() == ["Region", "Anti"] * 2
    assert frame["zero_map"].tolist() == [False, True] * 2
    region = frame[frame["label"] == "Region"]
    assert (region["deletion"] < region["deletion_random"]).all()
    assert (region["insertion"] > region["insertion_random"]).all()
    assert (frame["deletion_random_std"] >= 0).all()
    plain = score_faithfulness(model, _explanation(torch.ones(1, 1, SIZE, SIZE)), reference=False)
    assert "deletion_random" not in plain.columns
    with pytest.raises(ValueError, match="references must be at least 1"):
        score_faithfulness(model, _explanation(torch.ones(1, 1, SIZE, SIZE)), references=0)


def _flat_explanation(count: int, side: int) -> Explanation:
    """``count`` identical images whose one explained class has an all-zero map."""
    zero = torch.zeros(side, side)
    return Explanation(
        images=torch.ones(count, 1, side, side),
        labels=("Region", "Anti"),
        probabilities=torch.full((count, 2), 0.9),
        thresholds=torch.full((2,), 0.5),
        classes=tuple(("Region",) for _ in range(count)),
        heatmaps=tuple({"Region": zero} for _ in range(count)),
        raw_maps=tuple({"Region": zero[:2, :2]} for _ in range(count)),
        zero_maps=tuple(frozenset({"Region"}) for _ in range(count)),
        layer="features",
        method="gradcam",
    )


def test_random_references_are_independent_per_image_and_of_the_maps_ties() -> None:
    model = RegionModel()
    frame = score_faithfulness(model, _flat_explanation(6, 48), baseline="zero", references=1)
    # identical images: one shared field would give one reference score for all of them
    assert frame["deletion_random"].nunique() > 1
    # an all-zero map is ordered by its own tie field, not by the field of its reference
    assert (frame["deletion"] != frame["deletion_random"]).sum() >= 3
    assert (frame["deletion_random_std"] == 0).all()  # one field: no spread
    several = score_faithfulness(model, _flat_explanation(2, 48), baseline="zero")
    assert (several["deletion_random_std"] > 0).all()
    again = score_faithfulness(model, _flat_explanation(2, 48), baseline="zero")
    pd.testing.assert_frame_equal(several, again)  # seeded: reproducible
    other = score_faithfulness(model, _flat_explanation(2, 48), baseline="zero", seed=1)
    assert not other["deletion_random"].equals(several["deletion_random"])


class Recorder(nn.Module):
    """Keeps the images it sees; its logit is constant."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return torch.zeros(len(x), 1)


def test_ties_are_broken_in_smooth_blobs_not_scattered_pixels() -> None:
    model = Recorder()
    image = torch.ones(1, 64, 64)
    perturbation_curve(model, image, np.zeros((64, 64)), 0, mode="deletion", steps=2, baseline=0.0)
    half = model.seen[0][1, 0] == 0  # the image with half of its pixels deleted
    assert half.float().mean() == pytest.approx(0.5)
    changes = (half[:, 1:] != half[:, :-1]).float().mean() + (half[1:] != half[:-1]).float().mean()
    # scattered pixels would differ from a neighbour half of the time
    assert changes / 2 < 0.1
