"""Images from hospital exports: every file is read correctly or refused naming the file.

tests/test_images.py covers the decoder's main paths (colour modes, one EXIF orientation,
16-bit scaling, a truncated JPEG, the pixel limit); these tests cover hostile files, every
EXIF orientation, the data set and its cache, and DataLoader worker processes.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader

from chexviz.data.dataset import CheXpertDataset
from chexviz.data.images import ImageDecodeError, load_image

MakeData = Callable[..., Path]
SIZE = 8


def _noise(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * (width + 1) * 4)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + (_chunk(b"IEND", b""))
    )


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG with the frame header patched to claim ``width x height``."""
    data = bytearray(_encoded(_noise(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _garbage_scan(jpeg: bytes, seed: int) -> bytes:
    """``jpeg`` with its scan data, from byte 400 on, replaced by 2,000 seeded random bytes."""
    return jpeg[:400] + np.random.default_rng(seed).bytes(2000)


def _hostile_files() -> dict[str, bytes]:
    jpeg = _encoded(_noise(), "JPEG", quality=90)
    png = _encoded(_noise(), "PNG")
    corrupt_png = bytearray(png)
    corrupt_png[len(png) // 2 : len(png) // 2 + 16] = b"\xff" * 16
    bad_crc = bytearray(png)
    bad_crc[29] ^= 0xFF  # IHDR checksum
    return {
        "empty.png": b"",
        "text.jpg": b"Patient data, not an image\n",
        "jpeg-header-only.jpg": jpeg[:200],
        "jpeg-half.jpg": jpeg[: len(jpeg) // 2],
        # libjpeg fails on this garbage ...
        "jpeg-garbage-scan.jpg": _garbage_scan(jpeg, seed=0),
        # ... and decodes this one (with warnings Pillow discards) into grey blocks.
        "jpeg-garbage-scan-libjpeg-decodes.jpg": _garbage_scan(jpeg, seed=1),
        "jpeg-stray-restart-marker-in-scan.jpg": jpeg[:600] + b"\xff\xd0" + jpeg[602:],
        "png-half.png": png[: len(png) // 2],
        "png-corrupt-data.png": bytes(corrupt_png),
        "png-bad-header-crc.png": bytes(bad_crc),
        "png-signature-only.png": png[:8],
        "gif-truncated.gif": _encoded(_noise(), "GIF")[:100],
        "bmp-truncated.bmp": _encoded(_noise(), "BMP")[:200],
        "tiff-truncated.tif": _encoded(_noise(), "TIFF")[:150],
        "bomb-png-900-megapixels.png": _png_claiming(30_000, 30_000),
        "bomb-png-144-megapixels.png": _png_claiming(12_000, 12_000),
        "bomb-jpeg-4-gigapixels.jpg": _jpeg_claiming(65_000, 65_000),
        "float-tiff.tif": _encoded(Image.fromarray(np.full((8, 8), 0.5, np.float32)), "TIFF"),
    }


HOSTILE = _hostile_files()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_is_refused_naming_it(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(HOSTILE[name])
    with pytest.raises(ImageDecodeError) as info:
        load_image(path, size=SIZE)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")


def test_corrupt_scans_are_refused_even_where_pillow_decodes_them(tmp_path: Path) -> None:
    # Pillow alone reads these two files without an error or a warning, so only chexviz's own
    # check of the JPEG stream refuses them (test_hostile_file_is_refused_naming_it).
    for name in ("jpeg-garbage-scan-libjpeg-decodes.jpg", "jpeg-stray-restart-marker-in-scan.jpg"):
        path = tmp_path / name
        path.write_bytes(HOSTILE[name])
        with Image.open(path) as image:
            image.load()
        refusal = rf"^{re.escape(str(path))}: (corrupt|truncated) JPEG"
        with pytest.raises(ImageDecodeError, match=refusal):
            load_image(path, size=SIZE)
    path = tmp_path / "jpeg-garbage-scan.jpg"
    path.write_bytes(HOSTILE["jpeg-garbage-scan.jpg"])
    with pytest.raises(OSError, match="broken data stream"), Image.open(path) as image:
        image.load()


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"restart_marker_blocks": 2}])
def test_valid_jpeg_streams_pass_the_check(tmp_path: Path, options: dict[str, object]) -> None:
    path = tmp_path / "x.jpg"
    _noise(64, 48).convert("RGB").save(path, quality=90, comment="c", **options)
    expected = load_image(Image.open(path), size=SIZE)
    path.write_bytes(path.read_bytes() + b"bytes after the end-of-image marker")
    np.testing.assert_array_equal(load_image(path, size=SIZE), expected)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bombs_are_refused_before_any_pixel_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError(f"{self.size} pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for name in sorted(HOSTILE):
        if name.startswith("bomb"):
            path = tmp_path / name
            path.write_bytes(HOSTILE[name])
            with pytest.raises(ImageDecodeError, match=r"MAX_IMAGE_PIXELS|decompression bomb"):
                load_image(path, size=SIZE)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_turned_upright(tmp_path: Path, orientation: int) -> None:
    upright = Image.fromarray(np.arange(24 * 16, dtype=np.uint8).reshape(16, 24))
    # What a camera stores so that applying ``orientation`` displays ``upright``.
    inverse = {
        1: None,
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }[orientation]
    stored = upright if inverse is None else upright.transpose(inverse)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    stored.save(path, exif=exif)
    np.testing.assert_array_equal(load_image(path, size=20), load_image(upright, size=20))


def test_damaged_exif_does_not_stop_decoding(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = bytearray(_encoded(_noise(), "JPEG", exif=exif))
    start = data.index(b"Exif")
    data[start + 10 : start + 30] = b"\xff" * 20
    path = tmp_path / "bad-exif.jpg"
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="Corrupt EXIF"):
        out = load_image(path, size=SIZE)
    assert out.shape == (SIZE, SIZE)


def _mode_images() -> dict[str, Image.Image]:
    grey = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (24, 1))
    base = Image.fromarray(grey)
    palette = base.convert("P")
    palette.info["transparency"] = 0
    return {
        "I;16 png": Image.fromarray(grey.astype(np.uint16) * 257),
        "I;16B tiff": Image.fromarray(grey.astype(">u2") * 257),
        "I 32-bit tiff": Image.fromarray(grey.astype(np.int32) * 257),
        "CMYK jpeg": base.convert("CMYK"),
        "YCbCr jpeg": base.convert("YCbCr"),
        "P transparent png": palette,
        "RGBA transparent png": base.convert("RGBA"),
    }


@pytest.mark.parametrize("name", sorted(_mode_images()))
def test_unusual_modes_read_as_the_same_grey(tmp_path: Path, name: str) -> None:
    image = _mode_images()[name]
    suffix = {"png": ".png", "tiff": ".tif", "jpeg": ".jpg"}[name.rsplit(" ", 1)[1]]
    path = tmp_path / f"x{suffix}"
    image.save(path, **({"quality": 100} if suffix == ".jpg" else {}))
    grey = np.tile(np.linspace(0, 255, 32), (24, 1)).astype(np.uint8)
    expected = load_image(Image.fromarray(grey), size=16)
    out = load_image(path, size=16)
    assert out.dtype == np.uint8
    assert out.shape == (16, 16)
    np.testing.assert_allclose(out.astype(int), expected.astype(int), atol=3)


def _break(release: Path, name: str) -> Path:
    target = release / "train/patient00002/study1/view1_frontal.jpg"
    target.write_bytes(HOSTILE[name])
    return target


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", ["empty.png", "jpeg-half.jpg", "bomb-png-900-megapixels.png"])
def test_dataset_names_file_and_line_in_every_mode(
    make_chexpert: MakeData, tmp_path: Path, name: str
) -> None:
    release = make_chexpert(patients=3)
    target = _break(release, name)
    pattern = rf"{target}: .*train\.csv line 6\)"
    lazy = CheXpertDataset(release, image_size=SIZE)
    with pytest.raises(ImageDecodeError, match=pattern):
        lazy[2]
    with pytest.raises(ImageDecodeError, match=pattern):
        CheXpertDataset(release, image_size=SIZE, cache_dir=tmp_path / "cache")
    skipped = CheXpertDataset(release, image_size=SIZE, on_error="skip", cache_dir=tmp_path / "c")
    assert len(skipped) == len(lazy) - 1
    assert target not in skipped.paths
    assert str(target) in skipped.skipped["error"].iloc[0]


def _first_error(loader: DataLoader[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """The error iterating ``loader`` raises, as ``"Type: message"``."""
    iterator = iter(loader)
    try:
        for _ in iterator:
            pass
    except Exception as error:
        # torch's re-raise leaves a reference cycle through the traceback that keeps the
        # iterator, and so the workers, alive until a garbage collection; drop it so that
        # ``del`` below shuts them down at once.
        error.__traceback__ = None
        return f"{type(error).__name__}: {error}"
    finally:
        del iterator
    raise AssertionError("the loader raised nothing")


@pytest.mark.parametrize("cached", [False, True])
def test_dataloader_workers_report_the_file(
    make_chexpert: MakeData, tmp_path: Path, cached: bool
) -> None:
    release = make_chexpert(patients=3)
    data = CheXpertDataset(release, image_size=SIZE, on_error="skip" if cached else "raise")
    target = _break(release, "jpeg-half.jpg")  # broken after the data set was built
    if cached:
        # A cache built before the damage keeps serving the pixels it decoded then.
        data = CheXpertDataset(release, image_size=SIZE, cache_dir=tmp_path / "c", on_error="skip")
        assert data.num_skipped == 1
        batches = list(DataLoader(data, batch_size=2, num_workers=2, timeout=120))
        assert sum(len(images) for images, _ in batches) == len(data)
        return
    message = _first_error(DataLoader(data, batch_size=2, num_workers=2, timeout=120))
    # torch re-raises a worker's error as RuntimeError when it cannot rebuild the type; the
    # message keeps the original one, with the file and the CSV line.
    assert message.startswith(("ImageDecodeError: ", "RuntimeError: Caught ImageDecodeError"))
    assert str(target) in message
    assert "train.csv line 6" in message


def test_dataloader_workers_refuse_a_link_out_of_the_root(
    make_chexpert: MakeData, tmp_path: Path
) -> None:
    release = make_chexpert(patients=3)
    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(outside)
    data = CheXpertDataset(release, image_size=SIZE)
    target = release / "train/patient00002/study1/view1_frontal.jpg"
    target.unlink()
    target.symlink_to(outside)
    message = _first_error(DataLoader(data, batch_size=2, num_workers=2, timeout=120))
    assert message.startswith(("ValueError: ", "RuntimeError: Caught ValueError"))
    assert "symbolic link" in message
    assert "train.csv line 6" in message


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


def test_tampered_cache_file_is_rebuilt_without_unpickling(
    make_chexpert: MakeData, tmp_path: Path
) -> None:
    release = make_chexpert(patients=2)
    cache_dir = tmp_path / "cache"
    first = CheXpertDataset(release, image_size=SIZE, cache_dir=cache_dir)
    expected = [first[i][0] for i in range(len(first))]
    (npy,) = cache_dir.glob("*.npy")
    marker = tmp_path / "PWNED"
    objects = np.empty(len(first), dtype=object)
    objects[:] = [_Payload(marker)] * len(first)
    with open(npy, "wb") as handle:
        np.save(handle, objects, allow_pickle=True)
    # The payload is live: numpy's unsafe mode runs it.
    np.load(npy, allow_pickle=True)
    assert marker.exists()
    marker.unlink()
    again = CheXpertDataset(release, image_size=SIZE, cache_dir=cache_dir)
    assert not marker.exists()
    for index, image in enumerate(expected):
        assert torch.equal(again[index][0], image)
    assert pickle.loads(pickle.dumps(again))[0][0].shape == (1, SIZE, SIZE)
