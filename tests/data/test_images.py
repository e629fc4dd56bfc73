from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from chexviz.data.images import ImageDecodeError, load_image, read_image_size, to_tensor


def _grey(width: int = 60, height: int = 40) -> np.ndarray:
    # Left half dark, right half bright: orientation changes are easy to detect.
    pixels = np.full((height, width), 20, dtype=np.uint8)
    pixels[:, width // 2 :] = 220
    return pixels


def test_greyscale_jpeg_is_resized_whole(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    Image.fromarray(_grey(390, 320)).save(path, quality=95)
    out = load_image(path, size=32)
    assert out.shape == (32, 32)
    assert out.dtype == np.uint8
    # No crop: both halves of the original survive, split down the middle.
    assert out[:, :12].mean() < 40
    assert out[:, 20:].mean() > 200


def test_three_channels_replicate_grey(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(_grey()).save(path)
    grey = load_image(path, size=16)
    rgb = load_image(str(path), size=16, in_channels=3)
    assert rgb.shape == (16, 16, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], grey)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA", "1"])
def test_colour_modes_become_grey(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"x_{mode}.png"
    Image.fromarray(_grey()).convert(mode).save(path)
    out = load_image(path, size=20)
    assert out.shape == (20, 20)
    assert out[:, :8].mean() < 60
    assert out[:, 12:].mean() > 180


def test_rgb_uses_luma(tmp_path: Path) -> None:
    path = tmp_path / "red.png"
    Image.new("RGB", (10, 10), (200, 0, 0)).save(path)
    assert load_image(path, size=4).mean() == pytest.approx(200 * 0.299, abs=1)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "x16.png"
    values = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16).repeat(8, axis=0).repeat(8, 1)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    out = load_image(path, size=32)
    np.testing.assert_allclose(out[4, [4, 12, 20, 28]], [0, 64, 128, 255], atol=1)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; displayed turned 90 degrees clockwise
    Image.fromarray(_grey(60, 40)).save(path, exif=exif, quality=95)
    out = load_image(path, size=20)
    # The dark left half of the stored image ends up on top once turned upright.
    assert out[:8].mean() < 60
    assert out[12:].mean() > 180


def test_pil_image_source_matches_file(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(_grey()).save(path)
    with Image.open(path) as image:
        from_image = load_image(image, size=24)
    np.testing.assert_array_equal(from_image, load_image(path, size=24))
    in_memory = Image.fromarray(_grey())
    np.testing.assert_array_equal(load_image(in_memory, size=24), from_image)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.jpg"):
        load_image(tmp_path / "nope.jpg", size=8)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("not a picture")
    with pytest.raises(ImageDecodeError, match=r"notes\.jpg") as info:
        load_image(path, size=8)
    assert info.value.path == path


def test_truncated_jpeg_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (200, 240), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(ImageDecodeError, match=r"cut\.jpg.*truncated"):
        load_image(path, size=16)


def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # 10,000 pixels is 1x-2x the limit
    with (
        pytest.warns(Image.DecompressionBombWarning),
        pytest.raises(ImageDecodeError, match=r"big\.png.*MAX_IMAGE_PIXELS"),
    ):
        load_image(path, size=8)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's own error above 2x
    with pytest.raises(ImageDecodeError, match=r"big\.png.*decompression bomb"):
        load_image(path, size=8)


def test_read_image_size(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    Image.fromarray(_grey(39, 32)).save(path)
    assert read_image_size(path) == (39, 32)
    with pytest.raises(FileNotFoundError):
        read_image_size(tmp_path / "missing.jpg")


@pytest.mark.parametrize(("orientation", "upright"), [(1, (39, 32)), (6, (32, 39)), (8, (32, 39))])
def test_read_image_size_upright(
    tmp_path: Path, orientation: int, upright: tuple[int, int]
) -> None:
    path = tmp_path / "x.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_grey(39, 32)).save(path, exif=exif)
    assert read_image_size(path) == (39, 32)  # as stored
    assert read_image_size(path, upright=True) == upright
    with Image.open(path) as image:
        assert read_image_size(image, upright=True) == upright
        assert ImageOps.exif_transpose(image).size == upright  # what load_image does
        assert read_image_size(image) == (39, 32)


@pytest.mark.parametrize(("size", "channels"), [(0, 1), (8, 2), (True, 1)])
def test_invalid_arguments(tmp_path: Path, size: int, channels: int) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(_grey()).save(path)
    with pytest.raises(ValueError, match=r"size|in_channels"):
        load_image(path, size=size, in_channels=channels)


def test_to_tensor_scales_uint8_and_replicates() -> None:
    pixels = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    one = to_tensor(pixels)
    assert one.shape == (1, 2, 2)
    assert one.dtype == torch.float32
    torch.testing.assert_close(one[0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    three = to_tensor(pixels, 3)
    assert three.shape == (3, 2, 2)
    assert torch.equal(three[2], one[0])


def test_to_tensor_from_rgb_and_float() -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[..., 1] = 255
    torch.testing.assert_close(to_tensor(rgb, 1), torch.full((1, 2, 2), 0.587))
    assert to_tensor(rgb, 3).shape == (3, 2, 2)
    floats = np.full((3, 3), 0.25, dtype=np.float64)
    torch.testing.assert_close(to_tensor(floats), torch.full((1, 3, 3), 0.25))


def test_to_tensor_accepts_read_only_memory() -> None:
    pixels = np.arange(16, dtype=np.uint8).reshape(4, 4)
    pixels.flags.writeable = False
    tensor = to_tensor(pixels)
    tensor += 1  # must not touch (or warn about) the read-only source
    assert pixels[0, 0] == 0


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 2, 4), np.uint8),
        np.zeros((2,), np.uint8),
        np.full((2, 2), 1.5),
        np.zeros((2, 2), np.int32),
    ],
)
def test_to_tensor_rejects(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="image"):
        to_tensor(bad)


def test_center_crop_is_xrv_center_crop_then_resize(tmp_path: Path) -> None:
    xrv = pytest.importorskip("torchxrayvision")
    from chexviz.models.xrv import center_crop_resize

    pixels = np.random.default_rng(3).integers(0, 256, (200, 300), dtype=np.uint8)
    for array in (pixels, pixels.T.copy()):  # landscape and portrait
        path = tmp_path / f"cxr_{array.shape[0]}.png"
        Image.fromarray(array).save(path)
        square = xrv.datasets.XRayCenterCrop()(array[None])  # xrv's own crop, same offsets
        assert square.shape == (1, 200, 200)
        np.testing.assert_array_equal(load_image(path, size=200, crop="center"), square[0])
        ours = torch.from_numpy(load_image(path, size=64, crop="center")).float() / 255
        reference = center_crop_resize(torch.from_numpy(array).float()[None] / 255, 64)[0]
        # PIL's and torch's antialiased bilinear resizes differ by rounding, not by position.
        assert float((ours - reference).abs().mean()) < 2 / 255
        whole = torch.from_numpy(load_image(path, size=64)).float() / 255
        assert float((whole - reference).abs().mean()) > 5 * float((ours - reference).abs().mean())


def test_center_crop_happens_after_exif_orientation_and_jpeg_draft(tmp_path: Path) -> None:
    # A 400x200 picture stored on its side (EXIF 6): upright it is 200 wide, 400 tall.
    upright = np.zeros((400, 200), dtype=np.uint8)
    upright[100:300] = 255  # the centred square is white, the rest black
    stored = np.rot90(upright, k=1).copy()  # what undoing orientation 6 turns back upright
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "turned.jpg"
    image.save(path, quality=95, exif=exif)
    assert ImageOps.exif_transpose(Image.open(path)).size == (200, 400)
    cropped = load_image(path, size=25, crop="center")  # drafted at 1/8 scale
    assert cropped.shape == (25, 25)
    assert cropped[2:-2, 2:-2].min() > 200
    assert load_image(path, size=25)[:3].max() < 50  # the whole image's black top


def test_crop_argument_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(_grey()).save(path)
    with pytest.raises(ValueError, match=r"crop must be 'whole' or 'center', got 'centre'"):
        load_image(path, size=8, crop="centre")  # type: ignore[arg-type]
