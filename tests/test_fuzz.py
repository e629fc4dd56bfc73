"""Fuzz and property tests of the paths untrusted data takes: CSV + images -> data set, CAMs.

Every target asserts that an input either loads with valid outputs or fails with one of the
exceptions chexviz documents, naming the file at fault; never another exception type, a hang
or a crash. ``make test`` runs a short pass; set ``CHEXVIZ_FUZZ_EXAMPLES`` (e.g. 5000) for a
long one. tests/test_labels.py, test_splits.py and test_gradcam.py hold the properties of
well-formed inputs; these strategies add malformed ones.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import os
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from chexviz.data.dataset import CheXpertDataset
from chexviz.data.images import ImageDecodeError, load_image
from chexviz.data.labels import CHEXPERT_LABELS, MissingColumnsError, apply_policy
from chexviz.data.splits import split_by_patient
from chexviz.explain.gradcam import METHODS, GradCAM
from chexviz.models.classifier import MultiLabelClassifier
from conftest import CHEXPERT_HEADER

EXAMPLES = int(os.environ.get("CHEXVIZ_FUZZ_EXAMPLES", "50"))
"""Examples per fuzz target; ``CHEXVIZ_FUZZ_EXAMPLES=5000`` for a long run."""
# Seconds one example may take before it counts as a hang.
HANG_SECONDS = 60

# Damaged files make PIL warn about what it skips; the outcome is what the tests check.
QUIET_PIL = pytest.mark.filterwarnings(
    "ignore::UserWarning:PIL.TiffImagePlugin", "ignore::PIL.Image.DecompressionBombWarning"
)

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@contextmanager
def _no_hang(seconds: int = HANG_SECONDS) -> Iterator[None]:
    def hung(signum: int, frame: object) -> None:
        raise AssertionError(f"no answer after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- images ---------------------------------------------------------------------------------

_FORMAT_MODES = {
    "PNG": ["L", "LA", "RGB", "RGBA", "P", "1", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "BMP": ["L", "RGB", "P", "1"],
    "GIF": ["L", "P"],
    "TIFF": ["L", "RGB", "RGBA", "I;16", "I", "CMYK", "1"],
    "WEBP": ["RGB", "RGBA"],
}
_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif"}


@st.composite
def image_bytes(draw: st.DrawFn) -> tuple[bytes, bool]:
    """Encoded image bytes, and whether they are an intact image."""
    fmt = draw(st.sampled_from(sorted(_FORMAT_MODES)))
    mode = draw(st.sampled_from(_FORMAT_MODES[fmt]))
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    dtype = np.uint16 if mode in ("I;16", "I") else np.uint8
    pixels = rng.integers(0, 65535 if dtype == np.uint16 else 255, (height, width), dtype=dtype)
    image = Image.fromarray(pixels if mode != "I" else pixels.astype(np.int32))
    if image.mode != mode:
        image = image.convert(mode)
    options: dict[str, Any] = {}
    if fmt == "JPEG":
        options["quality"] = draw(st.integers(1, 100))
    if draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(1, 8))
        if fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
            options["exif"] = exif
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "garbage", "prefix"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    elif damage == "flip":
        position = draw(st.integers(0, len(data) - 1))
        data = (
            data[:position]
            + bytes([data[position] ^ draw(st.integers(1, 255))])
            + (data[position + 1 :])
        )
    elif damage == "garbage":
        data = draw(st.binary(max_size=300))
    elif damage == "prefix":
        data = draw(st.binary(min_size=1, max_size=16)) + data
    return data, damage == "none"


@QUIET_PIL
@FUZZ
@given(image=image_bytes(), size=st.integers(1, 40), channels=st.sampled_from([1, 3]))
def test_fuzz_load_image(image: tuple[bytes, bool], size: int, channels: int) -> None:
    data, intact = image
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "image.bin"
        path.write_bytes(data)
        with _no_hang():
            try:
                out = load_image(path, size=size, in_channels=channels)
            except ImageDecodeError as caught:
                error: ImageDecodeError | None = caught
            else:
                error = None
    if error is not None:
        assert error.path == path
        assert str(error).startswith(f"{path}: ")
        # Flipped bits may only touch the pixels, so only intact files must decode.
        assert not intact, f"an intact image was refused: {error}"
        return
    assert out.dtype == np.uint8
    assert out.shape == ((size, size) if channels == 1 else (size, size, 3))


# --- CSV + images -> data set ---------------------------------------------------------------

_CELLS = ["1.0", "0.0", "-1.0", ""]
_ODD_VALID_CELLS = ["1", "0", " -1.0", "1.00", "-0", "0.0 "]
_BAD_CELLS = ["2.0", "nan", "NA", "x", "TRUE", "0.5"]
_BAD_VIEWS = ["frontal", "", "Frontal/Lateral", "PA"]
_BAD_PATHS = [
    "",
    "/etc/passwd",
    "../../secret.jpg",
    "CheXpert-v1.0-small/train/patient00001/../../../x.jpg",
    "C:\\data\\patient1\\a.jpg",
    "CheXpert-v1.0-small/train/nopatient/study1/view1_frontal.jpg",
    "CheXpert-v1.0-small/train/patient00009/study1/missing_frontal.jpg",
    "CheXpert-v1.0-small/train/patient0000\x001/a.jpg",
    "CheXpert-v1.0-small/train/patient00001/" + "x" * 300 + ".jpg",
    "Path",
]
FAULTS = (
    "bad-path",
    "bad-cell",
    "bad-view",
    "short-row",
    "long-row",
    "drop-column",
    "repeat-header",
    "semicolon",
    "utf-16",
    "bad-image",
    "missing-image",
)
"""What can be wrong with an export; an export without any must load completely."""
# Faults found in the CSV text itself, before any row is filtered: never loaded. (Dropping a
# column as well can make a short row whole again, so that combination may load.)
ALWAYS_REFUSED = {"short-row", "long-row", "repeat-header", "semicolon", "utf-16"}


@st.composite
def export(draw: st.DrawFn) -> dict[str, Any]:
    """A CSV (as bytes) with its images, varied the ways hospital exports vary, plus faults."""
    faults = set(
        draw(st.one_of(st.just([]), st.lists(st.sampled_from(FAULTS), min_size=1, max_size=2)))
    )
    images: dict[str, bytes] = {}
    rows: list[list[str]] = []
    for patient in range(1, draw(st.integers(1, 4)) + 1):
        for view in ["frontal"] + (["lateral"] if draw(st.booleans()) else []):
            relative = f"train/patient{patient:05d}/study1/view1_{view}.jpg"
            images[relative] = _encode_valid(
                draw(st.integers(0, 2**16)), draw(st.sampled_from(sorted(_SUFFIX)))
            )
            cells = [
                draw(st.sampled_from(_ODD_VALID_CELLS if draw(st.integers(0, 5)) == 0 else _CELLS))
                for _ in range(14)
            ]
            view_cell = "Frontal" if view == "frontal" else "Lateral"
            rows.append(
                [f"CheXpert-v1.0-small/{relative}", "Female", "55", view_cell, "AP", *cells]
            )
    victim = draw(st.integers(0, len(rows) - 1))
    if "bad-path" in faults:
        rows[victim][0] = draw(st.sampled_from(_BAD_PATHS))
    if "bad-cell" in faults:
        rows[victim][draw(st.integers(5, 18))] = draw(st.sampled_from(_BAD_CELLS))
    if "bad-view" in faults:
        rows[victim][3] = draw(st.sampled_from(_BAD_VIEWS))
    if "short-row" in faults:
        rows[victim] = rows[victim][: draw(st.integers(1, 18))]
    if "long-row" in faults:
        rows[victim] = [*rows[victim], "surplus"]
    if "bad-image" in faults:
        name = draw(st.sampled_from(sorted(images)))
        images[name] = draw(image_bytes().filter(lambda image: not image[1]))[0]
    if "missing-image" in faults:
        del images[draw(st.sampled_from(sorted(images)))]
    header = list(CHEXPERT_HEADER)
    if "drop-column" in faults:
        dropped = header.index(draw(st.sampled_from(header)))
        header.pop(dropped)
        rows = [[c for i, c in enumerate(row) if i != dropped] for row in rows]
    if draw(st.booleans()):
        header = [*header, "Site"]
        rows = [[*row, "A"] for row in rows]
    if "repeat-header" in faults:
        rows.insert(draw(st.integers(0, len(rows))), list(header))
    buffer = io.StringIO()
    writer = csv.writer(
        buffer,
        delimiter=";" if "semicolon" in faults else ",",
        quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
        lineterminator=draw(st.sampled_from(["\n", "\r\n"])),
    )
    writer.writerows([header, *rows])
    text = ("\ufeff" if draw(st.booleans()) else "") + buffer.getvalue()
    encoding = "utf-16" if "utf-16" in faults else "utf-8"
    return {"csv": text.encode(encoding), "images": images, "faults": faults}


@functools.cache
def _encode_valid(seed: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


_OPTIONS = st.fixed_dictionaries(
    {
        "image_size": st.integers(1, 12),
        "in_channels": st.sampled_from([1, 3]),
        "uncertainty": st.one_of(
            st.sampled_from(["zeros", "ones", "ignore"]),
            st.dictionaries(
                st.sampled_from(CHEXPERT_LABELS),
                st.sampled_from(["zeros", "ones", "ignore"]),
                max_size=3,
            ),
        ),
        "blank": st.sampled_from(["zeros", "ignore"]),
        "frontal_only": st.booleans(),
        "on_error": st.sampled_from(["raise", "skip"]),
        "labels": st.sampled_from([CHEXPERT_LABELS, ("Edema", "Atelectasis")]),
    }
)


def _check_dataset(data: CheXpertDataset, release: Path, options: dict[str, Any]) -> None:
    size, channels = options["image_size"], options["in_channels"]
    labels = options["labels"]
    assert len(data) == len(data.paths) == len(data.patient_ids) == len(data.targets)
    assert len(data) == len(data.frame)
    targets = data.targets
    assert targets.shape == (len(data), len(labels))
    assert np.isin(targets[~np.isnan(targets)], (0.0, 1.0)).all()
    raw = data.frame[list(labels)].to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(
        apply_policy(raw, labels, uncertainty=options["uncertainty"], blank=options["blank"]),
        targets,
    )
    root = os.path.join(os.path.realpath(release), "")
    for index, (path, patient) in enumerate(zip(data.paths, data.patient_ids, strict=True)):
        assert os.path.realpath(path).startswith(root)
        assert f"/{patient}/" in path.as_posix()
        try:
            image, target = data[index]
        except ImageDecodeError as error:
            message = f"{error.path}|{error}"
        else:
            message = ""
        if message:
            assert message.startswith(f"{path}|")
            assert "train.csv line" in message
            continue
        assert image.dtype == torch.float32
        assert image.shape == (channels, size, size)
        assert bool(((image >= 0) & (image <= 1)).all())
        assert torch.equal(target.isnan(), torch.from_numpy(np.isnan(targets[index])))
    if len(set(data.patient_ids)) >= 2:
        first, second = split_by_patient(data, (0.5, 0.5), seed=len(data))
        ids = data.patient_ids
        assert not {ids[i] for i in first.indices} & {ids[i] for i in second.indices}
        assert len(first) + len(second) == len(data)


@QUIET_PIL
@FUZZ
@given(case=export(), options=_OPTIONS, cached=st.booleans())
def test_fuzz_csv_and_images_to_dataset(
    case: dict[str, Any], options: dict[str, Any], cached: bool
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        release = Path(folder) / "CheXpert-v1.0-small"
        release.mkdir()
        for relative, data in case["images"].items():
            path = release / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (release / "train.csv").write_bytes(case["csv"])
        cache_dir = Path(folder) / "cache" if cached else None
        with _no_hang():
            try:
                data = CheXpertDataset(
                    Path(folder), cache_dir=cache_dir, progress=False, workers=2, **options
                )
            except (ValueError, FileNotFoundError, MissingColumnsError) as error:
                # Documented failures, each naming the CSV or the image at fault.
                message = f"{type(error).__name__}: {error} {getattr(error, 'filename', '')}"
                event(f"refused: {type(error).__name__}")
            else:
                message = ""
                event("loaded" if not data.num_skipped else "loaded, skipping some")
                _check_dataset(data, release, options)
    if message:
        assert str(release) in message, f"names no file: {message}"
        assert case["faults"], f"an export without faults was refused: {message}"
    elif "drop-column" not in case["faults"]:
        assert not case["faults"] & ALWAYS_REFUSED, f"a malformed export loaded: {case['faults']}"


# --- CAM inputs -----------------------------------------------------------------------------


@functools.cache
def _cam_model(in_channels: int, scale_exponent: int, size: int = 16) -> MultiLabelClassifier:
    torch.manual_seed(in_channels)
    model = MultiLabelClassifier(
        "simple_cnn", labels=("a", "b", "c"), in_channels=in_channels, image_size=size
    )
    with torch.no_grad():
        model.head.fc.weight.mul_(10.0**scale_exponent)  # type: ignore[operator]
    return model.eval()


_PATTERNS = ["noise", "zeros", "ones", "constant", "checker", "single-pixel", "tiny-range"]


def _pattern(kind: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if kind == "noise":
        return torch.rand(shape, generator=generator)
    if kind == "zeros":
        return torch.zeros(shape)
    if kind == "ones":
        return torch.ones(shape)
    if kind == "constant":
        return torch.full(shape, float(torch.rand(1, generator=generator)))
    if kind == "checker":
        rows = torch.arange(shape[-2])[:, None]
        cols = torch.arange(shape[-1])[None, :]
        return ((rows + cols) % 2).float().expand(shape).clone()
    if kind == "single-pixel":
        image = torch.zeros(shape)
        image[..., shape[-2] // 2, shape[-1] // 2] = 1.0
        return image
    return 0.5 + 1e-7 * torch.rand(shape, generator=generator)


@settings(max_examples=max(EXAMPLES // 2, 10), deadline=None)
@given(
    method=st.sampled_from(METHODS),
    channels=st.sampled_from([1, 3]),
    scale=st.sampled_from([-30, -8, 0, 8, 30]),
    kinds=st.lists(st.sampled_from(_PATTERNS), min_size=1, max_size=3),
    size=st.sampled_from([8, 16, 24]),
    seed=st.integers(0, 2**16),
    threshold=st.one_of(st.none(), st.floats(0.0, 1.0)),
)
# Always tried: gradcam++ cubes gradients, which overflow float32 with huge weights.
@example(method="gradcam++", channels=1, scale=30, kinds=["noise"], size=16, seed=0, threshold=None)
@example(method="layercam", channels=3, scale=-30, kinds=["ones"], size=8, seed=0, threshold=0.5)
def test_cam_invariants_on_pathological_inputs(
    method: str,
    channels: int,
    scale: int,
    kinds: list[str],
    size: int,
    seed: int,
    threshold: float | None,
) -> None:
    model = _cam_model(channels, scale, size)
    images = torch.stack([_pattern(k, (channels, size, size), seed) for k in kinds])
    cam = GradCAM(model, method=method)  # type: ignore[arg-type]
    try:
        explanation = cam.explain(images, classes=["a", "c"], threshold=threshold)
    except ValueError as error:
        refused = str(error)
    else:
        refused = ""
    if refused:
        # Extreme weights may overflow float32: refused, never returned as NaN.
        assert "not finite" in refused
        assume(False)
    assert len(explanation) == len(kinds)
    assert bool(torch.isfinite(explanation.probabilities).all())
    for index in range(len(kinds)):
        for cls in ("a", "c"):
            heat = explanation.heatmaps[index][cls]
            raw = explanation.raw_maps[index][cls]
            assert heat.shape == (size, size)
            assert bool(torch.isfinite(heat).all())
            assert bool(torch.isfinite(raw).all())
            assert float(heat.min()) >= 0.0
            assert float(heat.max()) <= 1.0
            assert (cls in explanation.zero_maps[index]) == (float(raw.max()) == 0.0)
            peak = float(heat.max())
            assert peak == 0.0 or math.isclose(peak, 1.0, abs_tol=1e-6)
    assert not any(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5, 1.5])
def test_cam_refuses_images_outside_the_unit_range(value: float) -> None:
    images = torch.rand(1, 1, 16, 16)
    images[0, 0, 3, 3] = value
    cam = GradCAM(_cam_model(1, 0))
    with pytest.raises(ValueError, match=r"NaN|\[0, 1\]"):
        cam.explain(images)
