"""Helpers for `torch.nn.Module`s shared by the models, training and explanation layers."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["device_dtype", "eval_mode"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Puts every module of ``model`` in eval mode; on exit restores each module's own flag.

    ``model.train(was_training)`` would not do: it sets one flag on every module, so a part the
    user had deliberately frozen in eval mode (a frozen BatchNorm) would come back training.
    Only the modules in training mode are switched and switched back: setting the flag on every
    module of a large network costs a noticeable fraction of a forward pass.

    Args:
        model: The module; switched in place.

    Yields:
        Nothing; the model is in eval mode inside the block.
    """
    training = [module for module in model.modules() if module.training]
    try:
        for module in training:
            module.training = False
        yield
    finally:
        for module in training:
            module.training = True


def device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where ``model`` lives and the floating type its inputs should have.

    Args:
        model: The module.

    Returns:
        The device and dtype of its first floating-point parameter or buffer; CPU and float32
        for a module that has none.
    """
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32
