"""Decoding chest X-ray images into model-ready arrays.

This module is the single place where images are decoded: the dataset, the preprocessed cache
and Grad-CAM all call [`load_image`][chexviz.data.images.load_image], so an image looks the same
to a model whichever way it arrives.

Every image becomes 8-bit greyscale (RGB, RGBA, palette and 16-bit images included), is turned
upright by its EXIF orientation, and is resized to ``size x size`` with bilinear, antialiased
resampling: whole by default (aspect ratio not kept), or, with ``crop="center"``, its centred
square of side ``min(H, W)`` (torchxrayvision's ``XRayCenterCrop``, same offsets), the input
torchxrayvision's models were trained on.

DICOM files (named ``*.dcm`` / ``*.dicom``, or carrying the ``DICM`` preamble) are decoded by
[`chexviz.data.dicom`][chexviz.data.dicom] into the same ``[0, 1]`` grey range, resized in
floating point and rounded to 8 bits like the others. That module is imported on the first
DICOM file only, since pydicom is an optional dependency (``chexviz[dicom]``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from chexviz._internal.checks import Crop, check_crop, check_in_channels

__all__ = ["ImageDecodeError", "ImageSource", "load_image", "read_image_size", "to_tensor"]

ImageSource = str | os.PathLike[str] | Image.Image
"""A path to an image file, or an already opened PIL image."""

# EXIF orientations that turn the picture by a quarter (ImageOps.exif_transpose swaps its sides).
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
# Files with these endings are never DICOM, so they are opened without peeking at the preamble.
_PIL_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"})
_DICOM_MAGIC_OFFSET = 128
# JPEG markers (ITU-T T.81, table B.1) that carry no length field: TEM, RST0-7, SOI, EOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8, 0xD9})
_JPEG_SOS, _JPEG_EOI, _JPEG_DRI = 0xDA, 0xD9, 0xDD


class ImageDecodeError(ValueError):
    """An image file cannot be decoded (corrupt, truncated, not an image, too large).

    Attributes:
        path: The file at fault, or ``None`` for an in-memory image.
    """

    def __init__(self, path: Path | None, reason: str) -> None:
        self.path = path
        self.reason = reason
        where = str(path) if path is not None else "in-memory image"
        super().__init__(f"{where}: {reason}")


def load_image(
    source: ImageSource, *, size: int, in_channels: int = 1, crop: Crop = "whole"
) -> npt.NDArray[np.uint8]:
    """Decodes an image and resizes it, whole or its centred square, to ``size x size`` grey.

    JPEG files at least twice the requested size are decoded at 1/2, 1/4 or 1/8 scale
    (``Image.draft``), which saves most of the decoding work at a negligible cost in quality
    since the result is downsampled anyway.

    Args:
        source: Path of the image file, or a PIL image.
        size: Side of the square output, in pixels.
        in_channels: 1 for ``[size, size]`` output, 3 for ``[size, size, 3]`` with the grey
            value replicated in every channel.
        crop: ``"whole"`` resizes the whole picture (aspect ratio not kept); ``"center"``
            first takes its centred square of side ``min(H, W)`` once it is upright, with
            torchxrayvision's offsets (``top = H // 2 - side // 2``, likewise ``left``), as
            its models expect.

    Returns:
        uint8 array ``[size, size]`` or ``[size, size, 3]``.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        ImageDecodeError: The file is not a readable image, is truncated or corrupt, or has
            more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (decompression-bomb protection);
            a DICOM file is not a single grey radiograph or its pixel data cannot be decoded;
            the message names the file.
        ImportError: The file is DICOM and pydicom is not installed (``chexviz[dicom]``).
        ValueError: ``size``, ``in_channels`` or ``crop`` is invalid.
    """
    _check_size(size)
    _check_channels(in_channels)
    crop = check_crop(crop)
    if isinstance(source, Image.Image):
        filename = getattr(source, "filename", "")
        grey = _decode(source, Path(filename) if filename else None, size, crop)
    else:
        path = Path(source)
        if _is_dicom(path):
            grey = _dicom_to_grey(path, size, crop)
        else:
            with _open(path) as image:
                if image.format == "JPEG":
                    _check_jpeg_stream(path)
                grey = _decode(image, path, size, crop)
    if in_channels == 3:
        return np.repeat(grey[:, :, None], 3, axis=2)
    return grey


def read_image_size(source: ImageSource, *, upright: bool = False) -> tuple[int, int]:
    """Reads an image's width and height from its header, without decoding the pixels.

    Args:
        source: The image file, or an opened PIL image.
        upright: Give the size after the EXIF orientation is applied, as
            [`load_image`][chexviz.data.images.load_image] turns the picture (a quarter-turned
            photograph swaps width and height); ``False`` gives the size as stored.

    Returns:
        ``(width, height)`` in pixels.

    Raises:
        FileNotFoundError: The file does not exist.
        ImageDecodeError: The file is not a readable image, or its EXIF data is corrupt.
        ImportError: The file is DICOM and pydicom is not installed.
    """
    if isinstance(source, Image.Image):
        filename = getattr(source, "filename", "")
        return _stored_or_upright_size(source, Path(filename) if filename else None, upright)
    file = Path(source)
    if _is_dicom(file):
        from chexviz.data.dicom import read_dicom_size

        return read_dicom_size(file)  # DICOM has no EXIF orientation
    with _open(file) as image:
        return _stored_or_upright_size(image, file, upright)


def to_tensor(array: npt.ArrayLike, in_channels: int = 1) -> torch.Tensor:
    """Turns a decoded image into a float tensor ``[in_channels, S, S]`` in ``[0, 1]``.

    Args:
        array: uint8 image ``[H, W]`` or ``[H, W, 3]`` (as returned by
            [`load_image`][chexviz.data.images.load_image]), or a float image of the same shapes
            with values in ``[0, 1]``. A 3-channel image asked for as 1 channel is converted to
            grey with the ITU-R 601 luma weights PIL uses.
        in_channels: 1 or 3; a grey image asked for as 3 channels is replicated.

    Returns:
        float32 tensor ``[in_channels, H, W]`` with values in ``[0, 1]``.

    Raises:
        ValueError: The array has an unsupported shape or dtype, or float values outside
            ``[0, 1]``.
    """
    _check_channels(in_channels)
    data = np.asarray(array)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[2] != 3):
        raise ValueError(f"image array must be [H, W] or [H, W, 3], got shape {list(data.shape)}")
    if data.dtype == np.uint8:
        # A copy, because memory-mapped cache slots are read-only.
        tensor = torch.from_numpy(np.array(data, dtype=np.float32)).div_(255.0)
    elif np.issubdtype(data.dtype, np.floating):
        tensor = torch.from_numpy(np.array(data, dtype=np.float32))
        if tensor.numel() and not bool(((tensor >= 0) & (tensor <= 1)).all()):
            raise ValueError("float image values must lie in [0, 1]")
    else:
        raise ValueError(f"image array must be uint8 or float, got {data.dtype}")
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    if tensor.shape[0] == in_channels:
        return tensor.contiguous()
    if in_channels == 3:
        return tensor.expand(3, -1, -1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(3, 1, 1)
    return (tensor * weights).sum(dim=0, keepdim=True).clamp_(0.0, 1.0)


def _stored_or_upright_size(
    image: Image.Image, path: Path | None, upright: bool
) -> tuple[int, int]:
    width, height = (int(n) for n in image.size)
    if not upright:
        return width, height
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(path, f"corrupt EXIF data ({error})") from error
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def _is_dicom(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in _DICOM_SUFFIXES:
        return True
    if suffix in _PIL_SUFFIXES:
        return False
    try:
        with path.open("rb") as handle:
            handle.seek(_DICOM_MAGIC_OFFSET)
            return handle.read(4) == b"DICM"
    except (OSError, ValueError):
        # Let the image decoder report a missing or unreadable file in its own words.
        return False


def _dicom_to_grey(path: Path, size: int, crop: Crop) -> npt.NDArray[np.uint8]:
    from chexviz.data.dicom import read_dicom

    unit = _cropped(Image.fromarray(read_dicom(path)), crop)
    resized = np.asarray(unit.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    pixels: npt.NDArray[np.uint8] = np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)
    return pixels


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise FileNotFoundError(2, "image file not found", str(path)) from None
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(path, f"decompression bomb refused: {error}") from error
    except UnidentifiedImageError as error:
        raise ImageDecodeError(path, "not a readable image file") from error
    except (OSError, ValueError) as error:
        # ValueError: a name the OS cannot take, such as one with a NUL character.
        raise ImageDecodeError(path, f"cannot open image ({error})") from error


def _check_jpeg_stream(path: Path) -> None:
    """Refuses a JPEG whose marker structure is broken, which libjpeg would decode anyway.

    libjpeg only warns about corrupt scan data (a stray marker inside the entropy-coded data,
    bytes missing before the end-of-image marker) and fills what it cannot decode with grey;
    Pillow discards those warnings, so such a file would otherwise load as a wrong picture
    without a word. This walks the segments as T.81 annex B lays them out: every marker must
    be a defined one; the entropy-coded data after each start-of-scan may hold ``0xFF`` only as
    a stuffed ``0xFF00``, as fill before the next marker, or as restart markers, and those only
    where a restart interval is defined and in their cyclic order; the stream must reach its
    end-of-image marker (bytes after it are ignored, as decoders do).
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageDecodeError(path, f"cannot read image ({error})") from error
    position = 2  # after SOI, which Image.open has already checked
    restarts = False
    while True:
        while position + 1 < len(data) and data[position] == data[position + 1] == 0xFF:
            position += 1  # fill bytes before a marker
        if position + 1 >= len(data):
            raise ImageDecodeError(path, "truncated JPEG: it ends before its end-of-image marker")
        marker = data[position + 1]
        if data[position] != 0xFF:
            raise ImageDecodeError(path, f"corrupt JPEG data: no marker at byte {position}")
        if marker == _JPEG_EOI:
            return
        if marker == 0x00 or 0x02 <= marker <= 0xBF or marker in (0xD8, *range(0xD0, 0xD8)):
            raise ImageDecodeError(
                path, f"corrupt JPEG data: unexpected marker 0xFF{marker:02X} at byte {position}"
            )
        position += 2
        if marker in _JPEG_STANDALONE:
            continue
        length = int.from_bytes(data[position : position + 2], "big")
        if marker == _JPEG_DRI:
            restarts = int.from_bytes(data[position + 2 : position + 4], "big") > 0
        position += length
        if marker == _JPEG_SOS:
            position = _end_of_scan(data, position, path, restarts=restarts)


def _end_of_scan(data: bytes, position: int, path: Path, *, restarts: bool) -> int:
    """Where the entropy-coded data starting at ``position`` ends: at its first real marker."""
    expected = 0xD0
    while True:
        position = data.find(b"\xff", position)
        if position < 0 or position + 1 >= len(data):
            return len(data)
        following = data[position + 1]
        if following == 0x00:
            position += 2  # a stuffed 0xFF data byte
        elif 0xD0 <= following <= 0xD7:
            if not restarts or following != expected:
                raise ImageDecodeError(
                    path,
                    f"corrupt JPEG data: unexpected restart marker 0xFF{following:02X} at byte "
                    f"{position}",
                )
            expected = 0xD0 + (expected - 0xD0 + 1) % 8
            position += 2
        else:
            return position


def _decode(image: Image.Image, path: Path | None, size: int, crop: Crop) -> npt.NDArray[np.uint8]:
    try:
        return _to_grey(image, path, size, crop)
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError) as error:
        # PIL reports truncated and corrupt data as OSError, SyntaxError or ValueError.
        raise ImageDecodeError(path, f"corrupt or truncated image ({error})") from error


def _to_grey(image: Image.Image, path: Path | None, size: int, crop: Crop) -> npt.NDArray[np.uint8]:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        # PIL itself only warns between 1x and 2x its limit; a radiograph never gets near it.
        raise ImageDecodeError(
            path,
            f"image of {image.width}x{image.height} pixels exceeds PIL.Image.MAX_IMAGE_PIXELS "
            f"({limit}); raise that limit if the file is trusted",
        )
    if image.format == "JPEG":
        # Decodes at 1/2, 1/4 or 1/8 scale where the result still covers size x size, so its
        # short side, and with it the centred square, stays at least size.
        image.draft("L", (size, size))
    upright = ImageOps.exif_transpose(image)
    if upright.mode == "F":
        # Floating-point pixels have no agreed range, and convert("L") would clip them to black.
        raise ImageDecodeError(
            path, "floating-point (mode F) images are not supported; save it as 8 or 16 bits"
        )
    if upright.mode in _SIXTEEN_BIT_MODES:
        grey = _sixteen_to_eight(upright)
    elif upright.mode == "L":
        grey = upright
    else:
        grey = upright.convert("L")
    resized = _cropped(grey, crop).resize((size, size), Image.Resampling.BILINEAR)
    pixels: npt.NDArray[np.uint8] = np.array(resized, dtype=np.uint8)
    return pixels


def _cropped(image: Image.Image, crop: Crop) -> Image.Image:
    """The whole upright image, or its centred square with torchxrayvision's offsets."""
    if crop == "whole":
        return image
    width, height = image.size
    side = min(width, height)
    top, left = height // 2 - side // 2, width // 2 - side // 2
    return image.crop((left, top, left + side, top + side))


def _sixteen_to_eight(image: Image.Image) -> Image.Image:
    # PIL's convert("L") clips 16-bit values at 255 instead of scaling, which saturates X-rays.
    values = np.asarray(image).astype(np.int64)
    scaled = (np.clip(values, 0, 65535) * 255 + 32767) // 65535
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")


def _check_channels(in_channels: int) -> None:
    check_in_channels(in_channels)
