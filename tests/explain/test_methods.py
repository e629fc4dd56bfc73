"""Eigen-CAM, Integrated Gradients through captum, and map makers by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from chexviz.explain._cam import eigen_maps
from chexviz.explain.gradcam import GradCAM
from chexviz.explain.integrated_gradients import IntegratedGradients
from chexviz.explain.methods import MAP_METHODS, map_maker


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(6, 3)
        self.labels = ("Edema", "Atelectasis", "Cardiomegaly")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(-2, -1)))


def _net() -> _Net:
    torch.manual_seed(0)
    return _Net()


def test_eigen_maps_equal_a_hand_svd() -> None:
    torch.manual_seed(1)
    activations = torch.rand(2, 5, 4, 3)
    maps = eigen_maps(activations)
    for b in range(2):
        matrix = activations[b].reshape(5, 12).T.double()
        centred = matrix - matrix.mean(dim=0)
        _, _, vh = torch.linalg.svd(centred)
        projection = centred @ vh[0]
        channel_mean = matrix.mean(dim=1)
        if torch.corrcoef(torch.stack([projection, channel_mean]))[0, 1] < 0:
            projection = -projection
        expected = torch.relu(projection).reshape(4, 3).float()
        torch.testing.assert_close(maps[b], expected, atol=1e-5, rtol=1e-4)


def test_eigencam_is_class_agnostic() -> None:
    explanation = GradCAM(_net(), method="eigencam").explain(
        torch.rand(2, 3, 8, 8), ["Edema", "Atelectasis"]
    )
    for b in range(2):
        torch.testing.assert_close(
            explanation.raw_maps[b]["Edema"], explanation.raw_maps[b]["Atelectasis"]
        )


def test_ig_maps_equal_captum_called_directly() -> None:
    from captum.attr import IntegratedGradients as CaptumIG

    model = _net()
    images = torch.rand(2, 3, 8, 8)
    explanation = IntegratedGradients(model, n_steps=8).explain(
        images, [["Edema", "Cardiomegaly"], ["Atelectasis"]]
    )
    assert explanation.method == "ig"
    assert "8 steps" in explanation.layer
    assert "black" in explanation.layer
    captum = CaptumIG(model.eval())
    for b, classes in enumerate([[0, 2], [1]]):
        for k in classes:
            direct = captum.attribute(
                images[b : b + 1], baselines=torch.zeros(1, 3, 8, 8), target=k, n_steps=8
            )
            expected = direct.abs().sum(dim=1)[0]
            torch.testing.assert_close(
                explanation.raw_maps[b][model.labels[k]], expected, atol=1e-6, rtol=1e-5
            )


def test_ig_batched_and_chunked_agree() -> None:
    model = _net()
    images = torch.rand(3, 3, 8, 8)
    whole = IntegratedGradients(model, n_steps=6).explain(images, ["Edema", "Atelectasis"])
    chunked = IntegratedGradients(model, n_steps=6, internal_batch_size=12).explain(
        images, ["Edema", "Atelectasis"]
    )
    for b in range(3):
        for label in ("Edema", "Atelectasis"):
            torch.testing.assert_close(
                whole.raw_maps[b][label], chunked.raw_maps[b][label], atol=1e-6, rtol=1e-5
            )


def test_map_maker_by_name_and_callable() -> None:
    model = _net()
    assert {"gradcam", "gradcam++", "layercam", "eigencam", "ig"} <= set(MAP_METHODS)
    assert isinstance(map_maker("ig", model), IntegratedGradients)
    assert map_maker("layercam", model).explain is not None
    made = map_maker(lambda m: GradCAM(m, method="hirescam"), model)
    assert isinstance(made, GradCAM)
    with pytest.raises(ValueError, match=r"unknown explanation method 'gradcm'.*known methods"):
        map_maker("gradcm", model)
    with pytest.raises(ValueError, match=r"has no \.model"):
        map_maker(lambda m: object(), model)


@pytest.mark.parametrize("maker", [GradCAM, IntegratedGradients])
def test_thresholds_of_the_wrong_shape_are_refused_by_every_method(maker) -> None:
    # Integrated Gradients used to fall back to 0.5 silently where Grad-CAM refused.
    model = _net()
    model.thresholds = torch.full((5,), 0.3)  # the model has three outputs
    images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"model.thresholds has shape \[5\], expected \[3\]"):
        maker(model).explain(images)
