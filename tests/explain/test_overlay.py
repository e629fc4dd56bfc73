import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from chexviz.explain.overlay import image_to_pil, overlay_heatmap


def _rgb255(cmap: str, value: float) -> np.ndarray:
    colour = np.asarray(matplotlib.colormaps[cmap](value)[:3])
    return np.rint(colour * 255).astype(np.uint8)


def test_heatmap_maximum_gets_the_colormaps_top_colour_in_rgb_order() -> None:
    heat = torch.zeros(8, 10)
    heat[2, 7] = 1.0
    out = overlay_heatmap(torch.zeros(1, 8, 10), heat, alpha=1.0, cmap="inferno")
    pixels = np.asarray(out)
    assert out.mode == "RGB"
    assert out.size == (10, 8)
    np.testing.assert_array_equal(pixels[2, 7], _rgb255("inferno", 1.0))
    np.testing.assert_array_equal(pixels[0, 0], _rgb255("inferno", 0.0))
    # inferno's top colour is a pale yellow: red well above blue. A BGR swap would flip it.
    assert pixels[2, 7, 0] > 240 > 200 > pixels[2, 7, 2]


def test_jet_hot_spot_is_red_not_blue() -> None:
    # The reference study's figures showed jet's hot spot blue: a BGR/RGB swap.
    heat = np.zeros((4, 4))
    heat[1, 1] = 1.0
    pixels = np.asarray(overlay_heatmap(np.zeros((4, 4)), heat, alpha=1.0, cmap="jet"))
    red, green, blue = (int(v) for v in pixels[1, 1])
    assert red > 100
    assert green == 0
    assert blue == 0
    cold = pixels[0, 0]
    assert cold[2] > 100
    assert cold[0] == 0


def test_alpha_blends_linearly() -> None:
    image = torch.full((1, 3, 3), 0.5)
    heat = torch.ones(3, 3)
    top = _rgb255("viridis", 1.0).astype(float) / 255
    for alpha in (0.0, 0.25, 1.0):
        pixels = np.asarray(overlay_heatmap(image, heat, alpha=alpha, cmap="viridis"))
        expected = np.rint(255 * ((1 - alpha) * 0.5 + alpha * top)).astype(np.uint8)
        np.testing.assert_allclose(pixels[1, 1].astype(int), expected.astype(int), atol=1)


def test_alpha_zero_returns_the_image() -> None:
    image = np.linspace(0, 1, 12).reshape(3, 4)
    pixels = np.asarray(overlay_heatmap(image, np.ones((3, 4)), alpha=0.0))
    np.testing.assert_array_equal(pixels[..., 0], np.rint(image * 255).astype(np.uint8))
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])


def test_rgb_image_channels_are_kept_in_order() -> None:
    image = torch.zeros(3, 2, 2)
    image[0] = 1.0  # pure red, channels-first
    pixels = np.asarray(overlay_heatmap(image, torch.zeros(2, 2), alpha=0.0))
    np.testing.assert_array_equal(pixels[0, 0], [255, 0, 0])
    # the same image channels-last as a numpy array
    pixels = np.asarray(overlay_heatmap(image.permute(1, 2, 0).numpy(), np.zeros((2, 2)), alpha=0))
    np.testing.assert_array_equal(pixels[1, 1], [255, 0, 0])


def test_channels_last_array_with_three_rows_is_read_via_heatmap_shape() -> None:
    # shape (3, 5, 3) reads either way; the heatmap's (3, 5) settles it
    image = np.zeros((3, 5, 3))
    image[..., 2] = 1.0
    pixels = np.asarray(overlay_heatmap(image, np.zeros((3, 5)), alpha=0.0))
    assert pixels.shape == (3, 5, 3)
    np.testing.assert_array_equal(pixels[0, 0], [0, 0, 255])


def test_uint8_image_is_scaled() -> None:
    image = np.full((2, 2), 255, dtype=np.uint8)
    pixels = np.asarray(overlay_heatmap(image, np.zeros((2, 2)), alpha=0.0))
    assert (pixels == 255).all()


def test_boolean_mask_heatmap() -> None:
    mask = np.zeros((2, 2), dtype=bool)
    mask[0, 1] = True
    pixels = np.asarray(overlay_heatmap(np.zeros((2, 2)), mask, alpha=1.0))
    np.testing.assert_array_equal(pixels[0, 1], _rgb255("inferno", 1.0))
    np.testing.assert_array_equal(pixels[1, 1], _rgb255("inferno", 0.0))


def test_colormap_object_is_accepted() -> None:
    cmap = matplotlib.colormaps["magma"]
    pixels = np.asarray(overlay_heatmap(np.zeros((2, 2)), np.ones((2, 2)), alpha=1.0, cmap=cmap))
    np.testing.assert_array_equal(pixels[0, 0], _rgb255("magma", 1.0))


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(1, 8, 8\).*\(4, 4\)"):
        overlay_heatmap(torch.zeros(1, 8, 8), torch.zeros(4, 4))


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        overlay_heatmap(torch.zeros(1, 2, 2), torch.zeros(2, 2), alpha=alpha)


def test_values_outside_unit_range_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"heatmap values must lie in \[0, 1\].*max 2"):
        overlay_heatmap(torch.zeros(1, 2, 2), torch.full((2, 2), 2.0))
    with pytest.raises(ValueError, match="image values"):
        overlay_heatmap(torch.full((1, 2, 2), -1.0), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="NaN"):
        overlay_heatmap(torch.zeros(1, 2, 2), torch.full((2, 2), float("nan")))


def test_bad_shapes_and_types() -> None:
    with pytest.raises(ValueError, match="heatmap must be 2-D"):
        overlay_heatmap(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        overlay_heatmap(torch.zeros(2, 2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="2-D or 3-D"):
        overlay_heatmap(torch.zeros(1, 1, 2, 2), torch.zeros(2, 2))
    with pytest.raises(TypeError, match=r"image must be a torch\.Tensor"):
        overlay_heatmap([[0.0]], torch.zeros(1, 1))  # type: ignore[arg-type]


def test_unknown_cmap_is_named() -> None:
    with pytest.raises(ValueError, match="'not-a-map'"):
        overlay_heatmap(torch.zeros(1, 2, 2), torch.zeros(2, 2), cmap="not-a-map")


def test_image_to_pil() -> None:
    out = image_to_pil(torch.tensor([[[0.0, 1.0]]]))
    assert isinstance(out, Image.Image)
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out)[0], [[0, 0, 0], [255, 255, 255]])


@settings(max_examples=30, deadline=None)
@given(
    heat=st.lists(st.floats(0, 1), min_size=6, max_size=6),
    grey=st.floats(0, 1),
    alpha=st.floats(0, 1),
)
def test_output_lies_between_image_and_colour(heat: list[float], grey: float, alpha: float) -> None:
    heatmap = np.asarray(heat).reshape(2, 3)
    pixels = np.asarray(overlay_heatmap(np.full((2, 3), grey), heatmap, alpha=alpha)).astype(int)
    colours = np.rint(255 * matplotlib.colormaps["inferno"](heatmap)[..., :3]).astype(int)
    lower = np.minimum(colours, round(255 * grey)) - 1
    upper = np.maximum(colours, round(255 * grey)) + 1
    assert ((pixels >= lower) & (pixels <= upper)).all()


def test_importing_chexviz_overlay_does_not_import_matplotlib() -> None:
    code = "import sys, chexviz.explain.overlay; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
