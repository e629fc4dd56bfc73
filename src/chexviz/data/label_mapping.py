"""How the labels of other data sets map onto the 14 CheXpert observations.

A model trained on CheXpert outputs CheXpert's observations. To test it on another data set,
each of its outputs must be compared with a label that means the same finding there, or not at
all. This module is the one place where that correspondence is written down.

**MIMIC-CXR-JPG** was labelled with the CheXpert labeler itself, so its 14 columns are
CheXpert's observations under the same names (`MIMIC_TO_CHEXPERT` is the identity).

**NIH ChestX-ray14** has its own 14 findings, mined from reports with other tools. A CheXpert
observation is mapped only where the NIH label(s) describe the same finding, so that both an
NIH positive *and* an NIH negative carry over (`NIH_TO_CHEXPERT`):

| CheXpert observation | NIH label(s) | why |
|---|---|---|
| Atelectasis, Cardiomegaly, Consolidation, Edema, Pneumonia, Pneumothorax | same | same finding |
| Pleural Effusion | Effusion | NIH's "Effusion" is a pleural effusion |
| Lung Lesion | Mass or Nodule | the CheXpert labeler's Lung Lesion is chiefly "mass" and "nodule" |

The Lung Lesion link is a union and slightly loose: the CheXpert labeler also counts a few rarer
terms (tumour, carcinoma, cavitary lesion, lump) that NIH has no label for, so a small share
of NIH "negatives" may be lesions. It is reported as a union wherever scores are printed.

Not mapped, and never scored (`NIH_UNMAPPED`):

- **Infiltration**: the CheXpert labeler counts "infiltrate" under *Lung Opacity*, together
  with any opacity, airspace disease and interstitial markings, so an NIH image negative for
  Infiltration is not a Lung Opacity negative.
- **Pleural_Thickening** and **Fibrosis**: the CheXpert labeler counts both words under
  *Pleural Other*, with pleural and pleuro-parenchymal scars that NIH does not label, and
  NIH's Fibrosis is mostly pulmonary, not pleural.
- **Emphysema, Hernia**: no CheXpert counterpart.
- NIH's **No Finding** means "none of NIH's 14 labels", not CheXpert's "No Finding" (an NIH
  "No Finding" image may show a fracture, a support device or an enlarged cardiomediastinum).

The CheXpert observations with no NIH counterpart (No Finding, Enlarged Cardiomediastinum, Lung
Opacity, Pleural Other, Fracture, Support Devices) are *not annotated* in NIH: a data set asked
for them gives NaN targets (ignored), whatever its blank policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from chexviz.data.labels import CHEXPERT_LABELS

__all__ = [
    "MIMIC_TO_CHEXPERT",
    "NIH_LABELS",
    "NIH_TO_CHEXPERT",
    "NIH_UNMAPPED",
    "LabelLink",
    "map_nih_targets",
    "nih_sources",
]

NIH_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)
"""The 14 findings of NIH ChestX-ray14, spelled as in ``Data_Entry_2017.csv`` (alphabetical)."""


@dataclass(frozen=True)
class LabelLink:
    """One CheXpert observation and the label(s) of another data set that carry it.

    Attributes:
        target: The CheXpert observation.
        sources: The other data set's label(s); the observation is positive when any of them
            is, negative when all are negative.
        kind: ``"same"`` (same name), ``"renamed"`` (same finding, another name) or
            ``"union"`` (the observation gathers several of the other data set's labels).
        reason: Why the link holds, in one sentence.
    """

    target: str
    sources: tuple[str, ...]
    kind: Literal["same", "renamed", "union"]
    reason: str


_SAME = "the same finding under the same name"

NIH_TO_CHEXPERT: tuple[LabelLink, ...] = (
    LabelLink("Cardiomegaly", ("Cardiomegaly",), "same", _SAME),
    LabelLink(
        "Lung Lesion",
        ("Mass", "Nodule"),
        "union",
        "the CheXpert labeler's Lung Lesion is chiefly 'mass' and 'nodule' mentions",
    ),
    LabelLink("Edema", ("Edema",), "same", _SAME),
    LabelLink("Consolidation", ("Consolidation",), "same", _SAME),
    LabelLink("Pneumonia", ("Pneumonia",), "same", _SAME),
    LabelLink("Atelectasis", ("Atelectasis",), "same", _SAME),
    LabelLink("Pneumothorax", ("Pneumothorax",), "same", _SAME),
    LabelLink("Pleural Effusion", ("Effusion",), "renamed", "NIH's Effusion is a pleural effusion"),
)
"""The CheXpert observations NIH ChestX-ray14 annotates, in CheXpert column order."""

NIH_UNMAPPED: Mapping[str, str] = {
    "Infiltration": (
        "the CheXpert labeler counts infiltrates under Lung Opacity with any opacity, airspace "
        "disease and interstitial markings, so NIH negatives are not Lung Opacity negatives"
    ),
    "Pleural_Thickening": (
        "one of several findings under CheXpert's Pleural Other (with pleural scars, which NIH "
        "does not label), so NIH negatives are not Pleural Other negatives"
    ),
    "Fibrosis": (
        "mostly pulmonary fibrosis in NIH; the CheXpert labeler counts the word under Pleural Other"
    ),
    "Emphysema": "no CheXpert counterpart",
    "Hernia": "no CheXpert counterpart",
}
"""NIH labels that no CheXpert observation is compared with, and why."""

MIMIC_TO_CHEXPERT: tuple[LabelLink, ...] = tuple(
    LabelLink(name, (name,), "same", "MIMIC-CXR-JPG was labelled with the CheXpert labeler")
    for name in CHEXPERT_LABELS
)
"""MIMIC-CXR-JPG's 14 columns are CheXpert's observations (the identity)."""

_NIH_LINKS = {link.target: link for link in NIH_TO_CHEXPERT}


def nih_sources(label: str) -> tuple[str, ...] | None:
    """The NIH label(s) behind a label name asked of an NIH data set.

    Args:
        label: An NIH label (``"Effusion"``) or a CheXpert observation (``"Pleural Effusion"``).

    Returns:
        The NIH labels whose union gives it, or ``None`` for a CheXpert observation that NIH
        does not annotate (its targets are NaN).

    Raises:
        ValueError: ``label`` is neither an NIH label nor a CheXpert observation.
    """
    if label in NIH_LABELS:
        return (label,)
    if label in _NIH_LINKS:
        return _NIH_LINKS[label].sources
    if label in CHEXPERT_LABELS:
        return None
    raise ValueError(
        f"unknown label {label!r}: neither an NIH ChestX-ray14 label {list(NIH_LABELS)} nor a "
        f"CheXpert observation {list(CHEXPERT_LABELS)}"
    )


def map_nih_targets(
    nih: npt.ArrayLike, labels: Sequence[str]
) -> tuple[npt.NDArray[np.float32], tuple[str, ...]]:
    """Turns NIH's 14 findings into values for the requested labels.

    Args:
        nih: ``[N, 14]`` array of ``0`` / ``1`` in the order of `NIH_LABELS`.
        labels: NIH labels and / or CheXpert observations, in output order.

    Returns:
        float32 ``[N, len(labels)]`` (a union label is the maximum of its sources; NaN for
        observations NIH does not annotate) and the labels that are not annotated.

    Raises:
        ValueError: ``nih`` has the wrong shape, or a label is unknown.
    """
    values = np.asarray(nih, dtype=np.float32)
    if values.ndim != 2 or values.shape[1] != len(NIH_LABELS):
        raise ValueError(f"NIH labels must have shape [N, {len(NIH_LABELS)}], got {values.shape}")
    out = np.full((values.shape[0], len(labels)), np.nan, dtype=np.float32)
    unannotated = []
    for j, label in enumerate(labels):
        sources = nih_sources(label)
        if sources is None:
            unannotated.append(label)
            continue
        columns = [NIH_LABELS.index(source) for source in sources]
        out[:, j] = values[:, columns].max(axis=1)
    return out, tuple(unannotated)
