"""Fixtures shared by the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chexviz.data.synthetic import make_synthetic_chexpert
from chexviz.models.classifier import MultiLabelClassifier


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small synthetic set with CheXlocalize files (16 validation patients) and a model file.

    Module scope: each test module gets its own copy, so their outputs never meet.
    """
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_chexpert(root / "data", n_patients=1, valid_patients=16)
    torch.manual_seed(0)
    model = root / "model.safetensors"
    MultiLabelClassifier("simple_cnn", image_size=48).save(model)
    return root, model
