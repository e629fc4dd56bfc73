"""DICOM radiographs: pixel data decoded with pydicom into the same grey range as a JPEG.

Hospital data comes as DICOM, not JPEG. [`read_dicom`][chexviz.data.dicom.read_dicom] turns a
chest radiograph stored as DICOM into a float image in ``[0, 1]``, dark for air and bright for
bone, as a JPEG of it would look; [`chexviz.data.images.load_image`][chexviz.data.images.load_image]
hands every ``.dcm`` file (or any file with the ``DICM`` preamble) to it, so data sets,
Grad-CAM and ``chexviz explain`` take DICOM files wherever they take JPEG or PNG.

The steps follow the DICOM grey-scale pipeline (PS3.3 C.11):

1. the file is checked: a radiograph (``Modality`` CR, DX or RG), one frame, one sample per
   pixel, ``PhotometricInterpretation`` MONOCHROME1 or MONOCHROME2, 1 to 16 bits stored, at
   most ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (the limit of the other decoders), all before
   any pixel is decoded;
2. the pixel data is decoded (compressed transfer syntaxes through the plugins of the
   ``chexviz[dicom]`` extra: JPEG Lossless and JPEG-LS by pylibjpeg-libjpeg, JPEG 2000 by
   pylibjpeg-openjpeg, RLE by pylibjpeg-rle, else by pydicom itself);
3. the modality LUT (``RescaleSlope`` / ``RescaleIntercept`` or a Modality LUT Sequence) and
   then the first VOI transform (a VOI LUT Sequence, else ``WindowCenter`` / ``WindowWidth``
   with its ``VOILUTFunction``) are applied with pydicom's own functions;
4. values are scaled to ``[0, 1]`` by the range the stored bits can reach after those
   transforms (``2**BitsStored`` values, signed or not), so 8-, 12- and 16-bit files of the
   same picture give the same image, and no per-image stretching depends on content (the
   transforms are computed once per file for every possible value, then looked up);
5. MONOCHROME1 (bright air, as many CR plates store it) is inverted.

pydicom and the decoder plugins are optional: ``pip install "chexviz[dicom]"``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from chexviz.data.images import ImageDecodeError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset as DicomDataset

__all__ = [
    "DICOM_SUFFIXES",
    "XRAY_MODALITIES",
    "read_dicom",
    "read_dicom_size",
    "write_dicom",
]

logger = logging.getLogger(__name__)

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
"""File name endings read as DICOM (any case); other files are DICOM when they have the preamble."""

XRAY_MODALITIES: frozenset[str] = frozenset({"CR", "DX", "RG"})
"""``Modality`` values accepted as radiographs: computed, digital and radiographic imaging."""

_INSTALL = 'DICOM support needs pydicom and its decoders: pip install "chexviz[dicom]"'
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_MAX_BITS = 16
# Elements larger than this are read from the file only when used, so a file with a huge
# private element (or a huge pixel data element) costs nothing before the header is checked.
_DEFER_BYTES = 4096
_SOP_CLASSES = {
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "RG": "1.2.840.10008.5.1.4.1.1.1.1",
}


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError as error:
        raise ImportError(_INSTALL) from error
    return pydicom


def _read_header(path: Path, *, pixels: bool) -> DicomDataset:
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(  # type: ignore[no-any-return]
            path, defer_size=_DEFER_BYTES if pixels else None, stop_before_pixels=not pixels
        )
    except FileNotFoundError:
        raise FileNotFoundError(2, "image file not found", str(path)) from None
    except pydicom.errors.InvalidDicomError as error:
        raise ImageDecodeError(path, f"not a DICOM file ({error})") from error
    except Exception as error:
        # pydicom's parser reports damaged files with many exception types (OSError, EOFError,
        # ValueError, struct.error, its own BytesLengthException, ...): each means "damaged".
        raise ImageDecodeError(path, f"corrupt or truncated DICOM header ({error})") from error


def _get(ds: DicomDataset, path: Path, keyword: str) -> Any:
    try:
        value = ds.get(keyword)
    except Exception as error:
        # pydicom converts values lazily: a damaged element fails when it is first read, with
        # whatever exception its value conversion raises.
        raise ImageDecodeError(path, f"DICOM element {keyword} is malformed ({error})") from error
    return value


def _int(ds: DicomDataset, path: Path, keyword: str, default: int | None = None) -> int:
    value = _get(ds, path, keyword)
    if value is None or value == "":
        if default is None:
            raise ImageDecodeError(path, f"DICOM element {keyword} is missing")
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as error:
        message = f"DICOM element {keyword} is {value!r}, not a number"
        raise ImageDecodeError(path, message) from error


def _check(ds: DicomDataset, path: Path) -> tuple[int, int]:
    """Checks that ``ds`` holds one grey radiograph; returns its ``(width, height)``."""
    modality = str(_get(ds, path, "Modality") or "").strip().upper()
    if modality not in XRAY_MODALITIES:
        shown = repr(modality) if modality else "missing"
        raise ImageDecodeError(
            path,
            f"DICOM Modality is {shown}, not a radiograph ({', '.join(sorted(XRAY_MODALITIES))})",
        )
    photometric = str(_get(ds, path, "PhotometricInterpretation") or "").strip().upper()
    if photometric not in _MONOCHROME:
        raise ImageDecodeError(
            path,
            f"DICOM PhotometricInterpretation is {photometric or 'missing'}; a radiograph is "
            "MONOCHROME1 or MONOCHROME2",
        )
    samples = _int(ds, path, "SamplesPerPixel", 1)
    if samples != 1:
        raise ImageDecodeError(path, f"DICOM SamplesPerPixel is {samples}, not 1 (grey)")
    frames = _int(ds, path, "NumberOfFrames", 1)
    if frames != 1:
        raise ImageDecodeError(path, f"DICOM file holds {frames} frames; a radiograph has one")
    bits = _int(ds, path, "BitsStored")
    allocated = _int(ds, path, "BitsAllocated")
    if not 1 <= bits <= min(allocated, _MAX_BITS):
        raise ImageDecodeError(
            path,
            f"DICOM BitsStored {bits} (BitsAllocated {allocated}) is not supported; "
            f"radiographs store 1 to {_MAX_BITS} bits",
        )
    representation = _int(ds, path, "PixelRepresentation", 0)
    if representation not in (0, 1):
        raise ImageDecodeError(path, f"DICOM PixelRepresentation is {representation}, not 0 or 1")
    width, height = _int(ds, path, "Columns"), _int(ds, path, "Rows")
    if width < 1 or height < 1:
        raise ImageDecodeError(path, f"DICOM image of {width}x{height} pixels is empty")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise ImageDecodeError(
            path,
            f"image of {width}x{height} pixels exceeds PIL.Image.MAX_IMAGE_PIXELS ({limit}); "
            "raise that limit if the file is trusted",
        )
    return width, height


def read_dicom_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Reads a DICOM radiograph's width and height from its header, checking it as `read_dicom`.

    Args:
        path: The DICOM file.

    Returns:
        ``(width, height)`` in pixels (``Columns``, ``Rows``).

    Raises:
        FileNotFoundError: The file does not exist.
        ImageDecodeError: The file is not DICOM, or not a single grey radiograph.
        ImportError: pydicom is not installed.
    """
    file = Path(path)
    return _check(_read_header(file, pixels=False), file)


def read_dicom(path: str | os.PathLike[str]) -> npt.NDArray[np.float32]:
    """Decodes a DICOM radiograph into grey values in ``[0, 1]`` (0 black, 1 white).

    See the module description for the checks and the grey-scale pipeline.

    Args:
        path: The DICOM file.

    Returns:
        float32 array ``[Rows, Columns]``.

    Raises:
        FileNotFoundError: The file does not exist.
        ImageDecodeError: The file is not DICOM, not a single grey radiograph, too large, or
            its pixel data is truncated or cannot be decoded (a missing decoder plugin is
            named); the message names the file.
        ImportError: pydicom is not installed.
    """
    file = Path(path)
    ds = _read_header(file, pixels=True)
    width, height = _check(ds, file)
    if "PixelData" not in ds:
        raise ImageDecodeError(file, "DICOM file has no pixel data")
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID", "unknown") if meta is not None else "unknown"
    try:
        stored = np.asarray(ds.pixel_array)
    except Exception as error:
        # Decoders raise many kinds of errors (ValueError for a short buffer, RuntimeError or
        # NotImplementedError for a missing plugin, plugin-specific ones for bad codestreams).
        name = getattr(syntax, "name", str(syntax))
        raise ImageDecodeError(
            file, f"DICOM pixel data ({name}) cannot be decoded: {error}. {_INSTALL}"
        ) from error
    if stored.shape != (height, width):
        raise ImageDecodeError(
            file, f"DICOM pixel data has shape {stored.shape}, not Rows x Columns {height, width}"
        )
    table = _grey_table(ds, file)
    if str(ds.PhotometricInterpretation).strip().upper() == "MONOCHROME1":
        table = 1.0 - table
    return table[_table_index(stored, int(ds.BitsStored), _signed(ds))]


def _signed(ds: DicomDataset) -> bool:
    return int(ds.get("PixelRepresentation", 0)) == 1


def _grey_table(ds: DicomDataset, path: Path) -> npt.NDArray[np.float32]:
    """Grey level in [0, 1] of every value the stored bits can hold, in increasing order.

    The modality LUT and the VOI transform act on each value alone, so applying them to the
    ``2**BitsStored`` possible values once and looking every pixel up in the result is exact,
    and much cheaper than transforming a whole radiograph in floating point. The range these
    values reach after the transforms becomes ``[0, 1]``.
    """
    pixels = _pydicom().pixels
    bits = int(ds.BitsStored)
    low = -(2 ** (bits - 1)) if _signed(ds) else 0
    values: Any = np.arange(low, low + 2**bits, dtype=np.int64)
    try:
        values = pixels.apply_modality_lut(values, ds)
        if "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds):
            values = pixels.apply_voi_lut(values, ds, index=0)
    except Exception as error:
        # Damaged LUT or window elements fail inside pydicom with many exception types.
        raise ImageDecodeError(path, f"DICOM grey-scale transform is invalid ({error})") from error
    levels = np.asarray(values, dtype=np.float64)
    if levels.shape != (2**bits,) or not np.isfinite(levels).all():
        raise ImageDecodeError(path, "DICOM grey-scale transform gives invalid values")
    darkest, brightest = float(levels.min()), float(levels.max())
    if brightest <= darkest:
        logger.warning("%s: its grey-scale transform maps every value to one level", path)
        return np.zeros(2**bits, dtype=np.float32)
    return ((levels - darkest) / (brightest - darkest)).astype(np.float32)


def _table_index(stored: npt.NDArray[Any], bits: int, signed: bool) -> npt.NDArray[np.intp]:
    """Position of each stored value in `_grey_table`'s order."""
    # Bits above BitsStored may hold overlays or garbage; they are not part of the value.
    masked: npt.NDArray[np.intp] = stored.astype(np.intp, copy=False) & (2**bits - 1)
    if not signed:
        return masked
    # Two's complement over ``bits`` bits: table order runs from -2**(bits-1) upwards.
    shifted: npt.NDArray[np.intp] = masked ^ (2 ** (bits - 1))
    return shifted


def write_dicom(
    path: str | os.PathLike[str],
    pixels: npt.ArrayLike,
    *,
    bits_stored: int | None = None,
    photometric: str = "MONOCHROME2",
    modality: str = "DX",
    transfer_syntax: str = "1.2.840.10008.1.2.1",
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    patient_id: str = "",
    view_position: str = "",
    extra: Sequence[tuple[str, Any]] = (),
) -> Path:
    """Writes grey pixels as a single-frame DICOM radiograph (for tests and synthetic data).

    Args:
        path: Destination file.
        pixels: Stored values ``[Rows, Columns]``: uint8, uint16, or int16 for signed data.
            They are written as given; for MONOCHROME1 pass them already inverted.
        bits_stored: Bits of each value that are used (``BitsStored``); defaults to the
            dtype's width (8 or 16).
        photometric: ``"MONOCHROME2"`` (0 is black) or ``"MONOCHROME1"`` (0 is white).
        modality: The ``Modality`` element.
        transfer_syntax: A transfer syntax UID. Explicit VR Little Endian (the default) and
            the other uncompressed ones need nothing more; compressed ones (RLE Lossless,
            JPEG 2000 Lossless, JPEG-LS Lossless) are encoded by pydicom with the plugins of
            the ``chexviz[dicom]`` extra.
        window: ``(WindowCenter, WindowWidth)``, or ``None`` for no VOI transform.
        rescale: ``(RescaleSlope, RescaleIntercept)``, or ``None`` for none.
        patient_id: The ``PatientID`` element.
        view_position: The ``ViewPosition`` element (``"PA"``, ``"AP"``, ``"LATERAL"``...).
        extra: More ``(keyword, value)`` elements to set, in order.

    Returns:
        The written path.

    Raises:
        ValueError: ``pixels`` is not 2-D integer data, or values exceed ``bits_stored``.
        ImportError: pydicom (or the encoder of ``transfer_syntax``) is not installed.
    """
    pydicom = _pydicom()
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, generate_uid

    array = np.asarray(pixels)
    if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16, np.int16):
        raise ValueError(
            f"pixels must be a 2-D uint8, uint16 or int16 array, got {array.dtype} "
            f"{list(array.shape)}"
        )
    bits = bits_stored if bits_stored is not None else array.dtype.itemsize * 8
    signed = array.dtype == np.int16
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if array.size and (int(array.min()) < low or int(array.max()) > high):
        raise ValueError(f"pixel values {array.min()}..{array.max()} do not fit {bits} bits")
    syntax = UID(transfer_syntax)
    meta = FileMetaDataset()
    sop_class = _SOP_CLASSES.get(modality, _SOP_CLASSES["DX"])
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = pydicom.dataset.FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.ViewPosition = view_position
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(n) for n in array.shape)
    ds.BitsAllocated = array.dtype.itemsize * 8
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = (f"{value:g}" for value in rescale)
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = (f"{value:g}" for value in window)
    for keyword, value in extra:
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(array).tobytes()
    if syntax.is_compressed:
        ds.compress(syntax, array)
    elif syntax != meta.TransferSyntaxUID:
        ds.file_meta.TransferSyntaxUID = syntax
    target = Path(path)
    ds.save_as(target, enforce_file_format=True)
    return target
