"""Faithfulness of heatmaps without ground truth: the deletion and insertion games.

Deletion (Petsiuk et al., RISE, 2018) replaces the pixels a heatmap ranks highest, a growing
fraction at a time, with a baseline image and follows the class probability as they go: if
the map shows what the model uses, the probability falls fast and the area under the curve
(AUC) is small. Insertion starts from the baseline and puts the highest-ranked pixels back:
a faithful map makes the probability rise fast, so the AUC is large.

Both depend on the baseline: a blurred copy keeps the image's low frequencies, a constant
(mean or zero) image does not, and either can push the model off its training distribution
(Rong et al., ROAD, 2022). Compare maps under one baseline, and against the random-order
reference that ``score_faithfulness`` reports beside each score, not across baselines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from chexviz._internal.arrays import as_heatmap
from chexviz._internal.modules import device_dtype, eval_mode

if TYPE_CHECKING:
    from chexviz.explain.explanation import Explanation

__all__ = [
    "PerturbationCurve",
    "deletion_score",
    "insertion_score",
    "perturbation_curve",
    "score_faithfulness",
]

Baseline = Literal["blur", "mean", "zero"] | float

_NOISE_CELL = 16
"""Pixels per cell of the random field that orders ties: about a CAM cell at stride 16."""
Mode = Literal["deletion", "insertion"]


@dataclass(frozen=True)
class PerturbationCurve:
    """Class probability as a growing fraction of pixels is deleted or inserted.

    Attributes:
        mode: ``"deletion"`` or ``"insertion"``.
        fractions: Fraction of the image's pixels perturbed at each step, from 0 to 1.
        probabilities: The model's probability for the class at each step.
    """

    mode: Mode
    fractions: np.ndarray
    probabilities: np.ndarray

    @property
    def auc(self) -> float:
        """Area under the probability curve over the perturbed fraction (trapezoid rule)."""
        # written out: np.trapezoid is NumPy 2 only, np.trapz is gone from it
        heights = self.probabilities[1:] + self.probabilities[:-1]
        return float(np.sum(heights * np.diff(self.fractions)) / 2)


def _class_position(model: nn.Module, class_index: int | str) -> int:
    if isinstance(class_index, str):
        labels = getattr(model, "labels", None)
        if labels is None:
            raise ValueError(
                f"class {class_index!r} given by name but the model has no .labels; pass an index"
            )
        if class_index not in labels:
            raise KeyError(f"class {class_index!r} is not one of the model's labels {labels}")
        return int(tuple(labels).index(class_index))
    return int(class_index)


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    # reflect padding needs a radius below the size, so big kernels are cut to fit
    radius = math.ceil(3 * sigma)
    sizes = [2 * min(radius, int(n) - 1) + 1 for n in (image.shape[2], image.shape[1])]
    blurred: torch.Tensor = gaussian_blur(image, kernel_size=sizes, sigma=[sigma, sigma])
    return blurred


def _baseline_image(
    image: torch.Tensor, baseline: Baseline, blur_sigma: float | None
) -> torch.Tensor:
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(image, float(baseline))
    if baseline == "blur":
        sigma = max(1.0, max(image.shape[1:]) / 16) if blur_sigma is None else blur_sigma
        if not sigma > 0:
            raise ValueError(f"blur_sigma must be positive, got {blur_sigma}")
        return _gaussian_blur(image, sigma)
    if baseline == "mean":
        return image.mean(dim=(1, 2), keepdim=True).expand_as(image)
    if baseline == "zero":
        return torch.zeros_like(image)
    raise ValueError(f"baseline must be 'blur', 'mean', 'zero' or a number, got {baseline!r}")


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Random field ``[H, W]`` varying over about ``_NOISE_CELL`` pixels, drawn from ``rng``."""
    height, width = shape
    grid = (math.ceil(height / _NOISE_CELL) + 1, math.ceil(width / _NOISE_CELL) + 1)
    coarse = torch.from_numpy(rng.random(grid))
    field = torch.nn.functional.interpolate(
        coarse[None, None], size=shape, mode="bilinear", align_corners=False
    )
    return field[0, 0].cpu().numpy()


def _pixel_ranks(heat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rank of each pixel, 0 for the hottest.

    Ties (the flat zero region of a CAM, or a whole all-zero map) are ranked by a smooth
    random field rather than pixel by pixel: scattered single-pixel changes make salt-and-pepper
    noise, which moves a CNN's output by itself and would swamp what the map says.
    """
    flat = heat.ravel()
    shape = (int(heat.shape[0]), int(heat.shape[1]))
    order = np.lexsort((_smooth_noise(shape, rng).ravel(), -flat))
    ranks = np.empty(flat.size, dtype=np.int64)
    ranks[order] = np.arange(flat.size)
    return ranks.reshape(heat.shape)


def perturbation_curve(
    model: nn.Module,
    image: torch.Tensor,
    heatmap: torch.Tensor | np.ndarray,
    class_index: int | str,
    *,
    mode: Mode,
    steps: int = 20,
    baseline: Baseline = "blur",
    blur_sigma: float | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> PerturbationCurve:
    """Follows the class probability while pixels are deleted or inserted in heatmap order.

    All ``steps + 1`` perturbed images go through the model in batches of ``batch_size``,
    under ``torch.no_grad()`` and in eval mode; every module's training flag is restored
    afterwards and no gradient is stored.

    Args:
        model: Multi-label classifier mapping ``[B, C, H, W]`` images in [0, 1] to logits
            ``[B, L]``; the probability is the logit's sigmoid.
        image: Input image ``[C, H, W]`` in [0, 1].
        heatmap: Map ``[H, W]`` ranking pixels, highest first. Ties are ranked by a smooth
            random field fixed by ``seed`` (blobs of about 16 pixels, like CAM cells, since
            scattered pixel changes are artefacts a CNN reacts to by itself), so an all-zero
            map gives the random-order reference.
        class_index: Output index, or label name when the model has ``.labels``.
        mode: ``"deletion"`` (replace top pixels by the baseline) or ``"insertion"``
            (start from the baseline and restore top pixels).
        steps: Number of equal increments from 0 to all pixels.
        baseline: ``"blur"`` (Gaussian-blurred image), ``"mean"`` (per-channel mean),
            ``"zero"`` (black) or a constant grey level.
        blur_sigma: Standard deviation in pixels of the blur; default ``max(1, size / 16)``.
        batch_size: Perturbed images per forward pass.
        seed: Seed of the random field that orders ties.

    Returns:
        The curve; its ``auc`` is the deletion or insertion score.

    Raises:
        ValueError: For a bad mode, steps, batch size, baseline, shape or class index.
    """
    position = _class_position(model, class_index)
    settings = _Settings(mode, steps, baseline, blur_sigma, batch_size)
    return _curves(model, image, heatmap, [position], settings, np.random.default_rng(seed))[0]


@dataclass(frozen=True)
class _Settings:
    mode: Mode
    steps: int
    baseline: Baseline
    blur_sigma: float | None
    batch_size: int


def _curves(
    model: nn.Module,
    image: torch.Tensor,
    heatmap: torch.Tensor | np.ndarray,
    positions: list[int],
    settings: _Settings,
    ties: np.random.Generator,
) -> list[PerturbationCurve]:
    """One perturbation sequence, read out for several output positions at once."""
    mode, steps, baseline = settings.mode, settings.steps, settings.baseline
    blur_sigma, batch_size = settings.blur_sigma, settings.batch_size
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if image.ndim != 3:
        raise ValueError(f"image must be [C, H, W], got shape {tuple(image.shape)}")
    height, width = int(image.shape[1]), int(image.shape[2])
    heat = as_heatmap(heatmap, shape=(height, width))

    device, dtype = device_dtype(model)
    original = image.detach().to(device, dtype)
    base = _baseline_image(original, baseline, blur_sigma)
    ranks = torch.from_numpy(_pixel_ranks(heat, ties)).to(device)
    counts = np.rint(np.linspace(0.0, 1.0, steps + 1) * height * width).astype(np.int64)
    start, end = (original, base) if mode == "deletion" else (base, original)
    columns = torch.as_tensor(positions, device=device)

    probabilities: list[torch.Tensor] = []
    with eval_mode(model), torch.no_grad():
        for first in range(0, len(counts), batch_size):
            chunk = torch.as_tensor(counts[first : first + batch_size], device=device)
            changed = (ranks[None] < chunk[:, None, None])[:, None]  # [k, 1, H, W]
            logits = model(torch.where(changed, end[None], start[None]))
            if logits.ndim != 2 or not all(0 <= p < logits.shape[1] for p in positions):
                raise ValueError(
                    f"class index {positions} is out of range for model output of shape "
                    f"{tuple(logits.shape)}"
                )
            probabilities.append(torch.sigmoid(logits[:, columns].float()).cpu())
    table = torch.cat(probabilities).cpu().numpy().astype(np.float64)  # [steps + 1, positions]
    fractions = counts / (height * width)
    return [
        PerturbationCurve(mode=mode, fractions=fractions, probabilities=table[:, k])
        for k in range(len(positions))
    ]


def deletion_score(
    model: nn.Module,
    image: torch.Tensor,
    heatmap: torch.Tensor | np.ndarray,
    class_index: int | str,
    *,
    steps: int = 20,
    baseline: Baseline = "blur",
    blur_sigma: float | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> float:
    """Area under the deletion curve: lower means the map found what the model uses.

    Args:
        model: Classifier returning logits ``[B, L]``; see `perturbation_curve`.
        image: Input image ``[C, H, W]`` in [0, 1].
        heatmap: Map ``[H, W]``; its highest pixels are deleted first.
        class_index: Output index, or label name when the model has ``.labels``.
        steps: Number of equal increments from 0 to all pixels.
        baseline: ``"blur"``, ``"mean"``, ``"zero"`` or a constant grey level.
        blur_sigma: Standard deviation in pixels of the blur; default ``max(1, size / 16)``.
        batch_size: Perturbed images per forward pass.
        seed: Seed of the random field that orders ties.

    Returns:
        The AUC, between 0 and 1.
    """
    return perturbation_curve(
        model,
        image,
        heatmap,
        class_index,
        mode="deletion",
        steps=steps,
        baseline=baseline,
        blur_sigma=blur_sigma,
        batch_size=batch_size,
        seed=seed,
    ).auc


def insertion_score(
    model: nn.Module,
    image: torch.Tensor,
    heatmap: torch.Tensor | np.ndarray,
    class_index: int | str,
    *,
    steps: int = 20,
    baseline: Baseline = "blur",
    blur_sigma: float | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> float:
    """Area under the insertion curve: higher means the map found what the model uses.

    Args:
        model: Classifier returning logits ``[B, L]``; see `perturbation_curve`.
        image: Input image ``[C, H, W]`` in [0, 1].
        heatmap: Map ``[H, W]``; its highest pixels are restored first.
        class_index: Output index, or label name when the model has ``.labels``.
        steps: Number of equal increments from 0 to all pixels.
        baseline: ``"blur"``, ``"mean"``, ``"zero"`` or a constant grey level.
        blur_sigma: Standard deviation in pixels of the blur; default ``max(1, size / 16)``.
        batch_size: Perturbed images per forward pass.
        seed: Seed of the random field that orders ties.

    Returns:
        The AUC, between 0 and 1.
    """
    return perturbation_curve(
        model,
        image,
        heatmap,
        class_index,
        mode="insertion",
        steps=steps,
        baseline=baseline,
        blur_sigma=blur_sigma,
        batch_size=batch_size,
        seed=seed,
    ).auc


def score_faithfulness(
    model: nn.Module,
    explanation: Explanation,
    *,
    steps: int = 20,
    baseline: Baseline = "blur",
    blur_sigma: float | None = None,
    batch_size: int = 32,
    seed: int = 0,
    reference: bool = True,
    references: int = 5,
) -> pd.DataFrame:
    """Deletion and insertion scores of every explained class of every image.

    The random-order reference is random for every image: each image gets ``references``
    smooth random fields of its own, and the reference score is their mean (with its standard
    deviation beside it). Ties inside the explained maps are ordered by yet another field, so
    no map shares a field with its reference. All fields come from independent streams of
    ``np.random.SeedSequence([seed, index])``, so a run is reproducible.

    Args:
        model: The model the explanation was computed for (logits ``[B, L]``).
        explanation: Heatmaps to score, with the images they explain.
        steps: Number of equal increments from 0 to all pixels.
        baseline: ``"blur"``, ``"mean"``, ``"zero"`` or a constant grey level.
        blur_sigma: Standard deviation in pixels of the blur; default ``max(1, size / 16)``.
        batch_size: Perturbed images per forward pass.
        seed: Seed of the random fields (ties and references).
        reference: Also score random orders of smooth blobs (columns ``deletion_random``,
            ``deletion_random_std``, ``insertion_random``, ``insertion_random_std``), the level
            a map must beat to carry information.
        references: Random fields per image averaged into the reference.

    Returns:
        One row per (image, explained class): ``index``, ``label``, ``probability``,
        ``zero_map``, ``deletion``, ``insertion`` and, with ``reference``, the reference's
        mean and standard deviation over its fields.

    Raises:
        ValueError: If ``references`` is below 1, or as for `perturbation_curve`.
    """
    if reference and references < 1:
        raise ValueError(f"references must be at least 1, got {references}")
    modes: tuple[Mode, ...] = ("deletion", "insertion")
    rows: list[dict[str, object]] = []
    for index in range(len(explanation)):
        image = explanation.images[index]
        labels = explanation.classes[index]
        positions = [explanation.labels.index(label) for label in labels]
        # stream 0 orders the maps' ties; streams 1.. are the reference's fields
        streams = np.random.SeedSequence([seed, index]).spawn(1 + (references if reference else 0))
        random: dict[str, np.ndarray] = {}
        if reference and labels:
            # an all-zero map is ranked by its random field alone; the perturbed images do not
            # depend on the class, so one pass per field serves every class of the image
            flat = np.zeros(tuple(image.shape[1:]))
            for mode in modes:
                settings = _Settings(mode, steps, baseline, blur_sigma, batch_size)
                aucs = [
                    [c.auc for c in _curves(model, image, flat, positions, settings, rng)]
                    for rng in (np.random.default_rng(stream) for stream in streams[1:])
                ]
                random[mode] = np.asarray(aucs)  # [references, classes]
        for k, (label, position) in enumerate(zip(labels, positions, strict=True)):
            heat = explanation.heatmaps[index][label]
            row: dict[str, object] = {
                "index": index,
                "label": label,
                "probability": float(explanation.probabilities[index, position]),
                "zero_map": label in explanation.zero_maps[index],
            }
            for mode in modes:
                settings = _Settings(mode, steps, baseline, blur_sigma, batch_size)
                ties = np.random.default_rng(streams[0])
                row[mode] = _curves(model, image, heat, [position], settings, ties)[0].auc
                if reference:
                    row[f"{mode}_random"] = float(random[mode][:, k].mean())
                    row[f"{mode}_random_std"] = float(random[mode][:, k].std())
            rows.append(row)
    columns = ["index", "label", "probability", "zero_map", "deletion", "insertion"]
    if reference:
        columns += [
            "deletion_random",
            "deletion_random_std",
            "insertion_random",
            "insertion_random_std",
        ]
    frame: pd.DataFrame = pd.DataFrame(rows, columns=columns)
    return frame
