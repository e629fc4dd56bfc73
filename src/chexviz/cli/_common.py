"""What several commands share: loading the model that ``--model`` names."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chexviz.models.classifier import MultiLabelClassifier


def load_model(spec: str | Path) -> MultiLabelClassifier:
    """The model ``--model`` names, in eval mode.

    Args:
        spec: ``--model`` as the parser reads it: an ``xrv:`` name, or a path to a weight file.
    """
    from chexviz.models.classifier import MultiLabelClassifier
    from chexviz.models.xrv import from_torchxrayvision

    if isinstance(spec, str):
        return from_torchxrayvision(spec)
    return MultiLabelClassifier.load(spec)
