"""CheXlocalize ground truth: radiologists' segmentations of 10 pathologies on CheXpert X-rays.

CheXlocalize (Saporta et al., "Benchmarking saliency methods for chest X-ray interpretation",
Nature Machine Intelligence 2022) ships its ground truth as JSON files of two kinds, both read
by [`read_chexlocalize`][chexviz.data.chexlocalize.read_chexlocalize]:

- **segmentations** (``gt_segmentations_{val,test}.json``)::

      {cxr_id: {pathology: {"size": [h, w], "counts": "<COCO compressed RLE>"}}}

  every CXR with all 10 pathologies, an all-zero mask where there is none, encoded with
  pycocotools' mask API;
- **annotations** (``gt_annotations_{val,test}.json``)::

      {cxr_id: {"img_size": [h, w], pathology: [[[x, y], ...], ...]}}

  the radiologists' raw polygons, positives only; a mask is the polygons filled with their
  outline included, at the original size, exactly as the reference
  ``annotation_to_segmentation.py`` draws them (PIL ``ImageDraw.polygon``).

The human benchmark (a second group of radiologists on the test set) comes in the same two
formats (``hb_segmentations_test.json``, ``hb_annotations_test.json``) and a third:

- **salient points** (``hb_salient_pt_test.json``), read by
  [`read_salient_points`][chexviz.data.chexlocalize.read_salient_points]::

      {cxr_id: {pathology: [[x, y], ...]}}

  each radiologist's most representative point(s) of a finding, in pixel coordinates of the
  original image; the reference ``eval.py`` (``get_hb_hitrates``) looks them up as
  ``gt_mask[int(y), int(x)]``.

A CXR id such as ``patient64541_study1_view1_frontal`` names the image
``valid/patient64541/study1/view1_frontal.jpg`` (or ``test/...``) of the full-resolution
release, and masks are at that image's **original** size. Pathologies are named as in
CheXpert except ``"Airspace Opacity"``, which is CheXpert's ``"Lung Opacity"``: chexviz reads
either spelling and always answers with the CheXpert name; files it writes use CheXlocalize's,
so that the reference scripts read them unchanged.

Masks at the original size are large (about 6.5 MB each as booleans at 2320x2828): the whole
validation set's would take 15 GB. The reader therefore keeps the compact encodings and
decodes a mask only when it is asked for.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask

from chexviz._internal.atomic import write_bytes_atomic

__all__ = [
    "CHEXLOCALIZE_LABELS",
    "LOCALIZATION_LABELS",
    "CheXlocalizeFormat",
    "CheXlocalizeGroundTruth",
    "Polygon",
    "chexlocalize_name",
    "chexpert_name",
    "cxr_id",
    "decode_mask",
    "encode_mask",
    "mask_to_polygons",
    "polygons_to_mask",
    "read_chexlocalize",
    "read_salient_points",
    "write_chexlocalize",
    "write_salient_points",
]

LOCALIZATION_LABELS: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Support Devices",
)
"""The 10 localised pathologies, with CheXpert's names, in CheXpert's CSV column order."""

CHEXLOCALIZE_LABELS: tuple[str, ...] = tuple(
    "Airspace Opacity" if label == "Lung Opacity" else label for label in LOCALIZATION_LABELS
)
"""The same 10 pathologies with CheXlocalize's names (``"Airspace Opacity"``), same order."""

CheXlocalizeFormat = Literal["segmentations", "annotations"]
"""The two JSON kinds: RLE-encoded masks, or raw polygons."""

Polygon = list[list[float]]
"""One polygon: its vertices ``[[x, y], ...]`` in pixel coordinates of the original image."""

_TO_CHEXPERT = {
    **{label: label for label in LOCALIZATION_LABELS},
    "Airspace Opacity": "Lung Opacity",
}
_TO_CHEXLOCALIZE = dict(zip(LOCALIZATION_LABELS, CHEXLOCALIZE_LABELS, strict=True))
_SIZE_KEY = "img_size"
# The largest image (in pixels) a mask may claim: PIL's decompression-bomb limit, which
# chexviz's image reader applies too. A hostile "size" must not make decode allocate 40 GB.
_MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
# Vertices may lie outside the image (the reference clips them when it draws), but PIL draws
# in 32-bit integers: a coordinate beyond this is not a position on any X-ray.
_MAX_COORDINATE = float(2**24)
_CXR_PATH = re.compile(r"(patient[^/]+)/(study[^/]+)/([^/]+?)(?:\.[A-Za-z0-9]+)?$")

Mask = npt.NDArray[np.bool_]

# The reference's file lists a handful of points per finding (one per radiologist); a file
# claiming more is not a salient-point file, and must not make the reader build huge lists.
_MAX_POINTS = 1_000

logger = logging.getLogger(__name__)


def chexpert_name(name: str) -> str:
    """The CheXpert label name of a localised pathology given in either spelling.

    Args:
        name: ``"Airspace Opacity"``, ``"Lung Opacity"`` or one of the 9 other pathologies.

    Returns:
        The CheXpert name (``"Lung Opacity"`` for ``"Airspace Opacity"``).

    Raises:
        ValueError: ``name`` is not one of the 10 localised pathologies (the message lists
            them).
    """
    try:
        return _TO_CHEXPERT[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown pathology {name!r}; CheXlocalize localises {list(CHEXLOCALIZE_LABELS)} "
            "('Airspace Opacity' is CheXpert's 'Lung Opacity')"
        ) from None


def chexlocalize_name(name: str) -> str:
    """The CheXlocalize name of a localised pathology given in either spelling.

    Args:
        name: A CheXpert or CheXlocalize pathology name.

    Returns:
        The CheXlocalize name (``"Airspace Opacity"`` for ``"Lung Opacity"``).

    Raises:
        ValueError: ``name`` is not one of the 10 localised pathologies.
    """
    return _TO_CHEXLOCALIZE[chexpert_name(name)]


def cxr_id(path: str | os.PathLike[str]) -> str:
    """The CheXlocalize id of a CheXpert image path.

    Args:
        path: An image path as in the CSVs or on disk, e.g.
            ``CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg``.

    Returns:
        The id, e.g. ``patient64541_study1_view1_frontal``.

    Raises:
        ValueError: The path does not end in ``patientN/studyN/viewN_<kind>.<ext>``.
    """
    text = str(path).replace("\\", "/")
    match = _CXR_PATH.search(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a CheXpert image path (.../patientNNNNN/studyN/viewN_frontal.jpg)"
        )
    return "_".join(match.groups())


# ----------------------------------------------------------------------------------------------
# One mask: RLE and polygons


def encode_mask(mask: npt.ArrayLike | torch.Tensor) -> dict[str, Any]:
    """Encodes a mask as COCO compressed RLE with pycocotools, as CheXlocalize stores it.

    Args:
        mask: A 2-D array or tensor; non-zero entries are inside.

    Returns:
        ``{"size": [h, w], "counts": str}``, ready for ``json.dump``.

    Raises:
        ValueError: ``mask`` is not a non-empty 2-D array.
    """
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"a mask must be a non-empty 2-D array [H, W], got shape {array.shape}")
    encoded = coco_mask.encode(np.asfortranarray(array != 0, dtype=np.uint8))
    return {"size": [int(n) for n in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def decode_mask(rle: Mapping[str, Any], where: str = "rle") -> Mask:
    """Decodes a COCO RLE (compressed string or uncompressed counts) after checking it.

    pycocotools decodes a compressed string whose runs do not add up to ``h * w`` into
    uninitialised memory instead of failing, so the runs are counted here first.

    Args:
        rle: ``{"size": [h, w], "counts": str | list[int]}``.
        where: What to call the RLE in errors (file, CXR id and pathology).

    Returns:
        Boolean mask ``[h, w]`` (C order).

    Raises:
        ValueError: The RLE is malformed; the message names ``where`` and the field.
    """
    return _decode(_check_rle(rle, where))


def _decode(checked: Mapping[str, Any]) -> Mask:
    with warnings.catch_warnings():
        # pycocotools 2.0.x trips over NumPy 2's __array__ copy protocol and says so on every
        # call; the decoded mask is right.
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        decoded = coco_mask.decode(checked)
    return np.ascontiguousarray(decoded, dtype=np.bool_)


def polygons_to_mask(
    polygons: Iterable[Polygon], size: tuple[int, int], where: str = "polygons"
) -> Mask:
    """Fills polygons, outline included, as the reference ``annotation_to_segmentation.py``.

    The polygons are drawn with PIL's ``ImageDraw.polygon``, outline and fill, as the
    reference does; on the reference's sample files the masks are pixel-identical to its own
    segmentations. A polygon reaching past the image's edge is clipped to it, as PIL (and so
    the reference) clips it; one wholly outside draws nothing.

    Args:
        polygons: Each a list of vertices ``[x, y]`` in original-image pixels.
        size: ``(h, w)`` of the image.
        where: What to call the polygons in errors.

    Returns:
        Boolean mask ``[h, w]``.

    Raises:
        ValueError: A polygon is malformed or has a coordinate beyond +-2**24 pixels.
    """
    height, width = _check_size(size, f"{where}: size")
    checked = [
        _check_polygon(polygon, (height, width), f"{where}[{i}]")
        for i, polygon in enumerate(polygons)
    ]
    image = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(image)
    for polygon in checked:
        draw.polygon([(x, y) for x, y in polygon], outline=1, fill=1)
    return np.asarray(image, dtype=np.bool_)


def mask_to_polygons(mask: npt.ArrayLike) -> list[Polygon]:
    """Traces the outer contours of a mask as polygons (OpenCV, 8-connected components).

    Filling the polygons with [`polygons_to_mask`][chexviz.data.chexlocalize.polygons_to_mask]
    gives back the mask with its holes filled.

    Args:
        mask: A 2-D array; non-zero entries are inside.

    Returns:
        One polygon per connected component, vertices ``[x, y]`` at pixel centres.
    """
    array = np.ascontiguousarray(np.asarray(mask) != 0, dtype=np.uint8)
    contours, _ = cv2.findContours(array, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = [[[float(x), float(y)] for x, y in contour[:, 0, :]] for contour in contours]
    # A lone pixel's contour is one point; PIL (and the reference) need two vertices.
    return [polygon * 2 if len(polygon) == 1 else polygon for polygon in polygons]


# ----------------------------------------------------------------------------------------------
# The ground truth of a set of CXRs


class CheXlocalizeGroundTruth(Mapping[str, Mapping[str, Mask]]):
    """Ground-truth masks read from a CheXlocalize JSON file; decoded only when asked for.

    It behaves as a read-only ``dict``: ``ground_truth[cxr_id][label]`` is a boolean mask
    ``[H, W]`` at the CXR's original size, for each of the 10
    [`LOCALIZATION_LABELS`][chexviz.data.chexlocalize.LOCALIZATION_LABELS] (CheXpert names;
    ``"Airspace Opacity"`` is ``"Lung Opacity"``). Each access decodes the mask anew and keeps
    nothing, so walking the whole set takes the memory of one mask at a time.

    Attributes:
        path: The file read.
        format: ``"segmentations"`` or ``"annotations"``.
    """

    def __init__(
        self,
        path: Path,
        format: CheXlocalizeFormat,
        sizes: dict[str, tuple[int, int]],
        entries: dict[str, dict[str, Any]],
    ) -> None:
        self.path = path
        self.format: CheXlocalizeFormat = format
        self._sizes = sizes
        self._entries = entries

    def __getitem__(self, cxr: str) -> Mapping[str, Mask]:
        if cxr not in self._entries:
            raise KeyError(f"{self.path}: no CXR {cxr!r}")
        return _CxrMasks(self, cxr)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"CheXlocalizeGroundTruth({len(self)} CXRs, {self.format}, {str(self.path)!r})"

    def size(self, cxr: str) -> tuple[int, int]:
        """The original ``(H, W)`` of a CXR.

        Raises:
            KeyError: Unknown CXR id.
        """
        if cxr not in self._sizes:
            raise KeyError(f"{self.path}: no CXR {cxr!r}")
        return self._sizes[cxr]

    def is_empty(self, cxr: str, label: str) -> bool:
        """Whether a CXR's mask of ``label`` (either spelling) is empty, without decoding it.

        Raises:
            KeyError: Unknown CXR id.
            ValueError: Unknown pathology.
        """
        entry = self._entry(cxr, label)
        if entry is None:
            return True
        if self.format == "segmentations":
            return int(coco_mask.area(entry)) == 0
        size = self._sizes[cxr]
        if any(_inside(polygon, size) for polygon in entry):
            return False  # a polygon within the image covers at least its outline's pixels
        # Clipped polygons may leave nothing inside the image: draw them to know.
        return not bool(polygons_to_mask(entry, size).any())

    def mask(self, cxr: str, label: str) -> Mask:
        """Decodes one mask (the same as ``ground_truth[cxr][label]``).

        Raises:
            KeyError: Unknown CXR id.
            ValueError: Unknown pathology.
        """
        entry = self._entry(cxr, label)
        size = self._sizes[cxr]
        where = f"{self.path}: CXR {cxr!r}, {chexlocalize_name(label)!r}"
        if entry is None:
            return np.zeros(size, dtype=np.bool_)
        if self.format == "segmentations":
            return _decode(entry)
        return polygons_to_mask(entry, size, where)

    def polygons(self, cxr: str, label: str) -> list[Polygon]:
        """The radiologists' polygons of a CXR's pathology, from an annotations file.

        The reference ``compute_pathology_features.py`` counts a finding's instances as its
        polygons (two overlapping polygons are two instances, though their mask is one piece).

        Raises:
            KeyError: Unknown CXR id.
            ValueError: Unknown pathology, or the file holds segmentations, not polygons.
        """
        if self.format != "annotations":
            raise ValueError(f"{self.path}: a {self.format} file has no polygons")
        entry = self._entry(cxr, label)
        return [] if entry is None else [[list(v) for v in polygon] for polygon in entry]

    def _entry(self, cxr: str, label: str) -> Any:
        if cxr not in self._entries:
            raise KeyError(f"{self.path}: no CXR {cxr!r}")
        return self._entries[cxr].get(chexpert_name(label))


class _CxrMasks(Mapping[str, Mask]):
    """The 10 masks of one CXR, decoded on access."""

    def __init__(self, ground_truth: CheXlocalizeGroundTruth, cxr: str) -> None:
        self._ground_truth = ground_truth
        self._cxr = cxr

    def __getitem__(self, label: str) -> Mask:
        try:
            return self._ground_truth.mask(self._cxr, label)
        except ValueError as error:
            raise KeyError(str(error)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(LOCALIZATION_LABELS)

    def __len__(self) -> int:
        return len(LOCALIZATION_LABELS)


def read_chexlocalize(path: str | os.PathLike[str]) -> CheXlocalizeGroundTruth:
    """Reads a CheXlocalize ground-truth JSON file of either kind.

    Everything is checked when the file is read: the format, every CXR's size, every RLE
    (that its runs cover exactly ``h * w`` pixels) and every polygon (that its vertices are
    numbers), so that scoring never stops half-way on a bad entry. A polygon reaching outside
    its image is drawn clipped to it, as the reference ``annotation_to_segmentation.py`` draws
    it (PIL clips), and counted in a logged warning. Masks themselves are
    decoded only when asked for (see
    [`CheXlocalizeGroundTruth`][chexviz.data.chexlocalize.CheXlocalizeGroundTruth]).

    Args:
        path: A ``gt_segmentations_*.json`` or ``gt_annotations_*.json`` file (or any file in
            one of the two formats, such as ``chexviz localize``'s output).

    Returns:
        A read-only mapping CXR id -> CheXpert label name -> boolean mask ``[H, W]`` at the
        original size, with all 10 pathologies for every CXR (empty where there is none).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not JSON, is in neither format, or has a bad entry (a size
            that is not two positive integers, an RLE whose size or runs disagree, a polygon
            vertex that is not a number or lies beyond +-2**24 pixels, an unknown or repeated
            pathology, a CXR listed twice, a missing
            pathology in a segmentations file); the message names the file, the CXR id and the
            field.
    """
    path = Path(path)
    data = _load_json(path, "CheXlocalize ground-truth file")
    format = _detect_format(path, data)
    sizes: dict[str, tuple[int, int]] = {}
    entries: dict[str, dict[str, Any]] = {}
    clipped: list[str] = []
    for cxr, value, where in _cxr_entries(data, path):
        if format == "segmentations":
            sizes[cxr], entries[cxr] = _read_segmentations(value, where)
        else:
            sizes[cxr], entries[cxr] = _read_annotations(value, where, clipped)
    if clipped:
        logger.warning(
            "%d polygons reach outside their image (first: %s); they are drawn clipped to it, "
            "as the reference annotation_to_segmentation.py draws them",
            len(clipped),
            clipped[0],
        )
    return CheXlocalizeGroundTruth(path, format, sizes, entries)


def write_chexlocalize(
    path: str | os.PathLike[str],
    masks: Mapping[str, Mapping[str, npt.ArrayLike | torch.Tensor]]
    | Iterable[tuple[str, Mapping[str, npt.ArrayLike | torch.Tensor]]],
    *,
    format: CheXlocalizeFormat = "segmentations",
) -> Path:
    """Writes masks as a CheXlocalize JSON file, with CheXlocalize's pathology names.

    ``"segmentations"`` writes every CXR with all 10 pathologies (RLE, all-zero masks for the
    pathologies not given), the form the reference ``eval.py`` reads for ``--pred_path`` and
    ``--gt_path``. ``"annotations"`` writes the outer contours of each non-empty mask as
    polygons (positives only, with ``img_size``); reading them back gives the masks with holes
    filled. Masks are encoded one CXR at a time, so ``masks`` may be a generator of
    ``(cxr_id, {label: mask})`` pairs that produces each CXR's masks when it is reached.

    Args:
        path: The JSON file to write (atomically: an interrupted write leaves no partial file).
        masks: CXR id -> label (CheXpert or CheXlocalize name) -> mask ``[H, W]`` (non-zero
            inside), as a mapping or as ``(cxr_id, masks)`` pairs.
        format: ``"segmentations"`` or ``"annotations"``.

    Returns:
        ``path``.

    Raises:
        ValueError: An unknown or repeated pathology or CXR id, a CXR without masks, masks of
            one CXR with different shapes, a mask that is not 2-D, or an unknown ``format``.
    """
    if format not in ("segmentations", "annotations"):
        raise ValueError(f"format must be 'segmentations' or 'annotations', got {format!r}")
    pairs = masks.items() if isinstance(masks, Mapping) else masks
    out: dict[str, dict[str, Any]] = {}
    for cxr, labelled in pairs:
        if not isinstance(cxr, str) or not cxr.strip():
            raise ValueError(f"CXR ids must be non-empty strings, got {cxr!r}")
        if cxr in out:
            raise ValueError(f"CXR {cxr!r} is given twice")
        arrays: dict[str, npt.NDArray[np.bool_]] = {}
        for label, mask in labelled.items():
            name = chexlocalize_name(label)
            if name in arrays:
                raise ValueError(f"CXR {cxr!r}: {label!r} is given twice (under both spellings)")
            array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else mask
            arrays[name] = np.asarray(array) != 0
        shapes = {array.shape for array in arrays.values()}
        if not arrays:
            raise ValueError(f"CXR {cxr!r} has no masks, so its size is unknown")
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(
                f"CXR {cxr!r}: masks must be 2-D and share one shape, got "
                f"{ {name: array.shape for name, array in arrays.items()} }"
            )
        height, width = next(iter(shapes))
        if format == "segmentations":
            empty = encode_mask(np.zeros((height, width), dtype=np.bool_))
            out[cxr] = {
                name: encode_mask(arrays[name]) if name in arrays else empty
                for name in CHEXLOCALIZE_LABELS
            }
        else:
            entry: dict[str, Any] = {_SIZE_KEY: [height, width]}
            for name in CHEXLOCALIZE_LABELS:
                if name in arrays and arrays[name].any():
                    entry[name] = mask_to_polygons(arrays[name])
            out[cxr] = entry
    return write_bytes_atomic(Path(path), json.dumps(out).encode("ascii"))


def read_salient_points(
    path: str | os.PathLike[str],
) -> dict[str, dict[str, tuple[tuple[float, float], ...]]]:
    """Reads a CheXlocalize salient-point file such as the human benchmark's.

    The format is the reference's ``hb_salient_pt_test.json``: ``{cxr_id: {pathology:
    [[x, y], ...]}}``, a list of the most representative points of each finding (an
    ``"img_size": [h, w]`` entry, as in the annotation files, is accepted and checked). The
    whole file is checked as it is read, like
    [`read_chexlocalize`][chexviz.data.chexlocalize.read_chexlocalize]: UTF-8 JSON, no key
    twice, known pathologies under either spelling (not both), points of two finite numbers
    within +-2**24 pixels, at most 1,000 points per finding, an ``img_size`` of two positive
    integers. Whether a point lies on its image is checked against the ground truth when
    scoring
    ([`score_human_benchmark`][chexviz.evaluate.chexlocalize.human.score_human_benchmark]).

    Args:
        path: The JSON file.

    Returns:
        ``{cxr_id: {label: ((x, y), ...)}}`` with CheXpert label names, in the file's order.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not JSON or has a bad entry; the message names the file, the
            CXR id and the field.
    """
    path = Path(path)
    data = _load_json(path, "CheXlocalize salient-point file")
    points: dict[str, dict[str, tuple[tuple[float, float], ...]]] = {}
    for cxr, value, where in _cxr_entries(data, path):
        if _SIZE_KEY in value:
            _check_size(value[_SIZE_KEY], f"{where}, {_SIZE_KEY!r}")
        others = {name: entry for name, entry in value.items() if name != _SIZE_KEY}
        points[cxr] = {}
        for label, name, listed in _labelled(others, where):
            field = f"{where}, {name!r}"
            if not isinstance(listed, list):
                raise ValueError(f"{field}: expected a list of points [x, y], got {_kind(listed)}")
            if len(listed) > _MAX_POINTS:
                raise ValueError(f"{field}: {len(listed)} points, more than {_MAX_POINTS}")
            points[cxr][label] = tuple(
                _check_point(point, f"{field}, point {index}") for index, point in enumerate(listed)
            )
    return points


def write_salient_points(
    path: str | os.PathLike[str],
    points: Mapping[str, Mapping[str, Iterable[tuple[float, float]]]],
) -> Path:
    """Writes salient points in the reference's ``hb_salient_pt_*.json`` format.

    Args:
        path: The JSON file to write (atomically).
        points: CXR id -> label (either spelling) -> ``(x, y)`` points; written with
            CheXlocalize's pathology names, CXRs and pathologies in the order given.

    Returns:
        ``path``.

    Raises:
        ValueError: An unknown or repeated pathology, or a point that is not two finite
            numbers.
    """
    out: dict[str, dict[str, list[list[float]]]] = {}
    for cxr, labelled in points.items():
        entry: dict[str, list[list[float]]] = {}
        for label, listed in labelled.items():
            name = chexlocalize_name(label)
            if name in entry:
                raise ValueError(f"CXR {cxr!r}: {label!r} is given twice (under both spellings)")
            where = f"CXR {cxr!r}, {name!r}"
            entry[name] = [
                list(_check_point(list(point), f"{where}, point {index}"))
                for index, point in enumerate(listed)
            ]
        out[cxr] = entry
    return write_bytes_atomic(Path(path), json.dumps(out).encode("ascii"))


# ----------------------------------------------------------------------------------------------
# Checks


def _load_json(path: Path, what: str) -> dict[str, Any]:
    """A non-empty JSON object read strictly (no key twice), errors naming ``path``."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(2, f"{what} not found", str(path)) from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a JSON file ({error})") from None
    except _DuplicateKeyError as error:
        raise ValueError(f"{path}: {error}") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(
            f"{path}: expected a non-empty JSON object {{cxr_id: {{pathology: ...}}}}, got "
            f"{type(data).__name__ if not isinstance(data, dict) else 'an empty object'}"
        )
    return data


def _check_point(point: object, where: str) -> tuple[float, float]:
    if (
        not isinstance(point, list | tuple)
        or len(point) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in point)
        or not all(math.isfinite(v) and abs(v) <= _MAX_COORDINATE for v in point)
    ):
        raise ValueError(
            f"{where}: expected [x, y], two finite numbers within +-{_MAX_COORDINATE:g}, "
            f"got {point!r}"
        )
    return float(point[0]), float(point[1])


class _DuplicateKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object hook that refuses a key given twice (json keeps the last one silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _cxr_entries(data: Mapping[str, Any], path: Path) -> Iterator[tuple[str, dict[str, Any], str]]:
    """Each CXR of a CheXlocalize JSON file with its object and the place to name in errors."""
    for cxr, value in data.items():
        where = f"{path}: CXR {cxr!r}"
        if not cxr.strip():
            raise ValueError(f"{path}: an empty CXR id")
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object of pathologies, got {_kind(value)}")
        yield cxr, value, where


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _detect_format(path: Path, data: Mapping[str, Any]) -> CheXlocalizeFormat:
    first_cxr, first = next(iter(data.items()))
    if isinstance(first, dict) and _SIZE_KEY in first:
        format: CheXlocalizeFormat = "annotations"
    elif isinstance(first, dict) and first and all(isinstance(v, dict) for v in first.values()):
        format = "segmentations"
    else:
        raise ValueError(
            f"{path}: CXR {first_cxr!r} is in neither CheXlocalize format: expected "
            "{pathology: {'size': [h, w], 'counts': ...}} (segmentations) or "
            "{'img_size': [h, w], pathology: [polygon, ...]} (annotations)"
        )
    for cxr, value in data.items():
        annotations = isinstance(value, dict) and _SIZE_KEY in value
        if annotations != (format == "annotations"):
            raise ValueError(
                f"{path}: CXR {cxr!r} is in the {'annotations' if annotations else 'segmentations'}"
                f" format but CXR {first_cxr!r} is in the {format} format; a file holds one kind"
            )
    return format


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_size(size: object, where: str) -> tuple[int, int]:
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(_is_int(n) and n > 0 for n in size)
    ):
        raise ValueError(f"{where} must be [height, width], two positive integers, got {size!r}")
    height, width = int(size[0]), int(size[1])
    if height * width > _MAX_PIXELS:
        raise ValueError(
            f"{where} {[height, width]} has {height * width} pixels, more than the "
            f"{_MAX_PIXELS} an image may have (PIL.Image.MAX_IMAGE_PIXELS)"
        )
    return height, width


def _rle_runs(counts: str, where: str) -> list[int]:
    """The run lengths of a COCO compressed RLE string.

    The string packs each run in 5-bit groups, low bits first, one character per group
    (``chr(48 + bits)``, ``0x20`` set while more groups follow, ``0x10`` of the last one the
    sign); from the fourth run on, the value is the difference to the run two before. Only
    used to validate a string before pycocotools decodes it.
    """
    runs: list[int] = []
    value = shift = 0
    for position, char in enumerate(counts):
        code = ord(char) - 48
        if not 0 <= code < 64:
            raise ValueError(f"{where}: 'counts' has an invalid character {char!r} at {position}")
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError(f"{where}: 'counts' decodes to a negative run ({value})")
        runs.append(value)
        value = shift = 0
    if shift:
        raise ValueError(f"{where}: 'counts' ends in the middle of a run")
    return runs


def _check_rle(rle: object, where: str) -> dict[str, Any]:
    """The RLE in the form pycocotools takes (``counts`` as bytes), after checking it."""
    if not isinstance(rle, Mapping) or set(rle) != {"size", "counts"}:
        keys = sorted(rle) if isinstance(rle, Mapping) else _kind(rle)
        raise ValueError(f"{where}: expected {{'size': [h, w], 'counts': ...}}, got {keys}")
    height, width = _check_size(rle["size"], f"{where}, 'size'")
    counts = rle["counts"]
    if isinstance(counts, str):
        runs = _rle_runs(counts, f"{where}, 'counts'")
        encoded: dict[str, Any] = {"size": [height, width], "counts": counts.encode("ascii")}
    elif isinstance(counts, list) and all(_is_int(n) and n >= 0 for n in counts):
        runs = counts
        encoded = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    else:
        raise ValueError(
            f"{where}, 'counts': expected a COCO compressed string or a list of non-negative "
            f"integers, got {_kind(counts)}"
        )
    total = sum(runs)
    if total != height * width:
        raise ValueError(
            f"{where}, 'counts': the runs cover {total} pixels but 'size' {[height, width]} "
            f"has {height * width}"
        )
    return encoded


def _check_polygon(polygon: object, size: tuple[int, int], where: str) -> list[tuple[float, float]]:
    height, width = size
    if not isinstance(polygon, list) or len(polygon) < 2:
        raise ValueError(
            f"{where}: a polygon must be a list of at least two vertices [x, y], got {polygon!r}"
        )
    vertices = []
    for index, vertex in enumerate(polygon):
        if (
            not isinstance(vertex, list | tuple)
            or len(vertex) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in vertex)
            or not all(math.isfinite(v) for v in vertex)
        ):
            raise ValueError(f"{where}, vertex {index}: expected [x, y] numbers, got {vertex!r}")
        x, y = float(vertex[0]), float(vertex[1])
        if not (abs(x) <= _MAX_COORDINATE and abs(y) <= _MAX_COORDINATE):
            raise ValueError(
                f"{where}, vertex {index}: [{x:g}, {y:g}] is not a pixel coordinate (beyond "
                f"+-{_MAX_COORDINATE}, where PIL's integer drawing overflows; the image is "
                f"{width}x{height})"
            )
        vertices.append((x, y))
    return vertices


def _inside(polygon: Iterable[Iterable[float]], size: tuple[int, int]) -> bool:
    """Whether every vertex lies on a pixel of the image: nothing of the polygon is clipped."""
    height, width = size
    return all(0.0 <= x <= width - 1 and 0.0 <= y <= height - 1 for x, y in polygon)


def _labelled(value: Mapping[str, Any], where: str) -> Iterator[tuple[str, str, Any]]:
    """``(CheXpert name, name in the file, entry)`` per pathology, refusing repeats."""
    seen: dict[str, str] = {}
    for name, entry in value.items():
        try:
            label = chexpert_name(name)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if label in seen:
            raise ValueError(f"{where}: {seen[label]!r} and {name!r} are the same pathology")
        seen[label] = name
        yield label, name, entry


def _read_segmentations(
    value: Mapping[str, Any], where: str
) -> tuple[tuple[int, int], dict[str, Any]]:
    entries: dict[str, Any] = {}
    size: tuple[int, int] | None = None
    first = ""
    for label, name, rle in _labelled(value, where):
        checked = _check_rle(rle, f"{where}, {name!r}")
        this = (int(checked["size"][0]), int(checked["size"][1]))
        if size is not None and this != size:
            raise ValueError(
                f"{where}, {name!r}: 'size' {list(this)} differs from {list(size)} of {first!r}"
            )
        size, first = this, first or name
        entries[label] = checked
    missing = [chexlocalize_name(label) for label in LOCALIZATION_LABELS if label not in entries]
    if missing or size is None:
        raise ValueError(
            f"{where}: no entry for {missing}; a segmentations file lists all 10 pathologies "
            "of every CXR (an all-zero mask where there is none)"
        )
    return size, entries


def _read_annotations(
    value: Mapping[str, Any], where: str, clipped: list[str]
) -> tuple[tuple[int, int], dict[str, Any]]:
    """The size and polygons of one CXR; polygons reaching outside it are added to ``clipped``."""
    size = _check_size(value[_SIZE_KEY], f"{where}, {_SIZE_KEY!r}")
    others = {name: entry for name, entry in value.items() if name != _SIZE_KEY}
    entries: dict[str, Any] = {}
    for label, name, polygons in _labelled(others, where):
        field = f"{where}, {name!r}"
        if not isinstance(polygons, list):
            raise ValueError(f"{field}: expected a list of polygons, got {_kind(polygons)}")
        checked = [
            _check_polygon(polygon, size, f"{field}, polygon {i}")
            for i, polygon in enumerate(polygons)
        ]
        height, width = size
        clipped += [
            f"{field}, polygon {index}"
            for index, polygon in enumerate(checked)
            if not all(0.0 <= x <= width and 0.0 <= y <= height for x, y in polygon)
        ]
        if checked:
            entries[label] = [[list(vertex) for vertex in polygon] for polygon in checked]
    return size, entries
