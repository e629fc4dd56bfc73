"""An example chexviz backbone plugin.

Installing this package makes ``create_backbone("example_tiny")`` work: chexviz imports this
module through the ``chexviz.backbones`` entry point, and importing it registers the builder.
"""

from __future__ import annotations

from torch import nn

from chexviz.models.registry import Backbone, BackboneInfo, register_backbone

__all__ = ["example_tiny"]


@register_backbone("example_tiny")
def example_tiny(*, pretrained: bool, in_channels: int) -> Backbone:
    """A two-convolution backbone with 8 features and stride 2."""
    if pretrained:
        raise ValueError("example_tiny has no pretrained weights")
    features = nn.Sequential(
        nn.Conv2d(in_channels, 8, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
    )
    info = BackboneInfo(
        name="example_tiny",
        num_features=8,
        mean=(0.5,) * in_channels,
        std=(0.5,) * in_channels,
        min_input_size=4,
        gradcam_layer="features.3",
    )
    return Backbone(features, info)
