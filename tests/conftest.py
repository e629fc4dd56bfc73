"""Shared test fixtures."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Written out rather than built from CHEXPERT_LABELS: this is the release's header, the
# reference that the label order and the synthetic data set are checked against.
CHEXPERT_HEADER = [
    "Path",
    "Sex",
    "Age",
    "Frontal/Lateral",
    "AP/PA",
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]


def write_chexpert(
    root: Path,
    *,
    patients: int = 4,
    studies: int = 2,
    lateral: bool = True,
    csv_name: str = "train.csv",
    split: str = "train",
    folder: str = "CheXpert-v1.0-small",
    size: tuple[int, int] = (48, 40),
    seed: int = 0,
) -> Path:
    """Writes a tiny CheXpert-format data set and returns its release folder.

    Every study has a frontal view (``view1_frontal.jpg``) and, with ``lateral``, a lateral
    one. Label cells are drawn from the real encodings (``1.0``, ``0.0``, ``-1.0``, blank;
    ``No Finding`` only ``1.0`` or blank). Each image is a smooth gradient with a brightness
    unique to its row, so tests can tell images apart after resizing.
    """
    rng = np.random.default_rng(seed)
    release = root / folder
    rows = []
    for patient in range(1, patients + 1):
        for study in range(1, studies + 1):
            views = ["frontal", "lateral"] if lateral else ["frontal"]
            for number, view in enumerate(views, start=1):
                relative = f"{split}/patient{patient:05d}/study{study}/view{number}_{view}.jpg"
                image_path = release / relative
                image_path.parent.mkdir(parents=True, exist_ok=True)
                level = (len(rows) * 37) % 200
                width, height = size
                gradient = np.linspace(0, 40, width)[None, :] + np.zeros((height, 1))
                pixels = np.clip(gradient + level, 0, 255).astype(np.uint8)
                Image.fromarray(pixels, mode="L").save(image_path, quality=95)
                cells = [rng.choice(["1.0", "0.0", "-1.0", ""]) for _ in range(13)]
                rows.append(
                    [
                        f"{folder}/{relative}",
                        rng.choice(["Male", "Female"]),
                        str(int(rng.integers(18, 90))),
                        "Frontal" if view == "frontal" else "Lateral",
                        rng.choice(["AP", "PA"]) if view == "frontal" else "",
                        rng.choice(["1.0", ""]),
                        *cells,
                    ]
                )
    release.mkdir(parents=True, exist_ok=True)
    with open(release / csv_name, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CHEXPERT_HEADER)
        writer.writerows(rows)
    return release


@pytest.fixture
def make_chexpert(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a tiny CheXpert-format data set under ``tmp_path`` (see write_chexpert)."""

    def make(**options: object) -> Path:
        return write_chexpert(tmp_path, **options)  # type: ignore[arg-type]

    return make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips tests marked ``slow`` unless ``CHEXVIZ_SLOW=1`` or ``-m slow`` asks for them."""
    import os

    if os.environ.get("CHEXVIZ_SLOW") == "1" or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="long soak/fuzz variant: set CHEXVIZ_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
