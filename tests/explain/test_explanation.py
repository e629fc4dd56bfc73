from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import pytest
import torch
from PIL import Image

from chexviz.explain.explanation import Explanation

LABELS = ("Edema", "Cardiomegaly", "Fracture")


def _fields(**overrides: Any) -> dict[str, Any]:
    heat = torch.linspace(0, 1, 64).reshape(8, 8)
    fields: dict[str, Any] = {
        "images": torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
        "labels": LABELS,
        "probabilities": torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.3, 0.2]]),
        "thresholds": torch.tensor([0.5, 0.5, 0.6]),
        "classes": (("Edema", "Fracture"), ()),
        "heatmaps": ({"Edema": heat, "Fracture": torch.zeros(8, 8)}, {}),
        "raw_maps": ({"Edema": torch.rand(2, 2), "Fracture": torch.zeros(2, 2)}, {}),
        "zero_maps": (frozenset({"Fracture"}), frozenset()),
        "layer": "backbone.features.relu5",
        "method": "gradcam",
    }
    fields.update(overrides)
    return fields


def _explanation(**overrides: Any) -> Explanation:
    return Explanation(**_fields(**overrides))


def test_accessors() -> None:
    explanation = _explanation()
    assert len(explanation) == 2
    assert torch.equal(explanation.heatmap("Edema"), explanation.heatmaps[0]["Edema"])
    assert torch.equal(explanation.heatmap(2), explanation.heatmaps[0]["Fracture"])
    assert torch.equal(explanation.heatmap("Edema", index=-2), explanation.heatmaps[0]["Edema"])
    assert explanation.positives(0) == ("Edema", "Fracture")
    assert explanation.positives(1) == ()
    assert repr(explanation) == (
        "Explanation(images=2x1x8x8, method='gradcam', layer='backbone.features.relu5', "
        "explained_maps=2)"
    )


def test_accessor_errors() -> None:
    explanation = _explanation()
    with pytest.raises(KeyError, match=r"'Cardiomegaly' was not explained for image 0; "):
        explanation.heatmap("Cardiomegaly")
    with pytest.raises(KeyError, match="explained: none"):
        explanation.heatmap("Edema", index=1)
    with pytest.raises(IndexError, match="image index 2 is out of range for a batch of 2"):
        explanation.heatmap("Edema", index=2)
    with pytest.raises(IndexError, match="class index 3 is out of range for 3 labels"):
        explanation.heatmap(3)
    with pytest.raises(IndexError, match="class index"):
        explanation.heatmap(True)
    with pytest.raises(IndexError):
        explanation.positives(5)


def test_overlay_renders_rgb_image() -> None:
    explanation = _explanation()
    image = explanation.overlay("Edema", alpha=0.7, cmap="viridis")
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    assert image.size == (8, 8)
    # Zero heat at the top-left and full heat at the bottom-right get different colours.
    assert image.getpixel((0, 0)) != image.getpixel((7, 7))
    with pytest.raises(KeyError):
        explanation.overlay("Edema", index=1)


def test_frozen_picklable_and_copyable() -> None:
    explanation = _explanation()
    with pytest.raises(dataclasses.FrozenInstanceError):
        explanation.method = "layercam"  # type: ignore[misc]
    for clone in (pickle.loads(pickle.dumps(explanation)), copy.deepcopy(explanation)):
        assert clone.classes == explanation.classes
        assert torch.equal(clone.heatmap("Edema"), explanation.heatmap("Edema"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"images": torch.rand(1, 8, 8)}, r"images must be \[B, C, H, W\]"),
        ({"probabilities": torch.rand(2, 2)}, r"probabilities must be \[2, 3\]"),
        ({"thresholds": torch.rand(2)}, r"thresholds must be \[3\]"),
        ({"classes": (("Edema", "Fracture"),)}, r"classes must have one entry per image \(2\)"),
        ({"zero_maps": (frozenset(),)}, "zero_maps must have one entry per image"),
        ({"classes": (("Edema", "Nope"), ())}, r"classes\[0\] has unknown labels \['Nope'\]"),
        ({"classes": (("Edema",), ())}, r"heatmaps\[0\] has maps for \['Edema', 'Fracture'\]"),
        (
            {"heatmaps": ({"Edema": torch.zeros(4, 4), "Fracture": torch.zeros(8, 8)}, {})},
            r"heatmaps\[0\]\['Edema'\] must be \[8, 8\]",
        ),
        (
            {"raw_maps": ({"Edema": torch.zeros(2), "Fracture": torch.zeros(2, 2)}, {})},
            r"raw_maps\[0\]\['Edema'\] must be 2-D",
        ),
        (
            {"zero_maps": (frozenset({"Cardiomegaly"}), frozenset())},
            r"zero_maps\[0\] names classes that were not explained: \['Cardiomegaly'\]",
        ),
    ],
)
def test_inconsistent_fields_are_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _explanation(**overrides)
