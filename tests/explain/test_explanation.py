from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import numpy as np
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
    assert explanation.positives == (("Edema", "Fracture"), ())
    assert explanation.positives[1] == ()
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
        explanation.positives[5]
    with pytest.raises(IndexError, match="image index 2 is out of range"):
        explanation.source_size(2)


def test_positives_is_a_per_image_tuple_like_classes() -> None:
    # Both per-image fields are read the same way: no call, an index per image.
    explanation = _explanation()
    assert isinstance(explanation.positives, tuple)
    assert isinstance(explanation.classes, tuple)
    assert len(explanation.positives) == len(explanation.classes) == len(explanation)
    assert explanation.positives[0] == explanation.classes[0]
    assert list(explanation.positives) == [("Edema", "Fracture"), ()]


def test_calling_positives_still_works_but_is_deprecated() -> None:
    explanation = _explanation()
    with pytest.deprecated_call(match=r"positives\[index\] instead of"):
        assert explanation.positives(0) == ("Edema", "Fracture")
    with pytest.deprecated_call():
        assert explanation.positives() == ("Edema", "Fracture")
    with pytest.deprecated_call():
        assert explanation.positives(-1) == ()
    with pytest.deprecated_call(), pytest.raises(IndexError, match="image index 5"):
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
    with pytest.raises(ValueError, match="size must be 'source' or 'model', got 'big'"):
        explanation.overlay("Edema", size="big")  # type: ignore[arg-type]


def _hot_left_third(side: int = 96) -> Explanation:
    """A model-size square whose Edema map is hot in its left third only, from a 300x200 X-ray."""
    heat = torch.zeros(side, side)
    heat[:, : side // 3] = 1.0
    return _explanation(
        images=torch.full((1, 1, side, side), 0.5),
        probabilities=torch.tensor([[0.9, 0.2, 0.6]]),
        classes=(("Edema",),),
        heatmaps=({"Edema": heat},),
        raw_maps=({"Edema": heat[::8, ::8]},),
        zero_maps=(frozenset(),),
        source_sizes=((300, 200),),
    )


def test_overlay_has_the_source_size_by_default_and_the_model_size_on_request() -> None:
    explanation = _hot_left_third()
    assert explanation.source_size(0) == (300, 200)
    assert explanation.overlay("Edema").size == (300, 200)
    assert explanation.overlay("Edema", size="source").size == (300, 200)
    assert explanation.overlay("Edema", size="model").size == (96, 96)


def test_overlay_at_the_source_size_keeps_the_map_in_place() -> None:
    explanation = _hot_left_third()
    picture = np.asarray(explanation.overlay("Edema", alpha=1.0), dtype=np.int64)
    assert picture.shape == (200, 300, 3)
    hot = picture.sum(axis=2) > picture.sum(axis=2).mean()
    columns = np.flatnonzero(hot.all(axis=0))
    # The hot third of the model's 96 columns is the left third of the source's 300 columns
    # (up to the blur of the bilinear edge), on every row.
    assert columns[0] == 0
    assert abs(int(columns[-1]) + 1 - 100) <= 2
    assert not hot[:, 110:].any()


def test_source_sizes_default_to_the_input_size_and_are_checked() -> None:
    explanation = _explanation()
    assert explanation.source_sizes == ()
    assert explanation.source_size(1) == (8, 8)
    assert explanation.overlay("Edema").size == (8, 8)
    with pytest.raises(ValueError, match=r"source_sizes must have one entry per image \(2\)"):
        _explanation(source_sizes=((3, 4),))
    with pytest.raises(ValueError, match=r"source_sizes\[1\] must be \(width, height\)"):
        _explanation(source_sizes=((3, 4), (0, 4)))


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
