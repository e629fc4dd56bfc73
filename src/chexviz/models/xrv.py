"""torchxrayvision's pretrained chest X-ray models as chexviz classifiers.

[`from_torchxrayvision`][chexviz.models.xrv.from_torchxrayvision] turns a torchxrayvision (xrv)
weights name, such as ``"densenet121-res224-chex"``, or an xrv ``DenseNet`` / ``ResNet`` into a
[`MultiLabelClassifier`][chexviz.models.classifier.MultiLabelClassifier] that carries what xrv
does around its network:

* **Scaling.** xrv feeds ``[-1024, 1024]`` images (``xrv.datasets.normalize(img, 255)`` maps
  8-bit ``v`` to ``(2 v / 255 - 1) * 1024``). chexviz models take ``[0, 1]`` images and
  normalise with ``mean`` 0.5 and ``std`` 1/2048, the same affine map.
* **Size and channels.** One channel; ``image_size`` is the weights' resolution (224 px for the
  DenseNets, 512 px for the ResNets). xrv centre-crops the long side before resizing, so the
  classifier's ``input_crop`` is ``"center"``: Grad-CAM on image files and the CLI's data sets
  decode images that way ([`load_image`][chexviz.data.images.load_image] with
  ``crop="center"``); [`center_crop_resize`][chexviz.models.xrv.center_crop_resize] does the
  same for a tensor.
* **Labels.** xrv's outputs are renamed to the CheXpert observations they are
  (``"Effusion"`` is ``"Pleural Effusion"``); outputs with no CheXpert counterpart
  (``"Infiltration"``, ``"Nodule"``...) keep xrv's name, and the empty ``""`` outputs of
  weights trained on fewer labels are dropped.
* **Operating points.** xrv's ``op_threshs`` become the classifier's ``thresholds``: xrv's
  ``op_norm`` output exceeds 0.5 exactly when the sigmoid probability exceeds the operating
  point. The classifier returns logits; labels without an operating point keep 0.5.

Weight files are never unpickled with code execution. xrv publishes its DenseNets as whole
pickled modules and reads them with ``torch.load(weights_only=False)``, which runs whatever the
pickle says. chexviz reads them with ``torch.load(weights_only=True)`` and an allow-list of
exactly the xrv, torchvision and ``torch.nn`` classes those modules are made of, so a file
that names anything else (a function to call, say) is refused before anything runs.

The ``xrv/<weights name>`` backbone (``create_backbone("xrv/densenet121-res224-chex")``) is the
network without its classifier; saved xrv classifiers load back through it.
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
import pickle
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torchvision
from torch import nn
from torch.nn import functional

from chexviz.models.classifier import MultiLabelClassifier
from chexviz.models.registry import Backbone, BackboneInfo

__all__ = [
    "XRV_BACKBONE_PREFIX",
    "XRV_SPEC_PREFIX",
    "XRV_TO_CHEXPERT",
    "build_xrv_backbone",
    "center_crop_resize",
    "from_torchxrayvision",
    "load_xrv_state_dict",
]

logger = logging.getLogger(__name__)

XRV_SPEC_PREFIX = "xrv:"
"""A ``--model`` spec starting with this names torchxrayvision weights (``xrv:<name>``)."""
XRV_BACKBONE_PREFIX = "xrv/"
"""A backbone name starting with this names a torchxrayvision network (``xrv/<name>``)."""

XRV_TO_CHEXPERT: dict[str, str] = {"Effusion": "Pleural Effusion"}
"""xrv output names that differ from the CheXpert observation they are. The other shared ones
(Atelectasis, Cardiomegaly, Consolidation, Edema, Enlarged Cardiomediastinum, Fracture, Lung
Lesion, Lung Opacity, Pneumonia, Pneumothorax) are spelt alike."""

_INSTALL_HINT = 'pip install "chexviz[xrv]"'
# xrv's input scaling as a [0, 1] normalisation: (x - 0.5) * 2048 == (2 x - 1) * 1024.
_XRV_MEAN = 0.5
_XRV_STD = 1.0 / 2048.0
_DENSENET_STEM = "conv0"
_RESNET_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _import_xrv(what: str) -> ModuleType:
    try:
        return importlib.import_module("torchxrayvision")
    except ImportError as exc:
        raise ImportError(
            f"{what} needs torchxrayvision, which is not installed: {_INSTALL_HINT}"
        ) from exc


def _check_weights_name(xrv: ModuleType, name: str) -> None:
    names = [k for k in xrv.models.model_urls if k.startswith(("densenet", "resnet"))]
    if name not in names:
        raise KeyError(f"unknown torchxrayvision weights {name!r}; known: {', '.join(names)}")


def _resolution(xrv: ModuleType, name: str) -> int:
    default = 512 if name.startswith("resnet") else 224
    return int(xrv.models.model_urls[name].get("input_resolution", default))


def _allowed_globals(xrv: ModuleType) -> list[Any]:
    """The classes a published xrv weight file may name, and nothing callable besides.

    DenseNets are pickled whole (xrv's own classes or torchvision's, which share the state
    dict layout); ResNets as a state dict, which ``weights_only`` reads with no extra class.
    """
    from torchvision.models import densenet, resnet

    return [
        xrv.models.DenseNet,
        xrv.models._DenseBlock,
        xrv.models._DenseLayer,
        xrv.models._Transition,
        densenet.DenseNet,
        densenet._DenseBlock,
        densenet._DenseLayer,
        densenet._Transition,
        resnet.ResNet,
        resnet.Bottleneck,
        resnet.BasicBlock,
        nn.Sequential,
        nn.ModuleDict,
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ReLU,
        nn.MaxPool2d,
        nn.AvgPool2d,
        nn.AdaptiveAvgPool2d,
        nn.Linear,
        nn.Dropout,
        nn.Identity,
        set,
    ]


def load_xrv_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read an xrv weight file (a pickled module or a state dict) without running its code.

    Args:
        path: The file, e.g. in ``~/.torchxrayvision/models_data/``.

    Returns:
        Its state dict (parameters and buffers), on the CPU.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file names a class or function outside the allow-list (it is not
            run), or holds neither a module nor a state dict.
    """
    xrv = _import_xrv("reading a torchxrayvision weight file")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"torchxrayvision weight file not found: {path}")
    try:
        with torch.serialization.safe_globals(_allowed_globals(xrv)):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path}: refused: the pickle names something outside the allow-list of "
            "torchxrayvision, torchvision and torch.nn classes, so chexviz does not load it "
            f"(nothing in it was run). torch says: {str(exc).splitlines()[0]}"
        ) from exc
    if isinstance(loaded, nn.Module):
        state = loaded.state_dict()
    elif isinstance(loaded, dict) and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        state = dict(loaded)
    else:
        raise ValueError(
            f"{path}: holds a {type(loaded).__name__}, neither a module nor a state dict"
        )
    return {k: v for k, v in state.items() if k != "op_threshs"}


def _weights_path(xrv: ModuleType, name: str, cache_dir: str | os.PathLike[str] | None) -> Path:
    url = str(xrv.models.model_urls[name]["weights_url"])
    folder = xrv.utils.get_cache_dir() if cache_dir is None else os.fspath(cache_dir)
    path = Path(os.path.expanduser(folder)) / os.path.basename(url)
    if not path.is_file():
        raise FileNotFoundError(
            f"torchxrayvision weights {name!r} are not in the cache: {path} does not exist. "
            f"Download {url} to that path (chexviz never downloads and unpickles them itself)."
        )
    return path


def _architecture(xrv: ModuleType, name: str, num_outputs: int) -> nn.Module:
    """The untrained xrv network that ``name``'s weights fit (built offline)."""
    if name.startswith("densenet"):
        net: nn.Module = xrv.models.DenseNet(weights=None, num_classes=num_outputs)
        return net
    depth = "resnet101" if name.startswith("resnet101") else "resnet50"
    # What xrv.models.ResNet builds (it cannot be built without reading its weight file).
    resnet: nn.Module = getattr(torchvision.models, depth)(num_classes=num_outputs, weights=None)
    resnet.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return resnet


def _load_network(
    xrv: ModuleType, name: str, cache_dir: str | os.PathLike[str] | None
) -> nn.Module:
    """Xrv's network for weights ``name`` (its ResNet's inner torchvision model), loaded safely."""
    labels = xrv.models.model_urls[name]["labels"]
    net = _architecture(xrv, name, len(labels))
    path = _weights_path(xrv, name, cache_dir)
    state = load_xrv_state_dict(path)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path}: does not fit torchxrayvision's {name!r} network: {exc}") from exc
    return net.eval()


def _backbone(name: str, net: nn.Module, *, pretrained: bool) -> Backbone:
    """The network without its classifier; parameter names follow chexviz's built-ins."""
    if name.startswith("densenet"):
        children = list(net.get_submodule("features").named_children())
        # xrv applies the final ReLU functionally; a module of its own is the Grad-CAM layer.
        features = nn.Sequential(OrderedDict([*children, ("relu5", nn.ReLU(inplace=False))]))
        num_features, layer, stem = 1024, "features.relu5", f"features.{_DENSENET_STEM}"
    else:
        features = nn.Sequential(OrderedDict((n, net.get_submodule(n)) for n in _RESNET_STAGES))
        num_features, layer, stem = 2048, "features.layer4", "features.conv1"
    resolution = 512 if name.startswith("resnet") else 224
    xrv = _import_xrv(f"backbone {XRV_BACKBONE_PREFIX}{name!r}")
    if name in xrv.models.model_urls:
        resolution = _resolution(xrv, name)
    info = BackboneInfo(
        name=XRV_BACKBONE_PREFIX + name,
        num_features=num_features,
        mean=(_XRV_MEAN,),
        std=(_XRV_STD,),
        min_input_size=32,
        gradcam_layer=layer,
        first_conv=stem,
        weights=f"torchxrayvision:{name}" if pretrained else None,
        input_size=resolution,
    )
    return Backbone(features, info)


def build_xrv_backbone(name: str, *, pretrained: bool, in_channels: int) -> Backbone:
    """Build the backbone ``"xrv/<weights name>"``: xrv's network without its classifier.

    Args:
        name: ``"xrv/"`` and an xrv weights name, e.g. ``"xrv/densenet121-res224-all"``.
        pretrained: Load the weights from xrv's cache (read through the allow-list, never
            downloaded); otherwise the architecture with random weights.
        in_channels: Must be 1 (xrv's networks are greyscale).

    Returns:
        The backbone.

    Raises:
        ImportError: If torchxrayvision is not installed.
        KeyError: If xrv has no such weights.
        ValueError: If ``in_channels`` is not 1.
        FileNotFoundError: If ``pretrained`` and the weights are not in xrv's cache.
    """
    xrv = _import_xrv(f"backbone {name!r}")
    weights = name[len(XRV_BACKBONE_PREFIX) :]
    _check_weights_name(xrv, weights)
    if in_channels != 1:
        raise ValueError(f"backbone {name!r} takes 1 input channel, got in_channels={in_channels}")
    if pretrained:
        net = _load_network(xrv, weights, None)
    else:
        net = _architecture(xrv, weights, len(xrv.models.model_urls[weights]["labels"]))
    return _backbone(weights, net, pretrained=pretrained)


def _from_module(xrv: ModuleType, module: nn.Module) -> tuple[str, nn.Module, list[str], Any]:
    """Weights name, inner network, output names and operating points of an xrv model."""
    if isinstance(module, xrv.models.DenseNet):
        net = copy.deepcopy(module)
        name = module.weights or "densenet121-res224-all"
    elif isinstance(module, xrv.models.ResNet):
        net = copy.deepcopy(module.model)
        name = module.weights
    else:
        raise TypeError(
            f"from_torchxrayvision takes a weights name or an xrv.models.DenseNet / ResNet, "
            f"got {type(module).__name__}"
        )
    pathologies = list(getattr(module, "pathologies", None) or module.targets)
    thresholds = getattr(module, "op_threshs", None)
    return str(name), net, pathologies, thresholds


def _classifier_layer(net: nn.Module) -> nn.Linear:
    layer = getattr(net, "classifier", None) or getattr(net, "fc", None)
    if not isinstance(layer, nn.Linear):
        raise ValueError(
            f"the torchxrayvision network has no Linear classifier (found "
            f"{type(layer).__name__}); its output would not be (N, classes) logits"
        )
    return layer


def from_torchxrayvision(
    name_or_module: str | nn.Module, *, cache_dir: str | os.PathLike[str] | None = None
) -> MultiLabelClassifier:
    """A torchxrayvision model as a chexviz classifier (see the module docstring).

    Args:
        name_or_module: An xrv weights name (``"densenet121-res224-chex"``, optionally
            written ``"xrv:densenet121-res224-chex"``), read from xrv's cache, or an
            ``xrv.models.DenseNet`` / ``xrv.models.ResNet`` already built (copied, not shared).
        cache_dir: Where the weight files are; None uses xrv's (``~/.torchxrayvision/
            models_data/``).

    Returns:
        The classifier in eval mode: 1 channel, ``image_size`` the weights' resolution, labels
        renamed to CheXpert's, ``""`` outputs dropped, thresholds xrv's operating points,
        ``input_crop`` ``"center"``.

    Raises:
        ImportError: If torchxrayvision is not installed (the message says what to install).
        KeyError: If xrv has no such weights.
        FileNotFoundError: If the weights are not in the cache (the message gives the URL).
        ValueError: If the weight file is refused, or the network's classifier does not give
            one output per xrv label.
        TypeError: If ``name_or_module`` is neither a name nor an xrv model.
    """
    xrv = _import_xrv("from_torchxrayvision")
    if isinstance(name_or_module, str):
        name = name_or_module.removeprefix(XRV_SPEC_PREFIX)
        _check_weights_name(xrv, name)
        net = _load_network(xrv, name, cache_dir)
        pathologies = list(xrv.models.model_urls[name]["labels"])
        op = xrv.models.model_urls[name].get("op_threshs")
        resolution = _resolution(xrv, name)
    elif isinstance(name_or_module, nn.Module):
        name, net, pathologies, op = _from_module(xrv, name_or_module)
        resolution = int(getattr(name_or_module, "input_resolution", 0)) or (
            512 if isinstance(name_or_module, xrv.models.ResNet) else 224
        )
    else:
        raise TypeError(
            f"from_torchxrayvision takes a weights name or an xrv model, got "
            f"{type(name_or_module).__name__}"
        )
    fc = _classifier_layer(net)
    if fc.out_features != len(pathologies):
        raise ValueError(
            f"torchxrayvision model {name!r} gives {fc.out_features} outputs for "
            f"{len(pathologies)} pathologies; expected (N, {len(pathologies)}) logits"
        )
    keep = [i for i, p in enumerate(pathologies) if p]
    labels = [XRV_TO_CHEXPERT.get(pathologies[i], pathologies[i]) for i in keep]
    model = MultiLabelClassifier(
        _backbone(name, net, pretrained=isinstance(name_or_module, str)),
        labels=labels,
        in_channels=1,
        head="linear",
        dropout=0.0,
        image_size=resolution,
    )
    head_fc = model.head.get_submodule("fc")
    assert isinstance(head_fc, nn.Linear)  # the linear head is pooling, dropout and fc
    with torch.no_grad():
        head_fc.weight.copy_(fc.weight[keep])
        head_fc.bias.copy_(fc.bias[keep])
    model.set_thresholds(_thresholds(op, keep))
    model.input_crop = "center"
    logger.info("torchxrayvision %s: %d outputs kept of %d", name, len(keep), len(pathologies))
    return model.eval()


def _thresholds(op: Any, keep: Sequence[int]) -> list[float]:
    """Xrv's operating points for the kept outputs; 0.5 where it has none (NaN or absent)."""
    if op is None:
        return [0.5] * len(keep)
    values = torch.as_tensor(op, dtype=torch.float64).flatten().tolist()
    return [0.5 if values[i] != values[i] else float(values[i]) for i in keep]


def center_crop_resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Xrv's ``XRayCenterCrop`` then a resize to ``size``: the input xrv's models were given.

    Args:
        image: ``[..., H, W]`` image(s) in ``[0, 1]``.
        size: Output side (the model's ``image_size``).

    Returns:
        ``[..., size, size]``: the centred square of side ``min(H, W)`` (xrv's offsets),
        resized bilinearly with antialiasing.
    """
    height, width = int(image.shape[-2]), int(image.shape[-1])
    side = min(height, width)
    top, left = height // 2 - side // 2, width // 2 - side // 2
    square = image[..., top : top + side, left : left + side]
    if side == size:
        return square
    lead = square.shape[:-2]
    flat = square.reshape(-1, 1, side, side).float()
    resized = functional.interpolate(
        flat, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return resized.reshape(*lead, size, size)
