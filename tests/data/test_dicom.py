"""DICOM input: photometric cases, bit depths, grey-scale transforms, compression, bad files."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from chexviz.data.dicom import read_dicom, read_dicom_size, write_dicom
from chexviz.data.images import ImageDecodeError, load_image, read_image_size

H, W = 36, 48
# A picture every case below stores: a left-to-right ramp from black to white.
RAMP = np.tile(np.linspace(0.0, 1.0, W), (H, 1))
TWELVE = 0.5 / 4095 + 1e-6  # half a 12-bit step: the rounding of the stored values


def _stored(bits: int, *, invert: bool = False) -> np.ndarray:
    top = 2**bits - 1
    values = np.rint(RAMP * top).astype(np.int64)
    if invert:
        values = top - values
    return values.astype(np.uint8 if bits <= 8 else np.uint16)


@pytest.mark.parametrize("bits", [8, 10, 12, 14, 16])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_every_bit_depth_and_polarity_reads_as_the_same_picture(
    tmp_path: Path, bits: int, photometric: str
) -> None:
    invert = photometric == "MONOCHROME1"
    path = write_dicom(
        tmp_path / "x.dcm", _stored(bits, invert=invert), bits_stored=bits, photometric=photometric
    )
    grey = read_dicom(path)
    assert grey.dtype == np.float32
    assert grey.shape == (H, W)
    # Bright is dense whatever the polarity, and every depth spans the same [0, 1] range.
    np.testing.assert_allclose(grey, RAMP, atol=0.5 / (2**bits - 1) + 1e-6)


def test_the_same_picture_at_8_12_and_16_bits_loads_identically(tmp_path: Path) -> None:
    loaded = [
        load_image(write_dicom(tmp_path / f"{bits}.dcm", _stored(bits), bits_stored=bits), size=16)
        for bits in (8, 12, 16)
    ]
    for image in loaded[1:]:
        assert int(np.abs(image.astype(int) - loaded[0].astype(int)).max()) <= 1


def test_dicom_loads_like_the_png_of_the_same_pixels(tmp_path: Path) -> None:
    pixels = _stored(8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    write_dicom(tmp_path / "x.dcm", pixels)
    for size in (8, 16, 48):
        png = load_image(tmp_path / "x.png", size=size).astype(int)
        dcm = load_image(tmp_path / "x.dcm", size=size).astype(int)
        assert int(np.abs(png - dcm).max()) <= 1, size
    three = load_image(tmp_path / "x.dcm", size=8, in_channels=3)
    assert three.shape == (8, 8, 3)


def test_rescale_does_not_change_the_picture(tmp_path: Path) -> None:
    # The modality LUT maps stored values and their reachable range alike.
    path = write_dicom(tmp_path / "x.dcm", _stored(12), bits_stored=12, rescale=(2.0, -1024.0))
    np.testing.assert_allclose(read_dicom(path), RAMP, atol=TWELVE)
    negative = write_dicom(tmp_path / "n.dcm", _stored(12), bits_stored=12, rescale=(-1.0, 0.0))
    np.testing.assert_allclose(read_dicom(negative), 1.0 - RAMP, atol=TWELVE)


def test_signed_pixels(tmp_path: Path) -> None:
    values = (np.rint(RAMP * 4095) - 2048).astype(np.int16)
    path = write_dicom(tmp_path / "s.dcm", values, bits_stored=12)
    np.testing.assert_allclose(read_dicom(path), RAMP, atol=TWELVE)


def test_window_is_applied(tmp_path: Path) -> None:
    # LINEAR window of PS3.3 C.11.2.1.2.1: centre 2048, width 1024 -> black below 1536,
    # white above 2560, linear in between.
    path = write_dicom(tmp_path / "w.dcm", _stored(12), bits_stored=12, window=(2048, 1024))
    grey = read_dicom(path)[0]
    stored = _stored(12)[0].astype(float)
    expected = np.clip((stored - (2048 - 0.5)) / (1024 - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(grey, expected, atol=1e-6)
    assert grey[0] == 0.0
    assert grey[-1] == 1.0


def test_window_then_monochrome1_inverts_after_the_window(tmp_path: Path) -> None:
    stored = _stored(12, invert=True)
    path = write_dicom(
        tmp_path / "w1.dcm", stored, bits_stored=12, window=(2048, 4096), photometric="MONOCHROME1"
    )
    np.testing.assert_allclose(read_dicom(path), RAMP, atol=1e-3)


def test_voi_lut_sequence_is_applied(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "v.dcm", _stored(8))
    ds = pydicom.dcmread(path)
    item = pydicom.Dataset()
    # A LUT of 256 entries, 10 bits out: the square of the normalised input.
    table = np.rint((np.arange(256) / 255.0) ** 2 * 1023).astype(np.uint16)
    item.add_new("LUTDescriptor", "US", [256, 0, 10])
    item.add_new("LUTData", "US", table.tolist())
    ds.VOILUTSequence = DicomSequence([item])
    ds.save_as(path)
    np.testing.assert_allclose(read_dicom(path), table[_stored(8)] / 1023, atol=1e-6)


@pytest.mark.parametrize(
    ("syntax", "bits"),
    [(RLELossless, 8), (RLELossless, 16), (JPEG2000Lossless, 12), (JPEG2000Lossless, 16)],
)
def test_compressed_transfer_syntaxes_are_lossless(tmp_path: Path, syntax: str, bits: int) -> None:
    reference = read_dicom(write_dicom(tmp_path / "raw.dcm", _stored(bits), bits_stored=bits))
    path = write_dicom(tmp_path / "c.dcm", _stored(bits), bits_stored=bits, transfer_syntax=syntax)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_dicom(path), reference)


def test_jpeg_baseline_pixel_data(tmp_path: Path) -> None:
    # A JPEG bitstream (lossy, 8-bit) encapsulated as DICOM does in hospital archives.
    path = write_dicom(tmp_path / "j.dcm", _stored(8))
    ds = pydicom.dcmread(path)
    buffer = io.BytesIO()
    Image.fromarray(_stored(8)).save(buffer, format="JPEG", quality=95)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(path, enforce_file_format=True)
    np.testing.assert_allclose(read_dicom(path), RAMP, atol=0.03)


def test_files_without_suffix_are_found_by_their_preamble(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "IM0001", _stored(8))
    assert read_image_size(path) == (W, H)
    assert load_image(path, size=4).shape == (4, 4)
    assert read_dicom_size(path) == (W, H)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"Modality": "CT"}, r"Modality is 'CT', not a radiograph"),
        ({"Modality": ""}, r"Modality is missing"),
        ({"PhotometricInterpretation": "RGB"}, r"PhotometricInterpretation is RGB"),
        ({"SamplesPerPixel": 3}, r"SamplesPerPixel is 3"),
        ({"NumberOfFrames": 2}, r"holds 2 frames"),
        ({"BitsStored": 20}, r"BitsStored 20 .* not supported"),
        ({"Rows": 0}, r"empty"),
    ],
)
def test_files_that_are_not_one_grey_radiograph_are_refused(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = write_dicom(tmp_path / "x.dcm", _stored(8))
    ds = pydicom.dcmread(path)
    for keyword, value in change.items():
        setattr(ds, keyword, value)
    ds.save_as(path)
    for reader in (read_dicom, read_dicom_size):
        with pytest.raises(ImageDecodeError, match=message) as caught:
            reader(path)
        assert caught.value.path == path


def test_oversized_image_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_dicom(tmp_path / "big.dcm", _stored(8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", H * W - 1)
    with pytest.raises(ImageDecodeError, match=r"exceeds PIL\.Image\.MAX_IMAGE_PIXELS"):
        load_image(path, size=8)


@pytest.mark.parametrize("keep", [0.2, 0.6, 0.95])
def test_truncated_files_name_the_file(tmp_path: Path, keep: float) -> None:
    path = write_dicom(tmp_path / "t.dcm", _stored(16), bits_stored=16)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageDecodeError, match=r"t\.dcm") as caught:
        load_image(path, size=8)
    assert caught.value.path == path


def test_damaged_compressed_pixel_data(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "c.dcm", _stored(12), bits_stored=12, transfer_syntax=JPEG2000Lossless
    )
    data = bytearray(path.read_bytes())
    start = data.find(b"\xff\x4f\xff\x51")  # the JPEG 2000 codestream
    data[start + 4 : start + 60] = b"\x00" * 56
    path.write_bytes(bytes(data))
    with pytest.raises(ImageDecodeError, match=r"pixel data .*cannot be decoded"):
        read_dicom(path)


def test_not_a_dicom_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_text("not an image")
    with pytest.raises(ImageDecodeError, match=r"notes\.dcm: not a DICOM file"):
        load_image(path, size=8)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.dcm", size=8)


def test_missing_pixel_data(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "x.dcm", _stored(8))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(ImageDecodeError, match="no pixel data"):
        read_dicom(path)


def test_missing_pydicom_is_an_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_dicom(tmp_path / "x.dcm", _stored(8))
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ImportError, match=r'pip install "chexviz\[dicom\]"'):
        load_image(path, size=8)


def test_gradcam_explains_a_dicom_file(tmp_path: Path) -> None:
    from chexviz.explain.gradcam import GradCAM
    from chexviz.models.classifier import MultiLabelClassifier

    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", image_size=32, labels=("A", "B"))
    path = write_dicom(tmp_path / "x.dcm", _stored(12), bits_stored=12)
    Image.fromarray(load_image(path, size=32)).save(tmp_path / "same.png")
    explanation = GradCAM(model).explain(str(path), classes=["A"])
    reference = GradCAM(model).explain(str(tmp_path / "same.png"), classes=["A"])
    assert explanation.images.shape == (1, 1, 32, 32)
    torch.testing.assert_close(explanation.images, reference.images)
    assert explanation.heatmaps[0]["A"].shape == (32, 32)


def test_write_dicom_refuses_values_that_do_not_fit(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="do not fit 10 bits"):
        write_dicom(tmp_path / "x.dcm", np.full((2, 2), 2000, dtype=np.uint16), bits_stored=10)
    with pytest.raises(ValueError, match="2-D uint8, uint16 or int16"):
        write_dicom(tmp_path / "x.dcm", np.zeros((2, 2), dtype=np.float32))
