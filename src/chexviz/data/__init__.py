"""Data: labels, images, the CheXpert dataset, its cache and splits, ground truth, synthetic data.

Ground truth: boxes (`chexviz.data.boxes`) and CheXlocalize masks (`chexviz.data.chexlocalize`).

The bottom layer: it imports nothing else of chexviz but the private helpers.
"""

from chexviz.data.boxes import load_boxes, scale_boxes
from chexviz.data.chexlocalize import (
    LOCALIZATION_LABELS,
    CheXlocalizeGroundTruth,
    read_chexlocalize,
    write_chexlocalize,
)
from chexviz.data.dataset import CheXpertDataset
from chexviz.data.images import ImageDecodeError, load_image, to_tensor
from chexviz.data.labels import (
    CHEXPERT_LABELS,
    COMPETITION_LABELS,
    LabelValueError,
    MissingColumnsError,
    encode_labels,
)
from chexviz.data.splits import REFERENCE_SPLIT, split_by_patient
from chexviz.data.synthetic import SIGN_LABELS, make_synthetic_chexpert

__all__ = [
    "CHEXPERT_LABELS",
    "COMPETITION_LABELS",
    "LOCALIZATION_LABELS",
    "REFERENCE_SPLIT",
    "SIGN_LABELS",
    "CheXlocalizeGroundTruth",
    "CheXpertDataset",
    "ImageDecodeError",
    "LabelValueError",
    "MissingColumnsError",
    "encode_labels",
    "load_boxes",
    "load_image",
    "make_synthetic_chexpert",
    "read_chexlocalize",
    "scale_boxes",
    "split_by_patient",
    "to_tensor",
    "write_chexlocalize",
]
