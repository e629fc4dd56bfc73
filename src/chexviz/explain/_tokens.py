"""Target layers of transformer-style models and the views that turn their outputs into maps.

Grad-CAM needs a feature map ``[B, C, h, w]``. A vision transformer's blocks output tokens
``[B, N, C]`` (class and register tokens first, then one token per patch, row-major), and Swin
stages output channels-last maps ``[B, h, w, C]``. This module reads, from the model's own
attributes, which layer to explain by default and how its output becomes a map:

- the patch grid comes from the patch embedding's patch size and the input size (timm's
  ``patch_embed.dynamic_feat_size`` for dynamic-size models);
- prefix tokens are dropped by their count (timm's ``num_prefix_tokens``, torchvision's one class
  token);
- channels-last outputs are permuted to ``[B, C, h, w]``.

Every view only selects and rearranges elements, so the same view applied to a layer's output
and to the gradient with respect to it gives the gradient with respect to the map.
No hooks here: [`chexviz.explain.gradcam`][chexviz.explain.gradcam] owns them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torchvision.models.convnext import ConvNeXt
from torchvision.models.maxvit import MaxVit
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

__all__ = [
    "Family",
    "LayerView",
    "Reshape",
    "family_of",
    "find_families",
    "layer_view",
    "qualified",
]

Reshape = Callable[[torch.Tensor], torch.Tensor]
"""A user's view of a layer output as ``[B, C, h, w]`` (only selecting and rearranging)."""

Layout = Literal["tokens", "channels_last", "channels_first"]


@dataclass(frozen=True)
class Family:
    """A recognised model family: how its layers lay out their outputs and which to explain.

    Attributes:
        name: Human-readable family, e.g. ``"timm VisionTransformer"``.
        layout: Layout of its blocks' outputs.
        default_layer: Dotted name, within the family's module, of the default target layer.
        candidates: Dotted names, within the family's module, of sensible target layers.
        prefix_tokens: Tokens before the patch tokens (``"tokens"`` layout only).
        patch: Patch height and width (``"tokens"`` layout only).
        grid: Patch grid ``(h, w)`` for an input ``(H, W)`` (``"tokens"`` layout only).
        pads: The patch embedding pads inputs to a multiple of the patch size (timm's
            ``dynamic_img_pad``), so any input size is accepted.
    """

    name: str
    layout: Layout
    default_layer: str
    candidates: tuple[str, ...]
    prefix_tokens: int = 0
    patch: tuple[int, int] = (1, 1)
    grid: Callable[[tuple[int, int]], tuple[int, int]] | None = None
    pads: bool = False


def family_of(module: nn.Module) -> Family | None:
    """The [`Family`][chexviz.explain._tokens.Family] of ``module`` itself, if recognised."""
    if isinstance(module, VisionTransformer):
        return _torchvision_vit(module)
    if isinstance(module, SwinTransformer):
        last = len(module.features) - 1
        return Family(
            "torchvision SwinTransformer",
            "channels_last",
            "norm",
            (f"features.{last - 2}", f"features.{last}", "norm"),
        )
    if isinstance(module, MaxVit):
        last = len(module.blocks) - 1
        return Family(
            "torchvision MaxVit",
            "channels_first",
            f"blocks.{last}",
            (f"blocks.{last - 1}", f"blocks.{last}"),
        )
    if isinstance(module, ConvNeXt):
        last = len(module.features) - 1
        return Family(
            "torchvision ConvNeXt",
            "channels_first",
            f"features.{last}",
            (f"features.{last - 2}", f"features.{last}"),
        )
    source = type(module).__module__
    if not source.startswith("timm."):
        return None
    patch_embed = getattr(module, "patch_embed", None)
    blocks = getattr(module, "blocks", None)
    prefix = getattr(module, "num_prefix_tokens", None)
    if (
        isinstance(patch_embed, nn.Module)
        and isinstance(blocks, nn.Sequential | nn.ModuleList)
        and isinstance(prefix, int)
    ):
        return _timm_vit(module, patch_embed, len(blocks), prefix)
    # Only families whose last stage is the last feature map: a generic timm CNN may end with
    # a head convolution after its stages, which tracing finds.
    attribute = "layers" if source.startswith("timm.models.swin") else "stages"
    if not source.startswith(("timm.models.swin", "timm.models.convnext", "timm.models.maxxvit")):
        return None
    stages = getattr(module, attribute, None)
    if not isinstance(stages, nn.Sequential | nn.ModuleList) or len(stages) == 0:
        return None
    last = len(stages) - 1
    candidates = (f"{attribute}.{max(last - 1, 0)}", f"{attribute}.{last}")
    if attribute == "layers":
        # timm >= 0.9 Swin stages and final norm are channels-last [B, h, w, C].
        return Family(
            f"timm {type(module).__name__}", "channels_last", "norm", (*candidates, "norm")
        )
    return Family(f"timm {type(module).__name__}", "channels_first", candidates[1], candidates)


def _torchvision_vit(model: VisionTransformer) -> Family:
    last = len(model.encoder.layers) - 1
    block = f"encoder.layers.encoder_layer_{last}"
    patch = int(model.patch_size)
    # The head reads the class token only, so the patch tokens leaving the last block carry no
    # gradient; the last point where they still feed the class token is that block's input
    # norm (the layer pytorch-grad-cam's ViT recipe uses too).
    return Family(
        "torchvision VisionTransformer",
        "tokens",
        f"{block}.ln_1",
        (f"encoder.layers.encoder_layer_{last - 1}", f"{block}.ln_1"),
        prefix_tokens=1,
        patch=(patch, patch),
        grid=lambda hw: (hw[0] // patch, hw[1] // patch),
    )


def _timm_vit(model: nn.Module, patch_embed: nn.Module, blocks: int, prefix: int) -> Family:
    size = getattr(patch_embed, "patch_size", None)
    if not isinstance(size, tuple | list) or len(size) != 2:
        size = (int(size), int(size)) if isinstance(size, int) else (1, 1)
    patch = (int(size[0]), int(size[1]))
    dynamic = getattr(model, "dynamic_img_size", False) is True
    feat_size = getattr(patch_embed, "dynamic_feat_size", None)
    fixed = getattr(patch_embed, "grid_size", None)

    def grid(hw: tuple[int, int]) -> tuple[int, int]:
        if dynamic and callable(feat_size):
            h, w = feat_size(hw)
            return int(h), int(w)
        if isinstance(fixed, tuple | list) and len(fixed) == 2 and not dynamic:
            return int(fixed[0]), int(fixed[1])
        return hw[0] // patch[0], hw[1] // patch[1]

    last = blocks - 1
    pool = getattr(model, "global_pool", "token")
    # With class-token pooling the patch tokens leaving the last block never reach the head
    # (their gradient is zero), so the default is the last block's input norm; with pooling
    # over the patch tokens ("avg", "map", ...) it is the last block's output.
    default = f"blocks.{last}.norm1" if pool == "token" else f"blocks.{last}"
    return Family(
        f"timm {type(model).__name__}",
        "tokens",
        default,
        (f"blocks.{last - 1}", default),
        prefix_tokens=prefix,
        patch=patch,
        grid=grid,
        pads=bool(getattr(patch_embed, "dynamic_img_pad", False)),
    )


def find_families(model: nn.Module) -> list[tuple[str, Family]]:
    """Recognised families in ``model`` (itself or submodules), outermost first, not nested."""
    found: list[tuple[str, Family]] = []
    for name, module in model.named_modules():
        if any(not outer or name.startswith(outer + ".") for outer, _ in found):
            continue
        family = family_of(module)
        if family is not None:
            found.append((name, family))
    return found


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def qualified(prefix: str, family: Family) -> tuple[str, tuple[str, ...]]:
    """The family's default layer and candidates as dotted names within the whole model."""
    return _join(prefix, family.default_layer), tuple(_join(prefix, c) for c in family.candidates)


@dataclass(frozen=True)
class LayerView:
    """How one target layer's output becomes a map ``[B, C, h, w]``.

    Attributes:
        name: Dotted name of the layer within the model.
        family: The family of the model the layer lies in, if recognised.
        channels_last: The layer outputs channels-last maps ``[B, h, w, C]``.
        conv: The layer is a convolution (in a token model: the patch projection, a map).
        reshape: A user's reshape, used instead of anything automatic.
    """

    name: str
    family: Family | None
    channels_last: bool
    conv: bool = False
    reshape: Reshape | None = None

    def check_input(self, hw: tuple[int, int]) -> None:
        """Raises ``ValueError`` if a token grid cannot be made for an input ``(H, W)``."""
        family = self.family
        if self.reshape is not None or family is None or family.layout != "tokens":
            return
        ph, pw = family.patch
        if not family.pads and (hw[0] % ph or hw[1] % pw):
            raise ValueError(
                f"input size {hw[0]}x{hw[1]} is not divisible by the patch size {ph}x{pw} of the "
                f"{family.name}; resize the image to a multiple of {ph}x{pw}"
            )

    def describe(self, hw: tuple[int, int]) -> str:
        """The layer's name and the view applied for an input ``(H, W)``."""
        family = self.family
        if self.reshape is not None:
            return f"{self.name} (custom reshape)"
        if family is not None and family.grid is not None and self.module_outputs_tokens:
            h, w = family.grid(hw)
            prefix = family.prefix_tokens
            plural = "" if prefix == 1 else "s"
            return f"{self.name} (tokens -> {h}x{w} grid, {prefix} prefix token{plural} dropped)"
        if self.channels_last:
            return f"{self.name} (channels-last -> channels-first)"
        return self.name

    def to_map(self, output: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """The map view ``[B, C, h, w]`` of a layer output ``output`` for an input ``(H, W)``.

        Raises:
            ValueError: The output is not spatial after the view; the message says what to pass.
        """
        if self.reshape is not None:
            return self._custom(output)
        if self.module_outputs_tokens and output.ndim == 3:
            return self._tokens(output, hw)
        if output.ndim == 4 and not self.module_outputs_tokens:
            return output.permute(0, 3, 1, 2) if self.channels_last else output
        kind = "token sequence [B, N, C]" if self.module_outputs_tokens else "feature map"
        raise ValueError(
            f"target layer {self.name!r} outputs shape {list(output.shape)}, not the {kind} it "
            f"was expected to give; pick another layer (target_layer=...) or pass reshape= a "
            f"function mapping the output to [B, C, h, w]"
        )

    @property
    def module_outputs_tokens(self) -> bool:
        """The layer lies in a token model and is not a convolution (the patch projection)."""
        return self.family is not None and self.family.layout == "tokens" and not self.conv

    def _custom(self, output: torch.Tensor) -> torch.Tensor:
        assert self.reshape is not None  # checked by the caller
        result = self.reshape(output)
        if not isinstance(result, torch.Tensor) or result.ndim != 4:
            shape = list(result.shape) if isinstance(result, torch.Tensor) else type(result)
            raise ValueError(
                f"reshape= returned {shape} for target layer {self.name!r} output "
                f"{list(output.shape)}; it must return a map [B, C, h, w]"
            )
        return result

    def _tokens(self, output: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        family = self.family
        # Only called for a layer in a "tokens" family, whose grid is always set.
        assert family is not None
        assert family.grid is not None
        h, w = family.grid(hw)
        prefix = family.prefix_tokens
        batch, tokens, channels = (int(n) for n in output.shape)
        if tokens != prefix + h * w:
            raise ValueError(
                f"target layer {self.name!r} outputs {tokens} tokens, but a {hw[0]}x{hw[1]} input "
                f"to the {family.name} gives {prefix} prefix tokens + a {h}x{w} patch grid = "
                f"{prefix + h * w}; pick another layer (target_layer=...) or pass reshape="
            )
        return output[:, prefix:].reshape(batch, h, w, channels).permute(0, 3, 1, 2)


def _channels_last(module: nn.Module, family: Family | None) -> bool:
    """Whether ``module``'s 4-D output is channels-last, from its type and the family."""
    if isinstance(module, nn.Conv2d | nn.BatchNorm2d | nn.MaxPool2d | nn.AvgPool2d):
        return False
    # A Linear or a plain LayerNorm acts on the last dimension: a 4-D output of one is
    # channels-last (ConvNeXt blocks' inner layers). timm's LayerNorm2d permutes internally.
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.LayerNorm) and not type(module).__name__.endswith("2d"):
        return True
    return family is not None and family.layout == "channels_last"


def layer_view(
    model: nn.Module,
    name: str,
    module: nn.Module,
    reshape: Reshape | None,
) -> LayerView:
    """The view of layer ``name`` of ``model``: its family is that of its nearest ancestor."""
    family: Family | None = None
    parts = name.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        ancestor = model.get_submodule(".".join(parts[:depth]))
        family = family_of(ancestor)
        if family is not None:
            break
    conv = isinstance(module, nn.Conv2d)
    return LayerView(name, family, _channels_last(module, family), conv, reshape)
