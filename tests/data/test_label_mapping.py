from __future__ import annotations

import numpy as np
import pytest

from chexviz.data.label_mapping import (
    MIMIC_TO_CHEXPERT,
    NIH_LABELS,
    NIH_TO_CHEXPERT,
    NIH_UNMAPPED,
    map_nih_targets,
    nih_sources,
)
from chexviz.data.labels import CHEXPERT_LABELS


def test_nih_labels_are_the_release_spelling_in_alphabetical_order() -> None:
    assert len(NIH_LABELS) == 14
    assert list(NIH_LABELS) == sorted(NIH_LABELS)
    assert "Pleural_Thickening" in NIH_LABELS
    assert "Effusion" in NIH_LABELS


def test_the_documented_links() -> None:
    links = {link.target: (link.sources, link.kind) for link in NIH_TO_CHEXPERT}
    assert links == {
        "Cardiomegaly": (("Cardiomegaly",), "same"),
        "Lung Lesion": (("Mass", "Nodule"), "union"),
        "Edema": (("Edema",), "same"),
        "Consolidation": (("Consolidation",), "same"),
        "Pneumonia": (("Pneumonia",), "same"),
        "Atelectasis": (("Atelectasis",), "same"),
        "Pneumothorax": (("Pneumothorax",), "same"),
        "Pleural Effusion": (("Effusion",), "renamed"),
    }
    # In CheXpert column order, every link with a reason.
    targets = [link.target for link in NIH_TO_CHEXPERT]
    assert targets == [label for label in CHEXPERT_LABELS if label in targets]
    assert all(link.reason for link in NIH_TO_CHEXPERT)


def test_every_nih_label_is_either_mapped_or_explained() -> None:
    mapped = {source for link in NIH_TO_CHEXPERT for source in link.sources}
    assert mapped.isdisjoint(NIH_UNMAPPED)
    assert mapped | set(NIH_UNMAPPED) == set(NIH_LABELS)
    assert set(NIH_UNMAPPED) == {
        "Infiltration",
        "Pleural_Thickening",
        "Fibrosis",
        "Emphysema",
        "Hernia",
    }
    assert all(NIH_UNMAPPED.values())


def test_mimic_is_the_identity() -> None:
    assert [link.target for link in MIMIC_TO_CHEXPERT] == list(CHEXPERT_LABELS)
    assert all(link.sources == (link.target,) for link in MIMIC_TO_CHEXPERT)


def test_sources_of_a_name() -> None:
    assert nih_sources("Effusion") == ("Effusion",)
    assert nih_sources("Pleural Effusion") == ("Effusion",)
    assert nih_sources("Lung Lesion") == ("Mass", "Nodule")
    assert nih_sources("Fracture") is None
    assert nih_sources("Lung Opacity") is None
    with pytest.raises(ValueError, match=r"unknown label 'Efusion'"):
        nih_sources("Efusion")


def test_map_targets_takes_unions_and_leaves_unannotated_nan() -> None:
    nih = np.zeros((3, 14), dtype=np.float32)
    nih[0, NIH_LABELS.index("Mass")] = 1
    nih[1, NIH_LABELS.index("Nodule")] = 1
    nih[1, NIH_LABELS.index("Effusion")] = 1
    nih[2, NIH_LABELS.index("Infiltration")] = 1
    out, unannotated = map_nih_targets(
        nih, ("Lung Lesion", "Pleural Effusion", "Fracture", "Infiltration")
    )
    np.testing.assert_array_equal(
        out,
        [[1, 0, np.nan, 0], [1, 1, np.nan, 0], [0, 0, np.nan, 1]],
    )
    assert unannotated == ("Fracture",)
    with pytest.raises(ValueError, match=r"shape \[N, 14\]"):
        map_nih_targets(np.zeros((2, 13)), ("Edema",))
