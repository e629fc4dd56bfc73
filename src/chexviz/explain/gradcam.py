"""Grad-CAM and its gradient-based relatives for multi-label classifiers and plain CNNs.

``GradCAM(model).explain(image)`` explains every predicted positive of an image; each explained
class gets a heatmap that says where, at the target layer, the evidence for that class's logit
lies. All the requested classes of a whole batch share **one** forward pass and **one** batched
backward pass that stops at the target layer.

Works on a [`MultiLabelClassifier`][chexviz.models.classifier.MultiLabelClassifier] (labels,
thresholds, input size and target layer come from the model) and on any PyTorch CNN that maps
``[B, C, H, W]`` to logits ``[B, K]`` (torchvision, timm, torchxrayvision models...): without a
``target_layer`` the last convolutional feature map before global pooling is found by tracing a
forward pass (see [`GradCAM`][chexviz.explain.gradcam.GradCAM]).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, TypeAlias, get_args

import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image
from torch import nn

from chexviz._internal.checks import Crop, check_crop
from chexviz._internal.modules import device_dtype, eval_mode
from chexviz.data.images import load_image, read_image_size, to_tensor
from chexviz.explain._cam import cam_maps, fuse, minmax
from chexviz.explain._classes import (
    ClassSpec,
    check_threshold,
    model_labels,
    model_thresholds,
    output_labels,
    resolve_classes,
    unwrap,
)
from chexviz.explain._tokens import LayerView, Reshape, find_families, layer_view, qualified
from chexviz.explain.explanation import Explanation

__all__ = ["METHODS", "CamMethod", "ClassSpec", "GradCAM", "ImageInput", "LayerSpec"]

logger = logging.getLogger(__name__)

CamMethod: TypeAlias = Literal[
    "gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"
]
"""Names of the supported CAM methods."""

METHODS: tuple[CamMethod, ...] = get_args(CamMethod)
"""All supported CAM methods, in the order of the guide."""

LayerSpec: TypeAlias = nn.Module | str
"""A target layer: a submodule of the model, or its dotted name (``"backbone.features.relu5"``)."""


ImageInput: TypeAlias = (
    torch.Tensor
    | str
    | os.PathLike[str]
    | Image.Image
    | Sequence[str | os.PathLike[str] | Image.Image]
)
"""What ``explain`` accepts: a tensor ``[C, H, W]`` / ``[B, C, H, W]``, or image file(s) / PIL
image(s)."""

_TRACE_SIZE = 224
_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)

_Hook = Callable[[nn.Module, tuple[Any, ...], Any], Any]


class GradCAM:
    """Explains a classifier's outputs with class activation maps.

    ``method`` picks how the gradient ``G = d logit / d A`` of a class's logit with respect to
    the target layer's output ``A`` (``[C, h, w]``, one image) becomes a map ``[h, w]``; every
    method ends with a ReLU, as in Grad-CAM:

    - ``"gradcam"`` (Selvaraju et al., 2017): ``ReLU(sum_c mean_hw(G_c) * A_c)``.
    - ``"gradcam++"`` (Chattopadhay et al., 2018): channel weights
      ``sum_hw(alpha * ReLU(G))`` with the exponential-free closed form
      ``alpha = G^2 / (2 G^2 + sum_hw(A) G^3)`` used by pytorch-grad-cam.
    - ``"xgradcam"`` (Fu et al., 2020): channel weights ``sum_hw(G * A / sum_hw(A))``.
    - ``"hirescam"`` (Draelos & Carin, 2020): ``ReLU(sum_c G_c * A_c)``, element-wise.
    - ``"layercam"`` (Jiang et al., 2021): ``ReLU(sum_c ReLU(G_c) * A_c)``, element-wise.
    - ``"eigencam"`` (Muhammad & Yeasin, 2020): the first principal component of the
      activations (positions x channels, centred per channel), ReLU'd. **Class-agnostic**: it
      uses no gradient, so every class of an image gets the same map; the sign of the
      component is chosen so the map correlates positively with the activations' channel
      mean.

    Departures from the papers, all deliberate:

    - Gradients are those of the **logit** of each label (the model is multi-label: there is no
      softmax). Grad-CAM++ derives ``alpha`` from ``exp(logit)``; the weights here use the
      logit's gradient, so a raw map differs from the paper's by the positive factor
      ``exp(logit)`` and the normalised heatmap is identical.
    - Grad-CAM++ and XGrad-CAM assume non-negative activations (the output of a ReLU). Where
      a denominator (``2 G^2 + sum(A) G^3``, ``sum(A)``) is exactly zero the weight is 0
      instead of adding an epsilon as pytorch-grad-cam does (``1e-6`` / ``1e-7``); the two agree
      wherever the denominators are large against those epsilons. Pick a post-ReLU layer for
      these two methods.
    - HiResCAM is followed by a ReLU like the others (the paper also shows signed maps).
    - With several target layers the maps are fused as pytorch-grad-cam does for LayerCAM: each
      layer's map is brought to the finest of the layers' resolutions (bilinear), min-max
      normalised, and the normalised maps are averaged. The LayerCAM paper instead rescales the
      shallow layers' maps before combining them.

    **Target layer.** ``target_layer=None`` takes the model's own ``target_layer`` attribute
    when it is a module (chexviz classifiers name the last feature map of their backbone).
    Otherwise, when the model is or contains a transformer-style network chexviz recognises by
    its structure (torchvision ``VisionTransformer``, ``SwinTransformer``, ``MaxVit``,
    ``ConvNeXt``; timm vision transformers, Swin, ConvNeXt and MaxViT), that network's last
    block is the target: for a ViT that pools its class token, the last block's input norm
    (``blocks.11.norm1``, ``encoder.layers.encoder_layer_11.ln_1``), since the patch tokens
    leaving the last block never reach the head; for Swin its final norm; for MaxViT and
    ConvNeXt the last stage. Otherwise the layer is found by tracing one forward pass of a
    dummy input (``image_size`` of the model, else 224 px, with the input channels of its first
    ``Conv2d``): the target is the **last module to finish whose output is a 4-D tensor**
    ``[B, C, h, w]`` **with** ``h, w > 1``, skipping adaptive (global) pooling layers and
    modules called more than once.
    For a torchvision DenseNet that is ``features``, for a ResNet ``layer4``, for a VGG
    ``features``. A finer map is often more useful on small inputs (DenseNet-121's last map is
    4x4 at 128 px): pass an earlier layer, or several layers to fuse them. If the traced map is
    followed by token sequences ``[B, N, C]`` it is a patch embedding, and ``GradCAM`` raises
    an error listing the token layers instead of explaining the stem.

    **Token and channels-last layers.** A layer inside a recognised network is viewed as a map
    ``[B, C, h, w]`` from what the network says: a ViT's tokens lose their prefix tokens
    (timm's ``num_prefix_tokens``, class and register tokens; torchvision's class token) and
    the rest become the patch grid of the input (patch size of the patch embedding; timm's
    ``dynamic_feat_size`` for dynamic-size models, so non-square inputs work); Swin's
    channels-last outputs (and a ``Linear`` or ``LayerNorm`` inside a ConvNeXt block) are
    permuted. The same view is applied to the gradients. ``Explanation.layer`` names the layer
    and the view, e.g. ``"blocks.11.norm1 (tokens -> 14x14 grid, 1 prefix token dropped)"``.
    For other models, ``reshape=`` maps the target layer's output to ``[B, C, h, w]``; it must
    only select and rearrange elements (slicing, ``reshape``, ``permute``), as it is applied
    to the gradients too.

    **State guarantees.** Hooks exist only while ``explain`` runs: they are registered inside a
    ``try`` and removed in its ``finally``, also when an exception interrupts the run. The
    model runs in eval mode during ``explain`` (batch-norm batch statistics or dropout would
    make explanations random and would couple the images of a batch); every submodule's
    ``training`` flag is restored afterwards. Gradients are taken with
    ``torch.autograd.grad`` with respect to the target activations only, so parameters'
    ``.grad`` and ``requires_grad`` are untouched, no backward pass runs through the layers
    before the target layer (they run without building an autograd graph at all), and no graph
    outlives the call. In-place operations after the target layer (DenseNet's ReLU) are safe:
    the layer's output is captured and a copy is passed on.

    **Cost.** One forward pass of the batch, then one backward pass from the logits to the
    target layer batched over the explained classes (``torch.autograd.grad`` with
    ``is_grads_batched=True``, i.e. ``vmap``). Images of a batch share the backward: the
    ``j``-th explained class of every image is handled by the same vmapped row, which is exact
    because images do not interact in eval mode. Should a model's backward not support
    ``vmap``, the rows are computed one after another over the same retained graph (still one
    forward pass); this is logged at debug level.

    Not thread-safe for a given model: two explainers running at the same time on one model
    would see each other's hooks.

    **Wrapped models.** A model wrapped by ``torch.compile``, ``DistributedDataParallel`` or
    ``DataParallel`` is unwrapped (``._orig_mod``, ``.module``) and the module inside is
    explained, eagerly and on this process alone: a compiled graph may have been captured
    without the explainer's hooks, a DDP forward pass broadcasts buffers to the other processes
    (which are not explaining, so it would wait for ever), and neither wrapper carries the
    classifier's labels, thresholds and target layer.

    Args:
        model: A chexviz classifier, or any ``nn.Module`` mapping ``[B, C, H, W]`` images to
            logits ``[B, K]``, possibly wrapped (see above).
        target_layer: The layer to explain at: a submodule or its dotted name; a sequence of
            them to fuse several layers; ``None`` to choose automatically (see above).
        method: One of [`METHODS`][chexviz.explain.gradcam.METHODS].
        reshape: Maps every target layer's output to ``[B, C, h, w]``, replacing the automatic
            views (see above); ``None`` for the automatic ones.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``target_layer`` has the wrong type or
            ``reshape`` is not callable.
        ValueError: Unknown ``method``; a target layer that is not in the model, the model
            itself, or listed twice; or no layer could be found automatically.

    Example:
        >>> cam = GradCAM(model)  # doctest: +SKIP
        >>> explanation = cam.explain(image)  # predicted positives  # doctest: +SKIP
        >>> cam.explain(image, classes=["Edema", "Cardiomegaly"])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec | Sequence[LayerSpec] | None = None,
        *,
        method: CamMethod = "gradcam",
        reshape: Reshape | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
        model = unwrap(model)
        self._model = model
        self._method: CamMethod = method
        self._labels = model_labels(model)
        self._image_size = _optional_int(model, "image_size")
        self._in_channels = _optional_int(model, "in_channels")
        if reshape is not None and not callable(reshape):
            raise TypeError(f"reshape must be callable, got {type(reshape).__name__}")
        self._layers = self._resolve_layers(target_layer)
        self._views = tuple(layer_view(model, name, layer, reshape) for name, layer in self._layers)

    @property
    def model(self) -> nn.Module:
        """The explained model (the module inside a compiled or data-parallel wrapper)."""
        return self._model

    @property
    def method(self) -> CamMethod:
        """The CAM method."""
        return self._method

    @property
    def target_layers(self) -> tuple[nn.Module, ...]:
        """The target layer(s), in the order given."""
        return tuple(module for _, module in self._layers)

    @property
    def target_layer_names(self) -> tuple[str, ...]:
        """Dotted names of the target layer(s) within the model."""
        return tuple(name for name, _ in self._layers)

    @property
    def target_layer(self) -> nn.Module:
        """The target layer of a single-layer explainer.

        Raises:
            AttributeError: The explainer fuses several layers (use ``target_layers``).
        """
        if len(self._layers) != 1:
            raise AttributeError(
                f"this GradCAM fuses {len(self._layers)} layers; use .target_layers"
            )
        return self._layers[0][1]

    @property
    def target_layer_name(self) -> str:
        """Dotted name of the target layer; several fused layers are joined with ``"+"``."""
        return "+".join(self.target_layer_names)

    def __repr__(self) -> str:
        return (
            f"GradCAM(model={type(self._model).__name__}, "
            f"target_layer={self.target_layer_name!r}, method={self._method!r})"
        )

    def explain(
        self,
        img: ImageInput,
        classes: ClassSpec | Sequence[ClassSpec] | Sequence[Sequence[ClassSpec]] | None = None,
        *,
        threshold: float | None = None,
    ) -> Explanation:
        """Computes class activation maps for one image or a batch.

        Args:
            img: A tensor ``[C, H, W]`` or ``[B, C, H, W]`` (for chexviz classifiers: float in
                ``[0, 1]`` at the model's ``image_size``; the model normalises internally), or
                an image file path / PIL image, or a sequence of them. Files and PIL images are
                decoded and resized with [`load_image`][chexviz.data.images.load_image] and
                [`to_tensor`][chexviz.data.images.to_tensor] as the model expects (this needs a
                model with ``image_size`` and ``in_channels``; a model whose ``input_crop`` is
                ``"center"``, such as a torchxrayvision one, gets each image's centred square).
            classes: What to explain. ``None``: the predicted positives of each image (its
                probability ``>=`` the label's threshold). A label name or output index, or a
                sequence of them: those classes for every image. A sequence of ``B`` sequences:
                per-image classes. For models without ``labels`` the names are ``"0"`` ..
                ``"K-1"``.
            threshold: Overrides every label's threshold when choosing positives; defaults to
                the model's ``thresholds`` (0.5 for models without them).

        Returns:
            The [`Explanation`][chexviz.explain.explanation.Explanation] (CPU tensors). An image
            with nothing to explain (no positives) has empty ``classes`` and maps. For files
            and PIL images it records each picture's size before resizing (``source_sizes``;
            the centred square's for a ``"center"`` model), which ``overlay`` draws at.

        Raises:
            TypeError: ``img`` or ``classes`` has an unsupported type.
            ValueError: The image does not have the shape, size, channels or value range the
                model expects (the message says what it expects); an unknown class name (the
                message lists the labels), an out-of-range index or a repeated class; a bad
                ``threshold``; an input size the patch size of a token model does not divide; a
                target layer that did not run exactly once, whose output is not a feature map
                after its view, or that does not influence the output; non-finite maps.
            FileNotFoundError: An image file does not exist.
        """
        threshold = check_threshold(threshold)
        # Under a caller's inference mode no tensor could join an autograd graph.
        with torch.inference_mode(False):
            return self._explain(img, classes, threshold)

    def _explain(
        self,
        img: ImageInput,
        classes: ClassSpec | Sequence[ClassSpec] | Sequence[Sequence[ClassSpec]] | None,
        threshold: float | None,
    ) -> Explanation:
        images, source_sizes = self._prepare(img)
        model = self._model
        size = (int(images.shape[-2]), int(images.shape[-1]))
        for view in self._views:
            view.check_input(size)
        device, dtype = device_dtype(model)
        batch = int(images.shape[0])
        captured: list[list[torch.Tensor]] = [[] for _ in self._layers]
        hooks = [
            (layer, _capture_hook(store))
            for (_, layer), store in zip(self._layers, captured, strict=True)
        ]
        with _hooked_in_eval(model, hooks):
            # The hook switches gradients on at the first target layer, so everything before it
            # runs without building a graph; leaving the context restores the caller's mode.
            with torch.no_grad():
                logits = self._forward(images.to(device=device, dtype=dtype))
            labels = output_labels(self._labels, int(logits.shape[1]))
            probabilities = torch.sigmoid(logits.detach().float()).cpu()
            thresholds = model_thresholds(self._model, len(labels), threshold)
            wanted = resolve_classes(classes, labels, batch, probabilities, thresholds)
            activations = self._activations(captured) if any(wanted) else []
            raw = self._raw_maps(logits, activations, wanted, size) if any(wanted) else None
        return self._explanation(
            images, source_sizes, labels, probabilities, thresholds, wanted, raw
        )

    def _resolve_layers(
        self, target_layer: LayerSpec | Sequence[LayerSpec] | None
    ) -> tuple[tuple[str, nn.Module], ...]:
        model = self._model
        if target_layer is None:
            own = getattr(model, "target_layer", None)
            if isinstance(own, nn.Module):
                return (_named_layer(model, own),)
            families = find_families(model)
            if families:
                prefix, family = families[0]
                name, _ = qualified(prefix, family)
                logger.debug("Grad-CAM target layer of the %s: %s", family.name, name)
                return (_named_layer(model, name),)
            return (self._trace_target_layer(),)
        specs: Sequence[LayerSpec]
        if isinstance(target_layer, nn.Module | str):
            specs = (target_layer,)
        elif isinstance(target_layer, Sequence):
            specs = target_layer
            if not specs:
                raise ValueError("target_layer is an empty sequence; give at least one layer")
        else:
            raise TypeError(
                f"target_layer must be a module, a dotted name or a sequence of them, got "
                f"{type(target_layer).__name__}"
            )
        layers = tuple(_named_layer(model, spec) for spec in specs)
        names = [name for name, _ in layers]
        repeated = sorted(name for name, count in Counter(names).items() if count > 1)
        if repeated:
            raise ValueError(f"target_layer lists {repeated} more than once")
        return layers

    def _trace_target_layer(self) -> tuple[str, nn.Module]:
        """Finds the last 4-D feature map with spatial extent, by tracing a dummy forward."""
        model = self._model
        channels = self._in_channels or _first_conv_channels(model) or 3
        size = self._image_size or _TRACE_SIZE
        device, dtype = device_dtype(model)
        dummy = torch.zeros(1, channels, size, size, device=device, dtype=dtype)
        finished: list[tuple[str, nn.Module, tuple[int, ...] | None]] = []
        calls: Counter[int] = Counter()

        def record(name: str) -> _Hook:
            def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
                calls[id(module)] += 1
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
                finished.append((name, module, shape))

            return hook

        hooks = [
            (module, record(name)) for name, module in model.named_modules() if module is not model
        ]
        try:
            with _hooked_in_eval(model, hooks), torch.inference_mode(False), torch.no_grad():
                model(dummy)
        except Exception as error:
            raise ValueError(
                f"cannot find a Grad-CAM target layer automatically: the model failed on a "
                f"dummy input of shape {list(dummy.shape)} ({error}); pass target_layer"
            ) from error
        for index in range(len(finished) - 1, -1, -1):
            name, module, shape = finished[index]
            if (
                shape is not None
                and len(shape) == 4
                and shape[2] > 1
                and shape[3] > 1
                and not isinstance(module, _GLOBAL_POOLS)
                and calls[id(module)] == 1
            ):
                _refuse_stem(model, name, shape, finished[index + 1 :], calls)
                logger.debug("Grad-CAM target layer found by tracing: %s %s", name, list(shape))
                return name, module
        raise ValueError(
            f"cannot find a Grad-CAM target layer automatically: no submodule of "
            f"{type(model).__name__} outputs a 4-D feature map with h, w > 1 for an input of "
            f"shape {list(dummy.shape)}; pass target_layer"
        )

    def _prepare(self, img: ImageInput) -> tuple[torch.Tensor, tuple[tuple[int, int], ...]]:
        """Turns ``img`` into a CPU float batch ``[B, C, H, W]`` and checks it fits the model.

        Also returns each image's ``(width, height)`` before resizing: empty for a tensor,
        whose size is the model input's.
        """
        source_sizes: tuple[tuple[int, int], ...] = ()
        if isinstance(img, torch.Tensor):
            images = img.detach()
            if images.ndim == 3:
                images = images.unsqueeze(0)
            if images.ndim != 4:
                raise ValueError(
                    f"img must be a tensor [C, H, W] or [B, C, H, W], got shape "
                    f"{list(img.shape)}{self._expectation()}"
                )
            if not images.is_floating_point():
                raise ValueError(
                    f"img must be a float tensor, got {images.dtype}; convert decoded images with "
                    f"chexviz.data.images.to_tensor"
                )
            # The copy keeps the explanation independent of later changes to the caller's
            # tensor, and turns an inference-mode tensor into a normal one.
            images = images.to("cpu", torch.float32).clone()
        else:
            images, source_sizes = self._load(img)
        if images.shape[0] == 0:
            raise ValueError("img is an empty batch")
        if not bool(torch.isfinite(images).all()):
            raise ValueError("img contains NaN or infinite values")
        channels, height, width = (int(n) for n in images.shape[1:])
        if (self._in_channels is not None and channels != self._in_channels) or (
            self._image_size is not None and (height, width) != (self._image_size,) * 2
        ):
            raise ValueError(
                f"img has shape {list(images.shape)}{self._expectation()}; resize with "
                f"chexviz.data.images.load_image or pass an image file"
            )
        if self._image_size is not None:
            low, high = float(images.min()), float(images.max())
            if low < 0.0 or high > 1.0:
                raise ValueError(
                    f"img values must lie in [0, 1] (the model normalises internally), got "
                    f"[{low:.4g}, {high:.4g}]"
                )
        return images, source_sizes

    def _load(self, img: ImageInput) -> tuple[torch.Tensor, tuple[tuple[int, int], ...]]:
        sources: Sequence[Any]
        if isinstance(img, str | os.PathLike | Image.Image):
            sources = [img]
        elif isinstance(img, Sequence) and all(
            isinstance(s, str | os.PathLike | Image.Image) for s in img
        ):
            sources = img
        else:
            raise TypeError(
                f"img must be a tensor, an image path, a PIL image or a sequence of paths / PIL "
                f"images, got {type(img).__name__}"
            )
        if self._image_size is None or self._in_channels is None:
            raise ValueError(
                f"{type(self._model).__name__} has no image_size / in_channels attributes, so "
                f"image files cannot be prepared for it; pass a tensor [B, C, H, W] instead"
            )
        size, channels = self._image_size, self._in_channels
        crop = check_crop(getattr(self._model, "input_crop", "whole"), "model.input_crop")
        # Read before decoding: load_image may draft a lazily opened JPEG to a smaller size.
        source_sizes = tuple(
            _cropped_size(read_image_size(source, upright=True), crop) for source in sources
        )
        tensors = [
            to_tensor(load_image(source, size=size, in_channels=channels, crop=crop), channels)
            for source in sources
        ]
        if not tensors:
            raise ValueError("img is an empty sequence of images")
        return torch.stack(tensors), source_sizes

    def _expectation(self) -> str:
        if self._in_channels is None and self._image_size is None:
            return ""
        channels = self._in_channels if self._in_channels is not None else "C"
        size = self._image_size
        spatial = f"{size}, {size}" if size is not None else "H, W"
        return f", but the model expects [B, {channels}, {spatial}]"

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        try:
            output = self._model(images)
        except RuntimeError as error:
            if self._in_channels is not None and self._image_size is not None:
                raise
            raise ValueError(
                f"the model failed on input of shape {list(images.shape)}: {error}"
            ) from error
        if not isinstance(output, torch.Tensor) or output.ndim != 2:
            shape = list(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise ValueError(f"the model must return logits [B, K], got {shape}")
        return output

    def _activations(self, captured: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        activations = []
        for (name, _), store in zip(self._layers, captured, strict=True):
            if len(store) != 1:
                raise ValueError(
                    f"target layer {name!r} ran {len(store)} times in one forward pass; "
                    f"Grad-CAM needs a layer that runs exactly once"
                )
            activations.append(store[0])
        return activations

    def _raw_maps(
        self,
        logits: torch.Tensor,
        activations: list[torch.Tensor],
        wanted: list[list[int]],
        size: tuple[int, int],
    ) -> torch.Tensor:
        """Raw maps ``[J, B, h, w]``: slot ``j`` of image ``b`` explains ``wanted[b][j]``.

        Each layer's output and its gradients go through the layer's view (token grid,
        channels-last permute); a view only selects and rearranges elements, so the viewed
        gradient is the gradient with respect to the viewed output.
        """
        slots = max(len(row) for row in wanted)
        # Built on the host and copied once: writing the ones into a GPU tensor would launch a
        # kernel per (image, class).
        rows = torch.zeros((slots, *logits.shape), dtype=logits.dtype)
        for b, row in enumerate(wanted):
            for j, k in enumerate(row):
                rows[j, b, k] = 1.0
        grads = _batched_grads(logits, activations, rows.to(logits.device))
        for (name, _), grad in zip(self._layers, grads, strict=True):
            if grad is None:
                raise ValueError(f"target layer {name!r} does not influence the model's output")
        maps = [
            cam_maps(self._method, *_viewed(view, activation.detach(), grad, size))
            for view, activation, grad in zip(self._views, activations, grads, strict=True)
            if grad is not None
        ]
        return maps[0] if len(maps) == 1 else fuse(maps)

    def _explanation(
        self,
        images: torch.Tensor,
        source_sizes: tuple[tuple[int, int], ...],
        labels: tuple[str, ...],
        probabilities: torch.Tensor,
        thresholds: torch.Tensor,
        wanted: list[list[int]],
        raw: torch.Tensor | None,
    ) -> Explanation:
        batch = int(images.shape[0])
        size = (int(images.shape[-2]), int(images.shape[-1]))
        classes = [tuple(labels[k] for k in row) for row in wanted]
        heatmaps: list[dict[str, torch.Tensor]] = [{} for _ in range(batch)]
        raw_maps: list[dict[str, torch.Tensor]] = [{} for _ in range(batch)]
        zero_maps: list[frozenset[str]] = [frozenset() for _ in range(batch)]
        if raw is not None:
            height, width = (int(n) for n in images.shape[-2:])
            slots, _, h, w = raw.shape
            up = F.interpolate(
                raw.reshape(slots * batch, 1, h, w),
                size=(height, width),
                mode="bilinear",
                align_corners=False,
            )
            heat = minmax(up.reshape(slots, batch, height, width)).cpu()
            zero = (raw.amax(dim=(-2, -1)) == 0).cpu().tolist()
            finite = torch.isfinite(raw).all(dim=(-2, -1)).cpu().tolist()
            raw = raw.cpu()
            for b, names in enumerate(classes):
                for j, name in enumerate(names):
                    if not finite[j][b]:
                        raise ValueError(
                            f"the Grad-CAM map of class {name!r} for image {b} is not finite "
                            f"(non-finite activations or gradients at {self.target_layer_name!r})"
                        )
                # Copies, so that a kept map does not pin the whole batch's tensor in memory.
                heatmaps[b] = {name: heat[j, b].clone() for j, name in enumerate(names)}
                raw_maps[b] = {name: raw[j, b].clone() for j, name in enumerate(names)}
                zero_maps[b] = frozenset(n for j, n in enumerate(names) if zero[j][b])
        return Explanation(
            images=images,
            labels=labels,
            probabilities=probabilities,
            thresholds=thresholds,
            classes=tuple(classes),
            heatmaps=tuple(heatmaps),
            raw_maps=tuple(raw_maps),
            zero_maps=tuple(zero_maps),
            layer="+".join(view.describe(size) for view in self._views),
            method=self._method,
            source_sizes=source_sizes,
        )


def _capture_hook(store: list[torch.Tensor]) -> _Hook:
    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise ValueError(
                f"target layer {type(module).__name__} returned {type(output).__name__}; "
                f"Grad-CAM needs a layer that outputs a tensor [B, C, h, w]"
            )
        # Outputs of the first target layer are computed without a graph and become its
        # leaves; a later target layer downstream of it is already part of the graph.
        activation = output if output.requires_grad else output.detach().requires_grad_()
        store.append(activation)
        torch.set_grad_enabled(True)
        # The copy shields the captured activation from in-place ops downstream (DenseNet's
        # ReLU), which would otherwise change both its values and its gradient.
        return activation.clone()

    return hook


def _refuse_stem(
    model: nn.Module,
    name: str,
    shape: tuple[int, ...],
    later: Sequence[tuple[str, nn.Module, tuple[int, ...] | None]],
    calls: Counter[int],
) -> None:
    """Raises if the map ``name`` is a patch embedding: later modules output token sequences.

    A token model that chexviz does not recognise still has one 4-D map, its patch
    embedding's output; explaining it would say nothing about the model's decision.
    """
    h, w = shape[2], shape[3]
    tokens = [
        n
        for n, module, s in later
        if s is not None
        and len(s) == 3
        and s[1] >= h * w
        and calls[id(module)] == 1
        and not n.startswith(name + ".")
    ]
    if not tokens:
        return
    candidates = list(dict.fromkeys(reversed(tokens)))[:6]
    raise ValueError(
        f"cannot find a Grad-CAM target layer automatically in {type(model).__name__}: its last "
        f"feature map {name!r} {list(shape)} is followed by token sequences [B, N, C], so it is a "
        f"stem or patch embedding, not evidence for the decision. Candidate token layers (last "
        f"first): {candidates}. Pass target_layer={candidates[0]!r} and reshape= a function "
        f"mapping its output [B, N, C] to [B, C, h, w] (drop the class/register tokens, then "
        f"reshape the patch tokens to the patch grid)"
    )


def _viewed(
    view: LayerView, activation: torch.Tensor, grads: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations ``[B, C, h, w]`` and gradients ``[J, B, C, h, w]`` in float, as maps."""
    slots, batch = int(grads.shape[0]), int(grads.shape[1])
    mapped = view.to_map(activation, size)
    mapped_grads = view.to_map(grads.reshape(slots * batch, *grads.shape[2:]), size)
    mapped_grads = mapped_grads.reshape(slots, batch, *mapped_grads.shape[1:])
    if mapped.ndim != 4 or tuple(mapped_grads.shape[1:]) != tuple(mapped.shape):
        raise ValueError(
            f"target layer {view.name!r}: its output and gradient do not view as the same map "
            f"[B, C, h, w] ({list(mapped.shape)} vs {list(mapped_grads.shape[1:])})"
        )
    return mapped.float(), mapped_grads.float()


def _batched_grads(
    logits: torch.Tensor, activations: list[torch.Tensor], rows: torch.Tensor
) -> tuple[torch.Tensor | None, ...]:
    """``d (rows[j] . logits) / d activation`` for every row ``j``, stacked on a new dim 0."""
    if rows.shape[0] == 1:
        grads = torch.autograd.grad(logits, activations, rows[0], allow_unused=True)
        return tuple(None if g is None else g.unsqueeze(0) for g in grads)
    try:
        # retain_graph: the row-by-row fallback below reuses the graph; it is freed when this
        # call's tensors go out of scope.
        return torch.autograd.grad(
            logits,
            activations,
            rows,
            retain_graph=True,
            is_grads_batched=True,
            allow_unused=True,
        )
    except RuntimeError as error:
        logger.debug("batched Grad-CAM backward failed (%s); computing rows one by one", error)
    per_row = [
        torch.autograd.grad(logits, activations, row, retain_graph=True, allow_unused=True)
        for row in rows
    ]
    return tuple(
        None if column[0] is None else torch.stack([g for g in column if g is not None])
        for column in zip(*per_row, strict=True)
    )


def _named_layer(model: nn.Module, spec: LayerSpec) -> tuple[str, nn.Module]:
    if isinstance(spec, str):
        if not spec:
            raise ValueError("target layer name is empty; the model itself cannot be the target")
        try:
            return spec, model.get_submodule(spec)
        except AttributeError:
            names = [name for name, _ in model.named_modules() if name]
            close = difflib.get_close_matches(spec, names, n=5)
            hint = f"; did you mean {close}?" if close else ""
            candidates = [c for p, f in find_families(model) for c in qualified(p, f)[1]]
            if candidates:
                hint += (
                    f"; candidate layers of this model: {candidates}, e.g. "
                    f"target_layer={candidates[-1]!r}"
                )
            raise ValueError(
                f"target layer {spec!r} is not a submodule of {type(model).__name__}{hint}"
            ) from None
    if not isinstance(spec, nn.Module):
        raise TypeError(
            f"a target layer must be an nn.Module or a dotted name, got {type(spec).__name__}"
        )
    if spec is model:
        raise ValueError("the model itself cannot be the target layer; pick a submodule")
    for name, module in model.named_modules():
        if module is spec:
            return name, module
    raise ValueError(
        f"target layer {type(spec).__name__} is not a submodule of {type(model).__name__}"
    )


def _optional_int(model: nn.Module, name: str) -> int | None:
    value = getattr(model, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@contextlib.contextmanager
def _hooked_in_eval(model: nn.Module, hooks: Sequence[tuple[nn.Module, _Hook]]) -> Iterator[None]:
    """Registers forward hooks and puts ``model`` in eval mode; undoes both on exit, always."""
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        with eval_mode(model):
            for module, hook in hooks:
                handles.append(module.register_forward_hook(hook))
            yield
    finally:
        for handle in handles:
            handle.remove()


def _first_conv_channels(model: nn.Module) -> int | None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    return None


def _cropped_size(size: tuple[int, int], crop: Crop) -> tuple[int, int]:
    """The ``(width, height)`` of what the model sees of a picture, before resizing."""
    if crop == "whole":
        return size
    side = min(size)
    return side, side
