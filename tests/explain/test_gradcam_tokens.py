"""Grad-CAM on transformer families, checked against captum's LayerGradCam.

Each model is built with seeded random weights at a small input size. captum needs a layer with
a spatial output, so the oracle gets the layer wrapped in an adaptor that applies a hand-written
reshape (prefix tokens dropped by a literal count, patch grid written out) and undoes it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.maxvit import MaxVit

from chexviz.explain.gradcam import METHODS, GradCAM

timm = pytest.importorskip("timm")
captum_attr = pytest.importorskip("captum.attr")

ToMap = Callable[[torch.Tensor], torch.Tensor]
FromMap = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _tokens(prefix: int, h: int, w: int) -> tuple[ToMap, FromMap]:
    def to_map(t: torch.Tensor) -> torch.Tensor:
        return t[:, prefix:].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)

    def from_map(g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[:, :prefix], g.permute(0, 2, 3, 1).reshape(t.shape[0], h * w, -1)], 1)

    return to_map, from_map


_NHWC: tuple[ToMap, FromMap] = (
    lambda t: t.permute(0, 3, 1, 2),
    lambda g, t: g.permute(0, 2, 3, 1),
)
_NCHW: tuple[ToMap, FromMap] = (lambda t: t, lambda g, t: g)


def _torchvision_vit() -> nn.Module:
    model = torchvision.models.vit_b_16(image_size=64, num_classes=5)
    # torchvision zero-initialises the head, which would make every gradient zero.
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model


def _maxvit() -> nn.Module:
    # maxvit_t's stages with a 2x2 partition, so that a 64 px input fits (7x7 needs 224 px).
    return MaxVit(
        input_size=(64, 64),
        stem_channels=64,
        partition_size=2,
        block_channels=[64, 128, 256, 512],
        block_layers=[2, 2, 5, 2],
        head_dim=32,
        stochastic_depth_prob=0.2,
        num_classes=5,
    )


def _timm(name: str, size: int) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, num_classes=5, img_size=size)


# name: (builder, input size, expected default layer, hand-written reshape, expected layer text)
CASES: dict[str, tuple[Callable[[], nn.Module], int, str, tuple[ToMap, FromMap], str]] = {
    "torchvision/vit_b_16": (
        _torchvision_vit,
        64,
        "encoder.layers.encoder_layer_11.ln_1",
        _tokens(1, 4, 4),
        " (tokens -> 4x4 grid, 1 prefix token dropped)",
    ),
    "torchvision/swin_t": (
        lambda: torchvision.models.swin_t(num_classes=5),
        64,
        "norm",
        _NHWC,
        " (channels-last -> channels-first)",
    ),
    "torchvision/maxvit_t": (_maxvit, 64, "blocks.3", _NCHW, ""),
    "torchvision/convnext_tiny": (
        lambda: torchvision.models.convnext_tiny(num_classes=5),
        64,
        "features.7",
        _NCHW,
        "",
    ),
    "timm/vit_small_patch16_224": (
        _timm("vit_small_patch16_224", 64),
        64,
        "blocks.11.norm1",
        _tokens(1, 4, 4),
        " (tokens -> 4x4 grid, 1 prefix token dropped)",
    ),
    "timm/deit_small_patch16_224": (
        _timm("deit_small_patch16_224", 64),
        64,
        "blocks.11.norm1",
        _tokens(1, 4, 4),
        " (tokens -> 4x4 grid, 1 prefix token dropped)",
    ),
    "timm/vit_small_patch14_reg4_dinov2": (
        _timm("vit_small_patch14_reg4_dinov2", 56),
        56,
        "blocks.11.norm1",
        _tokens(5, 4, 4),  # 1 class token + 4 register tokens
        " (tokens -> 4x4 grid, 5 prefix tokens dropped)",
    ),
    "timm/swin_tiny_patch4_window7_224": (
        _timm("swin_tiny_patch4_window7_224", 112),
        112,
        "norm",
        _NHWC,
        " (channels-last -> channels-first)",
    ),
    "timm/convnext_tiny": (
        lambda: timm.create_model("convnext_tiny", pretrained=False, num_classes=5),
        64,
        "stages.3",
        _NCHW,
        "",
    ),
}


@functools.lru_cache(maxsize=1)
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return CASES[name][0]().eval()


class _Map(nn.Module):
    """The module captum explains at: its output is the hand-written map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Adaptor(nn.Module):
    def __init__(self, layer: nn.Module, to_map: ToMap, from_map: FromMap) -> None:
        super().__init__()
        self.layer = layer
        self.map = _Map()
        self.to_map = to_map
        self.from_map = from_map

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        out = self.layer(*args, **kwargs)
        return self.from_map(self.map(self.to_map(out)), out)


def _captum_maps(
    model: nn.Module, layer: str, views: tuple[ToMap, FromMap], x: torch.Tensor, classes: int
) -> torch.Tensor:
    oracle = copy.deepcopy(model)
    parent_name, _, child = layer.rpartition(".")
    parent = oracle.get_submodule(parent_name)
    adaptor = _Adaptor(getattr(parent, child), *views)
    setattr(parent, child, adaptor)
    cam = captum_attr.LayerGradCam(oracle, adaptor.map)
    return torch.stack(
        [cam.attribute(x, target=k, relu_attributions=True)[:, 0].detach() for k in range(classes)]
    )


@pytest.mark.parametrize("name", list(CASES))
def test_token_models_match_captum_and_run_every_method(name: str) -> None:
    _, size, layer, views, transform = CASES[name]
    model = _model(name)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    classes = list(range(5))

    cam = GradCAM(model)
    assert cam.target_layer_name == layer
    explanation = cam.explain(x, classes=classes)
    assert explanation.layer == layer + transform

    expected = _captum_maps(model, layer, views, x, len(classes))
    ours = torch.stack(
        [torch.stack([explanation.raw_maps[b][str(k)] for b in range(2)]) for k in classes]
    )
    assert ours.shape == expected.shape
    assert float(expected.amax()) > 0, "the oracle's maps are all zero: the test proves nothing"
    error = float((ours - expected).abs().amax() / expected.abs().amax())
    assert error <= 1e-4

    for method in METHODS:
        result = GradCAM(model, method=method).explain(x, classes=[0, 3])
        for b in range(2):
            for k in ("0", "3"):
                assert result.heatmaps[b][k].shape == (size, size)
                assert result.raw_maps[b][k].shape == ours.shape[-2:]
                assert bool(torch.isfinite(result.raw_maps[b][k]).all())


def test_non_square_input_on_a_dynamic_size_vit() -> None:
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=3, dynamic_img_size=True
    ).eval()
    x = torch.rand(1, 3, 48, 80)
    explanation = GradCAM(model).explain(x, classes=[0, 1, 2])
    assert explanation.layer == "blocks.11.norm1 (tokens -> 3x5 grid, 1 prefix token dropped)"
    expected = _captum_maps(model, "blocks.11.norm1", _tokens(1, 3, 5), x, 3)
    ours = torch.stack([explanation.raw_maps[0][str(k)] for k in range(3)])
    assert ours.shape == (3, 3, 5)
    assert float(expected.amax()) > 0
    assert float((ours - expected[:, 0]).abs().amax() / expected.abs().amax()) <= 1e-4

    with pytest.raises(ValueError, match=r"50x80 is not divisible by the patch size 16x16"):
        GradCAM(model).explain(torch.rand(1, 3, 50, 80), classes=[0])


def test_wrapped_token_model_is_found_and_a_named_layer_is_viewed() -> None:
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = timm.create_model(
                "deit_small_patch16_224", pretrained=False, num_classes=2, img_size=32
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(x)

    torch.manual_seed(0)
    model = Wrapper().eval()
    x = torch.rand(1, 3, 32, 32)
    cam = GradCAM(model)
    assert cam.target_layer_name == "backbone.blocks.11.norm1"
    layer = GradCAM(model, "backbone.blocks.10").explain(x, classes=[0]).layer
    assert layer == "backbone.blocks.10 (tokens -> 2x2 grid, 1 prefix token dropped)"


def test_model_target_layer_inside_a_token_model_is_viewed() -> None:
    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = timm.create_model(
                "swin_tiny_patch4_window7_224", pretrained=False, num_classes=2, img_size=64
            )

        @property
        def target_layer(self) -> nn.Module:
            return self.backbone.layers[-1]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(x)

    torch.manual_seed(0)
    explanation = GradCAM(Classifier().eval()).explain(torch.rand(1, 3, 64, 64), classes=[0])
    assert explanation.layer == "backbone.layers.3 (channels-last -> channels-first)"
    assert explanation.raw_maps[0]["0"].shape == (2, 2)


class _TinyViT(nn.Module):
    """A token model chexviz does not know: patch conv, one encoder layer, class-token head."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, kernel_size=8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, 16))
        self.block = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.block(tokens)[:, 0])


def test_unknown_token_model_refuses_its_stem_and_accepts_a_reshape() -> None:
    torch.manual_seed(0)
    model = _TinyViT().eval()
    with pytest.raises(ValueError, match=r"'patch'.*stem or patch embedding.*target_layer='block'"):
        GradCAM(model)

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:].reshape(t.shape[0], 4, 4, -1).permute(0, 3, 1, 2)

    x = torch.rand(1, 3, 32, 32)
    explanation = GradCAM(model, "block.norm1", reshape=reshape).explain(x, classes=[0])
    assert explanation.layer == "block.norm1 (custom reshape)"
    assert explanation.raw_maps[0]["0"].shape == (4, 4)
    with pytest.raises(ValueError, match=r"not a known token layout|not the feature map"):
        GradCAM(model, "block.norm1").explain(x, classes=[0])


def test_bad_layers_on_a_token_model_say_what_to_pass() -> None:
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=2, img_size=32)
    with pytest.raises(ValueError, match=r"candidate layers.*'blocks.11.norm1'.*target_layer="):
        GradCAM(model, "blocks.99")
    with pytest.raises(ValueError, match=r"'head' outputs shape \[1, 2\].*target_layer=.*reshape="):
        GradCAM(model, "head").explain(torch.rand(1, 3, 32, 32), classes=[0])
    with pytest.raises(TypeError, match="reshape must be callable"):
        GradCAM(model, reshape=3)  # type: ignore[arg-type]
