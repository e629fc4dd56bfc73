"""The CAM maths of [`chexviz.explain.gradcam`][chexviz.explain.gradcam]: small pure functions.

No hooks, no model: activations and gradients in, maps out, so each formula can be tested on
hand-made tensors. The methods and their departures from the papers are documented on
[`GradCAM`][chexviz.explain.gradcam.GradCAM].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

__all__ = ["cam_maps", "eigen_maps", "fuse", "minmax", "safe_divide"]


def cam_maps(method: str, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Maps ``[J, B, h, w]`` from activations ``[B, C, h, w]`` and gradients ``[J, B, C, h, w]``."""
    if method == "eigencam":
        # Class-agnostic: every slot of an image gets the same map; the gradients are unused.
        return eigen_maps(activations).unsqueeze(0).expand(grads.shape[0], -1, -1, -1)
    if method == "hirescam":
        return torch.relu((grads * activations).sum(dim=2))
    if method == "layercam":
        return torch.relu((torch.relu(grads) * activations).sum(dim=2))
    if method == "gradcam":
        weights = grads.mean(dim=(-2, -1))
    elif method == "gradcam++":
        squared = grads.square()
        denominator = 2 * squared + activations.sum(dim=(-2, -1), keepdim=True) * squared * grads
        alpha = safe_divide(squared, denominator)
        weights = (alpha * torch.relu(grads)).sum(dim=(-2, -1))
    else:  # xgradcam
        total = activations.sum(dim=(-2, -1), keepdim=True)
        weights = (grads * safe_divide(activations, total)).sum(dim=(-2, -1))
    return torch.relu(torch.einsum("jbc,bchw->jbhw", weights, activations))


def eigen_maps(activations: torch.Tensor) -> torch.Tensor:
    """Eigen-CAM maps ``[B, h, w]`` of activations ``[B, C, h, w]``.

    As pytorch-grad-cam's ``get_2d_projection``: each image's activations become a matrix of
    ``h * w`` positions by ``C`` channels, centred per channel, and are projected onto their
    first right singular vector; then ReLU. A singular vector's sign is arbitrary, so it is
    chosen to make the projection correlate positively with the activations' channel mean
    (pytorch-grad-cam leaves the sign to the SVD routine, so its map can come out inverted).
    """
    batch, channels, height, width = activations.shape
    positions = activations.float().reshape(batch, channels, height * width).transpose(1, 2)
    centred = positions - positions.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = torch.einsum("bpc,bc->bp", centred, vh[:, 0, :])
    mean = positions.mean(dim=2)
    agreement = (
        (projection - projection.mean(1, keepdim=True)) * (mean - mean.mean(1, keepdim=True))
    ).sum(1)
    sign = torch.where(agreement < 0, -1.0, 1.0).unsqueeze(1)
    return torch.relu(projection * sign).reshape(batch, height, width)


def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` with 0 where the denominator is 0."""
    nonzero = denominator != 0
    return torch.where(nonzero, numerator / torch.where(nonzero, denominator, 1.0), 0.0)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalises each ``[h, w]`` map; a constant map becomes all zero."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    spread = maps.amax(dim=(-2, -1), keepdim=True) - low
    return safe_divide(maps - low, spread).clamp_(0.0, 1.0)


def fuse(maps: list[torch.Tensor]) -> torch.Tensor:
    """Averages per-layer maps ``[J, B, h_i, w_i]``, normalised, at the finest resolution."""
    height, width = max((tuple(m.shape[-2:]) for m in maps), key=lambda hw: hw[0] * hw[1])
    resized = []
    for m in maps:
        slots, batch, h, w = m.shape
        if (h, w) != (height, width):
            m = F.interpolate(
                m.reshape(slots * batch, 1, h, w),
                size=(height, width),
                mode="bilinear",
                align_corners=False,
            ).reshape(slots, batch, height, width)
        resized.append(minmax(m))
    return torch.stack(resized).mean(dim=0)
