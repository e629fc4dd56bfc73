"""The result of a Grad-CAM run: per-image, per-class heatmaps and the predictions behind them.

An [`Explanation`][chexviz.explain.explanation.Explanation] is what
[`GradCAM.explain`][chexviz.explain.gradcam.GradCAM.explain] returns for a batch of ``B`` images.
It is an immutable record holding CPU tensors only, so it can be kept, pickled or rendered long
after the model is gone::

    explanation = GradCAM(model).explain(image)
    for cls in explanation.classes[0]:
        explanation.overlay(cls).save(f"{cls}.png")
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

import torch
import torch.nn.functional as F  # noqa: N812

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Explanation", "OverlaySize"]

OverlaySize: TypeAlias = Literal["source", "model"]
"""The size of an overlay: the source image's, or the model input's."""


class _Positives(tuple[tuple[str, ...], ...]):
    """The predicted positives of every image, still callable as the old method.

    ``positives`` was a method ``positives(index)`` in chexviz 0.1; calling the tuple keeps
    that working for one release, with a ``DeprecationWarning``.
    """

    __slots__ = ()

    def __call__(self, index: int = 0) -> tuple[str, ...]:
        warnings.warn(
            "Explanation.positives is now a per-image tuple like Explanation.classes; "
            "write explanation.positives[index] instead of explanation.positives(index) "
            "(calling it will stop working in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        if not -len(self) <= index < len(self):
            raise IndexError(f"image index {index} is out of range for a batch of {len(self)}")
        return self[index]


@dataclass(frozen=True, eq=False)
class Explanation:
    """Class activation maps for a batch of ``B`` images.

    Every tensor lives on the CPU and is detached from any autograd graph.

    Attributes:
        images: The model input, ``[B, C, H, W]`` float in ``[0, 1]`` for chexviz classifiers
            (for a plain PyTorch model: the tensor it was given).
        labels: Names of all ``L`` model outputs, in output order.
        probabilities: Sigmoid of the model's logits, ``[B, L]``.
        thresholds: The decision threshold of each label, ``[L]``; a label is a predicted
            positive when its probability is ``>=`` its threshold.
        classes: The explained class names of each image, in the order they were requested
            (predicted positives come in label order). An image may have none. Without a
            ``classes=`` argument, [`explain`][chexviz.explain.gradcam.GradCAM.explain] explains
            the predicted positives, so ``classes == positives``.
        heatmaps: Per image, class name -> map ``[H, W]`` at input resolution with values in
            ``[0, 1]``: the raw map bilinearly upsampled (``align_corners=False``) and min-max
            normalised. A map whose values are all equal (all zero, typically) stays all zero.
        raw_maps: Per image, class name -> the un-normalised map ``[h, w]`` at the target
            layer's resolution (for several fused layers: at the finest of their resolutions,
            see [`GradCAM`][chexviz.explain.gradcam.GradCAM]). Values are ``>= 0``.
        zero_maps: Per image, the explained classes whose raw map is all zero (no positive
            evidence at the target layer); their heatmaps are all zero too.
        layer: Dotted name of the target layer within the model, followed by the view that
            made its output a map when there is one (e.g. ``"blocks.11.norm1 (tokens -> 14x14
            grid, 1 prefix token dropped)"``, ``"norm (channels-last -> channels-first)"``);
            several fused layers are joined with ``"+"``.
        method: The CAM method, e.g. ``"gradcam"``.
        source_sizes: Per image, ``(width, height)`` of the picture before it was resized to
            the model input, as PIL's ``Image.size`` gives it (upright, after its EXIF
            orientation): what [`overlay`][chexviz.explain.explanation.Explanation.overlay]
            draws at. Empty (the default) when every image came in at the model's size (a
            tensor input); [`source_size`][chexviz.explain.explanation.Explanation.source_size]
            answers for both cases.

    Per-image fields are tuples indexed by image (``classes[0]``, ``heatmaps[0]``, and the
    property ``positives[0]``); the methods ``heatmap(cls, index)``, ``overlay(cls, index)``
    and ``source_size(index)`` are shortcuts that check their arguments.

    Raises:
        ValueError: On construction, if the fields disagree in batch size, label count,
            image size, explained classes or source sizes.
    """

    images: torch.Tensor
    labels: tuple[str, ...]
    probabilities: torch.Tensor
    thresholds: torch.Tensor
    classes: tuple[tuple[str, ...], ...]
    heatmaps: tuple[dict[str, torch.Tensor], ...]
    raw_maps: tuple[dict[str, torch.Tensor], ...]
    zero_maps: tuple[frozenset[str], ...]
    layer: str
    method: str
    source_sizes: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(
                f"Explanation.images must be [B, C, H, W], got shape {list(self.images.shape)}"
            )
        batch, _, height, width = (int(n) for n in self.images.shape)
        n_labels = len(self.labels)
        if tuple(self.probabilities.shape) != (batch, n_labels):
            raise ValueError(
                f"Explanation.probabilities must be [{batch}, {n_labels}] (images x labels), "
                f"got {list(self.probabilities.shape)}"
            )
        if tuple(self.thresholds.shape) != (n_labels,):
            raise ValueError(
                f"Explanation.thresholds must be [{n_labels}], got {list(self.thresholds.shape)}"
            )
        for name in ("classes", "heatmaps", "raw_maps", "zero_maps"):
            if len(getattr(self, name)) != batch:
                raise ValueError(
                    f"Explanation.{name} must have one entry per image ({batch}), "
                    f"got {len(getattr(self, name))}"
                )
        if self.source_sizes:
            self._check_source_sizes(batch)
        known = set(self.labels)
        for index in range(batch):
            classes = self.classes[index]
            unknown = [c for c in classes if c not in known]
            if unknown:
                raise ValueError(f"Explanation.classes[{index}] has unknown labels {unknown}")
            for name in ("heatmaps", "raw_maps"):
                maps: Mapping[str, torch.Tensor] = getattr(self, name)[index]
                if list(maps) != list(classes):
                    raise ValueError(
                        f"Explanation.{name}[{index}] has maps for {list(maps)}, expected one "
                        f"per explained class {list(classes)}"
                    )
            for cls, heatmap in self.heatmaps[index].items():
                if tuple(heatmap.shape) != (height, width):
                    raise ValueError(
                        f"Explanation.heatmaps[{index}][{cls!r}] must be [{height}, {width}] "
                        f"(the input resolution), got {list(heatmap.shape)}"
                    )
            for cls, raw in self.raw_maps[index].items():
                if raw.ndim != 2:
                    raise ValueError(
                        f"Explanation.raw_maps[{index}][{cls!r}] must be 2-D, got {list(raw.shape)}"
                    )
            if not self.zero_maps[index] <= set(classes):
                raise ValueError(
                    f"Explanation.zero_maps[{index}] names classes that were not explained: "
                    f"{sorted(self.zero_maps[index] - set(classes))}"
                )

    def __len__(self) -> int:
        """The number of images ``B``."""
        return int(self.images.shape[0])

    @property
    def positives(self) -> tuple[tuple[str, ...], ...]:
        """The labels predicted positive for each image, indexed by image like ``classes``.

        A label is a predicted positive when its probability is ``>=`` its threshold; each
        image's labels come in label order. ``explain(img)`` without ``classes=`` explains
        exactly these, so ``positives == classes`` then.

        In chexviz 0.1 ``positives`` was a method, ``positives(index)``; calling it still
        works for one release and emits a ``DeprecationWarning``: write ``positives[index]``.
        """
        rows = self.probabilities.tolist()
        thresholds = self.thresholds.tolist()
        return _Positives(
            tuple(label for label, p, t in zip(self.labels, row, thresholds, strict=True) if p >= t)
            for row in rows
        )

    def source_size(self, index: int = 0) -> tuple[int, int]:
        """The ``(width, height)`` of one image before it was resized to the model input.

        Args:
            index: Image position in the batch.

        Returns:
            ``source_sizes[index]``, or the model input's size when ``source_sizes`` is empty.

        Raises:
            IndexError: ``index`` is outside the batch.
        """
        index = self._check_index(index)
        if self.source_sizes:
            return self.source_sizes[index]
        return int(self.images.shape[-1]), int(self.images.shape[-2])

    def heatmap(self, cls: str | int, index: int = 0) -> torch.Tensor:
        """The normalised heatmap of one explained class of one image.

        Args:
            cls: Class name, or its index in ``labels``.
            index: Image position in the batch.

        Returns:
            Tensor ``[H, W]`` with values in ``[0, 1]``.

        Raises:
            IndexError: ``index`` is outside the batch, or ``cls`` is an out-of-range index.
            KeyError: The class was not explained for that image; the message lists those that
                were.
        """
        maps = self.heatmaps[self._check_index(index)]
        name = self._class_name(cls)
        if name not in maps:
            raise KeyError(
                f"class {name!r} was not explained for image {index}; explained: "
                f"{list(maps) or 'none'}"
            )
        return maps[name]

    def overlay(
        self,
        cls: str | int,
        index: int = 0,
        *,
        alpha: float = 0.5,
        cmap: str = "inferno",
        size: OverlaySize = "source",
    ) -> Image.Image:
        """Renders one heatmap over its image, by default at the source image's size.

        With ``size="source"`` the model input and the heatmap are both resized (bilinear,
        ``align_corners=False``, antialiased when shrinking) to
        [`source_size(index)`][chexviz.explain.explanation.Explanation.source_size], so the
        picture has the X-ray's own width, height and aspect ratio and a hot spot lands where
        it lies in the X-ray. Its detail is still that of the model input: the image is the
        one the model saw, stretched back to the source's shape. ``size="model"`` draws at the
        model input's size, the square the model saw. For a tensor input the two agree.

        Delegates to [`overlay_heatmap`][chexviz.explain.overlay.overlay_heatmap] (matplotlib is
        imported only now).

        Args:
            cls: Class name, or its index in ``labels``.
            index: Image position in the batch.
            alpha: Opacity of the heatmap, in ``[0, 1]``.
            cmap: Name of a matplotlib colormap.
            size: ``"source"`` for the source image's size, ``"model"`` for the model input's.

        Returns:
            An RGB PIL image, ``source_size(index)`` or the model input's size.

        Raises:
            IndexError: ``index`` is outside the batch.
            KeyError: The class was not explained for that image.
            ValueError: ``size`` is neither ``"source"`` nor ``"model"``.
        """
        from chexviz.explain.overlay import overlay_heatmap

        if size not in ("source", "model"):
            raise ValueError(f"size must be 'source' or 'model', got {size!r}")
        heatmap = self.heatmap(cls, index)
        image = self.images[self._check_index(index)]
        width, height = self.source_size(index)
        if size == "source" and (height, width) != tuple(heatmap.shape):
            image = _resized(image, height, width)
            heatmap = _resized(heatmap[None], height, width)[0]
        return overlay_heatmap(image, heatmap, alpha=alpha, cmap=cmap)

    def _check_source_sizes(self, batch: int) -> None:
        if len(self.source_sizes) != batch:
            raise ValueError(
                f"Explanation.source_sizes must have one entry per image ({batch}) or none, "
                f"got {len(self.source_sizes)}"
            )
        for index, pair in enumerate(self.source_sizes):
            if not (
                isinstance(pair, tuple)
                and len(pair) == 2
                and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in pair)
            ):
                raise ValueError(
                    f"Explanation.source_sizes[{index}] must be (width, height) in positive "
                    f"pixels, got {pair!r}"
                )

    def _check_index(self, index: int) -> int:
        batch = len(self)
        if not -batch <= index < batch:
            raise IndexError(f"image index {index} is out of range for a batch of {batch}")
        return index % batch

    def _class_name(self, cls: str | int) -> str:
        if isinstance(cls, str):
            return cls
        if isinstance(cls, bool) or not -len(self.labels) <= cls < len(self.labels):
            raise IndexError(f"class index {cls} is out of range for {len(self.labels)} labels")
        return self.labels[cls]

    def __repr__(self) -> str:
        shape = "x".join(str(int(n)) for n in self.images.shape[1:])
        explained = sum(len(c) for c in self.classes)
        return (
            f"Explanation(images={len(self)}x{shape}, method={self.method!r}, "
            f"layer={self.layer!r}, explained_maps={explained})"
        )


def _resized(planes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resizes ``[C, H, W]`` values in ``[0, 1]`` to ``[C, height, width]``, staying in range."""
    out = F.interpolate(
        planes[None].float(),
        size=(height, width),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )[0]
    # Interpolation weights sum to one, but rounding can step just outside [0, 1].
    return out.clamp_(0.0, 1.0)
