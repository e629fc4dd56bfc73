"""Models: the backbone registry, built-in backbones, heads, the classifier and its weight file.

Imports only [`chexviz.data`][chexviz.data] (label names, image preparation) below it.
"""

from chexviz.models.classifier import MultiLabelClassifier
from chexviz.models.heads import list_heads
from chexviz.models.registry import (
    Backbone,
    BackboneInfo,
    create_backbone,
    list_backbones,
    register_backbone,
)
from chexviz.models.serialization import WeightFileError, read_extra
from chexviz.models.xrv import from_torchxrayvision

__all__ = [
    "Backbone",
    "BackboneInfo",
    "MultiLabelClassifier",
    "WeightFileError",
    "create_backbone",
    "from_torchxrayvision",
    "list_backbones",
    "list_heads",
    "read_extra",
    "register_backbone",
]
