"""Data: labels, images, the CheXpert, MIMIC and NIH datasets, cache, splits, ground truth.

Ground truth: boxes (`chexviz.data.boxes`) and CheXlocalize masks (`chexviz.data.chexlocalize`).

The bottom layer: it imports nothing else of chexviz but the private helpers.
"""

from chexviz.data.boxes import load_boxes, scale_boxes
from chexviz.data.chexlocalize import (
    LOCALIZATION_LABELS,
    CheXlocalizeGroundTruth,
    read_chexlocalize,
    read_salient_points,
    write_chexlocalize,
    write_salient_points,
)
from chexviz.data.dataset import ChestXrayDataset, CheXpertDataset
from chexviz.data.dicom import read_dicom
from chexviz.data.images import ImageDecodeError, load_image, to_tensor
from chexviz.data.label_mapping import NIH_LABELS, NIH_TO_CHEXPERT
from chexviz.data.labels import (
    CHEXPERT_LABELS,
    COMPETITION_LABELS,
    LabelValueError,
    MissingColumnsError,
    encode_labels,
)
from chexviz.data.mimic import MIMICCXRDataset
from chexviz.data.nih import NIHChestXray14Dataset, read_nih_boxes
from chexviz.data.splits import REFERENCE_SPLIT, PatientSplits, split_by_patient
from chexviz.data.synthetic import SIGN_LABELS, make_synthetic_chexpert
from chexviz.data.synthetic_external import make_synthetic_mimic, make_synthetic_nih

__all__ = [
    "CHEXPERT_LABELS",
    "COMPETITION_LABELS",
    "CheXlocalizeGroundTruth",
    "CheXpertDataset",
    "ChestXrayDataset",
    "ImageDecodeError",
    "LOCALIZATION_LABELS",
    "LabelValueError",
    "MIMICCXRDataset",
    "MissingColumnsError",
    "NIHChestXray14Dataset",
    "NIH_LABELS",
    "NIH_TO_CHEXPERT",
    "PatientSplits",
    "REFERENCE_SPLIT",
    "SIGN_LABELS",
    "encode_labels",
    "load_boxes",
    "load_image",
    "make_synthetic_chexpert",
    "make_synthetic_mimic",
    "make_synthetic_nih",
    "read_chexlocalize",
    "read_dicom",
    "read_nih_boxes",
    "read_salient_points",
    "scale_boxes",
    "split_by_patient",
    "to_tensor",
    "write_chexlocalize",
    "write_salient_points",
]
