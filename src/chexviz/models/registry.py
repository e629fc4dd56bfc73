"""The backbone registry: named feature extractors that a classifier is built on.

Backbones are looked up by name, in the style of ``torchvision.models`` and ``timm``::

    from chexviz.models.registry import create_backbone, list_backbones

    list_backbones("res*")  # ['resnet18', 'resnet50']
    backbone = create_backbone("densenet121", in_channels=1)

The built-in backbones live in [`chexviz.models.backbones`][chexviz.models.backbones]. Other
packages add
their own through the ``chexviz.backbones`` entry-point group; those are discovered the first
time the registry is listed or queried (see the models guide).

Two name prefixes reach whole model zoos without registering each name (they are not listed
by [`list_backbones`][chexviz.models.registry.list_backbones]):

* ``timm/<name>``: any timm model (``pip install "chexviz[timm]"``), see
  [`chexviz.models.timm_backbones`][chexviz.models.timm_backbones];
* ``xrv/<weights>``: a torchxrayvision network, see [`chexviz.models.xrv`][chexviz.models.xrv].
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import logging
import math
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Protocol, TypeVar

import torch
from torch import nn

__all__ = [
    "ENTRY_POINT_GROUP",
    "Backbone",
    "BackboneBuilder",
    "BackboneInfo",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "chexviz.backbones"
"""The entry-point group scanned for third-party backbones."""

# Name prefix -> (module, builder): families built on demand rather than registered one by one.
_PREFIXES: dict[str, tuple[str, str]] = {
    "timm/": ("chexviz.models.timm_backbones", "build_timm_backbone"),
    "xrv/": ("chexviz.models.xrv", "build_xrv_backbone"),
}
_PREFIX_HINT = (
    "; any timm model is also available as 'timm/<name>' (pip install chexviz[timm]) and "
    "torchxrayvision's networks as 'xrv/<weights name>'"
)


@dataclass(frozen=True)
class BackboneInfo:
    """What a classifier needs to know about a backbone.

    Attributes:
        name: Registry name of the backbone.
        num_features: Channels of the feature map returned by ``forward_features``.
        mean: Per-channel mean subtracted from ``[0, 1]`` inputs (one value per input channel).
        std: Per-channel standard deviation the centred inputs are divided by.
        min_input_size: Smallest square input side, in pixels, the backbone accepts.
        gradcam_layer: Dotted path, within the backbone, of the submodule whose output is the
            last convolutional feature map before global pooling (the Grad-CAM target).
        first_conv: Dotted path, within the backbone, of the stem convolution that sees the
            input (as timm's ``pretrained_cfg["first_conv"]``); None when not declared.
        weights: The pretrained weights the backbone was built with (torchvision's name, e.g.
            ``"ResNet18_Weights.IMAGENET1K_V1"``); None when randomly initialised.
        final_pool: Kernel (and stride) of a max-pool that the reference network applies after
            ``gradcam_layer`` and that the backbone leaves out so that Grad-CAM sees the finer
            map (VGG-16: 2, its block5 pool, which Keras' ``include_top=False`` base ends
            with). The heads that reproduce the reference study (``mlp``,
            ``study_attention``) apply it; 1 means none.
        input_size: Side of the square input the pretrained weights were trained at (timm's
            ``pretrained_cfg["input_size"]``, torchxrayvision's resolution); None when not
            declared. Informative: the classifier's ``image_size`` is chosen by its caller.
    """

    name: str
    num_features: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    min_input_size: int
    gradcam_layer: str
    first_conv: str | None = None
    weights: str | None = None
    final_pool: int = 1
    input_size: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("BackboneInfo.name must be a non-empty string")
        if self.num_features < 1:
            raise ValueError(f"BackboneInfo.num_features must be >= 1, got {self.num_features}")
        if not self.mean or len(self.mean) != len(self.std):
            raise ValueError(
                f"BackboneInfo.mean and .std need one value per input channel, got "
                f"mean={self.mean} and std={self.std}"
            )
        if not all(math.isfinite(s) and s > 0 for s in self.std):
            raise ValueError(f"BackboneInfo.std must be finite and positive, got {self.std}")
        if self.min_input_size < 1:
            raise ValueError(f"BackboneInfo.min_input_size must be >= 1, got {self.min_input_size}")
        if not self.gradcam_layer:
            raise ValueError("BackboneInfo.gradcam_layer must name a submodule")
        if isinstance(self.final_pool, bool) or not isinstance(self.final_pool, int):
            raise ValueError(f"BackboneInfo.final_pool must be an int, got {self.final_pool!r}")
        if self.final_pool < 1:
            raise ValueError(f"BackboneInfo.final_pool must be >= 1, got {self.final_pool}")
        if self.input_size is not None and self.input_size < 1:
            raise ValueError(f"BackboneInfo.input_size must be >= 1, got {self.input_size}")

    @property
    def in_channels(self) -> int:
        """Number of input channels, implied by the length of ``mean``."""
        return len(self.mean)


class Backbone(nn.Module):
    """A feature extractor: normalised images in, a spatial feature map out.

    The default implementation runs ``features`` on the input; subclasses may override
    [`forward_features`][chexviz.models.registry.Backbone.forward_features] for networks that are
    not
    a single module chain.

    Args:
        features: The module that maps ``[B, C, H, W]`` to ``[B, num_features, h, w]``.
        info: The backbone's metadata.

    Attributes:
        features: The feature-extracting module.
        info: The backbone's metadata (feature width, normalisation, Grad-CAM layer).
    """

    def __init__(self, features: nn.Module, info: BackboneInfo) -> None:
        super().__init__()
        self.features = features
        self.info = info

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the feature map.

        Args:
            x: Normalised images, ``[B, C, H, W]``.

        Returns:
            The feature map ``[B, num_features, h, w]``, i.e. the output of ``gradcam_layer``.
        """
        out: torch.Tensor = self.features(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as [`forward_features`][chexviz.models.registry.Backbone.forward_features]."""
        return self.forward_features(x)

    @property
    def gradcam_module(self) -> nn.Module:
        """The submodule named by ``info.gradcam_layer``."""
        return self.get_submodule(self.info.gradcam_layer)


class BackboneBuilder(Protocol):
    """A function that builds a backbone; what `register_backbone` decorates."""

    def __call__(self, *, pretrained: bool, in_channels: int) -> Backbone:
        """Build the backbone.

        Args:
            pretrained: Load pretrained weights (may download them).
            in_channels: Number of input channels.
        """
        ...


_B = TypeVar("_B", bound=BackboneBuilder)

# RLock: a plugin module may itself call list_backbones() while being imported.
_LOCK = threading.RLock()
_BUILDERS: dict[str, BackboneBuilder] = {}
_BROKEN_PLUGINS: dict[str, str] = {}
_discovered = False
_discovering = False


def register_backbone(name: str) -> Callable[[_B], _B]:
    """Register a backbone builder under ``name``.

    The decorated function is called as ``builder(pretrained=..., in_channels=...)`` and must
    return a [`Backbone`][chexviz.models.registry.Backbone] whose ``info.name`` is ``name``.

    Args:
        name: Registry name; must not be registered already.

    Returns:
        A decorator that registers the builder and returns it unchanged.

    Raises:
        ValueError: If ``name`` is empty or already registered.

    Example:
        >>> @register_backbone("my_net")  # doctest: +SKIP
        ... def my_net(*, pretrained: bool, in_channels: int) -> Backbone: ...
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"backbone name must be a non-empty string, got {name!r}")

    def decorator(builder: _B) -> _B:
        with _LOCK:
            if name in _BUILDERS:
                existing = _BUILDERS[name]
                raise ValueError(
                    f"backbone {name!r} is already registered (by "
                    f"{getattr(existing, '__module__', '?')}."
                    f"{getattr(existing, '__qualname__', repr(existing))})"
                )
            _BUILDERS[name] = builder
        return builder

    return decorator


def _load_plugin(entry_point: EntryPoint) -> None:
    """Import one entry point; a callable that did not register itself is registered."""
    loaded = entry_point.load()
    if entry_point.name not in _BUILDERS and callable(loaded):
        register_backbone(entry_point.name)(loaded)


def _discover() -> None:
    """Register the built-ins and every installed plugin, once per process.

    Discovery counts as done only once the built-ins imported: a failed import (a broken
    torchvision, say) raises here and is tried again by the next lookup. ``_discovering`` stops
    a plugin that lists the registry while it is imported from starting discovery over.
    """
    global _discovered, _discovering
    with _LOCK:
        if _discovered or _discovering:
            return
        _discovering = True
        try:
            _import_all()
            _discovered = True
        finally:
            _discovering = False


def _import_all() -> None:
    importlib.import_module("chexviz.models.backbones")
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            _load_plugin(entry_point)
        except Exception as exc:  # a broken plugin must not break unrelated lookups
            reason = f"{type(exc).__name__}: {exc}"
            _BROKEN_PLUGINS[entry_point.name] = f"{entry_point.value} ({reason})"
            warnings.warn(
                f"chexviz backbone plugin {entry_point.name!r} ({entry_point.value}) "
                f"failed to load and is skipped: {reason}",
                RuntimeWarning,
                stacklevel=4,
            )


def _as_patterns(patterns: str | Iterable[str] | None) -> list[str]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        return [patterns]
    return list(patterns)


def list_backbones(
    include: str | Iterable[str] = "*", exclude: str | Iterable[str] | None = None
) -> list[str]:
    """List registered backbone names.

    The prefixed families are not listed (timm alone has over a thousand models): any timm
    model is available as ``"timm/<name>"`` (``timm.list_models()`` lists them) and
    torchxrayvision's networks as ``"xrv/<weights name>"``.

    Args:
        include: ``fnmatch`` pattern(s); a name is listed when it matches any of them.
        exclude: ``fnmatch`` pattern(s); a name matching any of them is left out.

    Returns:
        The matching names, sorted.

    Example:
        >>> list_backbones("res*")
        ['resnet18', 'resnet50']
    """
    _discover()
    includes, excludes = _as_patterns(include), _as_patterns(exclude)
    return sorted(
        name
        for name in _BUILDERS
        if any(fnmatch.fnmatchcase(name, p) for p in includes)
        and not any(fnmatch.fnmatchcase(name, p) for p in excludes)
    )


def create_backbone(name: str, *, pretrained: bool = False, in_channels: int = 1) -> Backbone:
    """Build a registered backbone.

    Args:
        name: Registry name, one of [`list_backbones`][chexviz.models.registry.list_backbones],
            ``"timm/<timm model name>"`` or ``"xrv/<torchxrayvision weights name>"``.
        pretrained: Load pretrained weights (torchvision's or timm's ImageNet weights,
            downloaded on first use; torchxrayvision's from its cache, read without unpickling
            code); the first convolution is adapted when ``in_channels`` is 1.
        in_channels: 1 for greyscale or 3 for RGB input.

    Returns:
        The backbone, in training mode.

    Raises:
        KeyError: If ``name`` is not registered (the message lists the registered names, or
            for a ``timm/`` name timm's close matches) or names a plugin that failed to load.
        ImportError: If a ``timm/`` or ``xrv/`` name's package is not installed (the message
            says what to install).
        ValueError: If ``in_channels`` is not supported, or the builder returned something
            inconsistent with its registration.
    """
    _discover()
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    builder = _BUILDERS.get(name)
    if builder is None:
        builder = _prefixed_builder(name)
    if builder is None:
        if name in _BROKEN_PLUGINS:
            raise KeyError(
                f"backbone {name!r} comes from a plugin that failed to load: "
                f"{_BROKEN_PLUGINS[name]}"
            )
        raise KeyError(
            f"unknown backbone {name!r}; registered backbones: {', '.join(sorted(_BUILDERS))}"
            f"{_PREFIX_HINT}"
        )
    backbone = builder(pretrained=pretrained, in_channels=in_channels)
    _check_built(name, in_channels, backbone)
    logger.debug("built backbone %s (pretrained=%s, in_channels=%d)", name, pretrained, in_channels)
    return backbone


def _prefixed_builder(name: str) -> BackboneBuilder | None:
    """The builder of a prefixed family (``timm/``, ``xrv/``), imported only when used."""
    for prefix, (module, function) in _PREFIXES.items():
        if name.startswith(prefix):
            build: Callable[..., Backbone] = getattr(importlib.import_module(module), function)
            return functools.partial(build, name)
    return None


def _check_built(name: str, in_channels: int, backbone: object) -> None:
    """Reject a builder result that would fail later in a harder-to-read way."""
    if not isinstance(backbone, Backbone):
        raise ValueError(
            f"builder for backbone {name!r} returned {type(backbone).__name__}, "
            "expected a chexviz.models.registry.Backbone"
        )
    info = backbone.info
    if info.name != name:
        raise ValueError(
            f"builder for backbone {name!r} returned a backbone whose info.name is {info.name!r}"
        )
    if info.in_channels != in_channels:
        raise ValueError(
            f"backbone {name!r} was asked for in_channels={in_channels} but its info "
            f"declares {info.in_channels} normalisation values"
        )
    for field, path in (("gradcam_layer", info.gradcam_layer), ("first_conv", info.first_conv)):
        if path is None:
            continue
        try:
            module = backbone.get_submodule(path)
        except AttributeError as exc:
            raise ValueError(
                f"backbone {name!r} declares {field} {path!r}, which is not one of its submodules"
            ) from exc
        if field == "first_conv" and not isinstance(module, nn.Conv2d):
            raise ValueError(
                f"backbone {name!r} declares first_conv {path!r}, which is a "
                f"{type(module).__name__}, not an nn.Conv2d"
            )
