"""Data-parallel helpers for running the trainer under ``torchrun``.

``torchrun --nproc_per_node=N script.py`` starts ``N`` copies of a script with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set.
[`detect`][chexviz.training.distributed.detect] reads them,
[`setup`][chexviz.training.distributed.setup] joins
the process group (NCCL on GPUs, Gloo on CPU) and the other helpers do the collective work the
trainer needs: gathering evaluation outputs in dataset order and keeping buffers identical
across processes.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["DistributedContext", "broadcast_buffers", "detect", "gather_rows", "setup"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: Global rank of this process.
        world_size: Number of processes.
        local_rank: Rank on this machine (picks the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0, the one that writes files and logs."""
        return self.rank == 0


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer") from None


def detect(environ: Mapping[str, str] | None = None) -> DistributedContext:
    """Read the ranks that ``torchrun`` puts in the environment.

    Without them (a plain ``python script.py``) the context is a single process.

    Args:
        environ: Environment to read; ``os.environ`` by default.

    Returns:
        The context.

    Raises:
        ValueError: If a variable is not an integer or the ranks are inconsistent.
    """
    env = os.environ if environ is None else environ
    world_size = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local_rank = _env_int(env, "LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(
            f"inconsistent distributed environment: RANK={rank}, WORLD_SIZE={world_size}, "
            f"LOCAL_RANK={local_rank}"
        )
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def setup(context: DistributedContext, device: torch.device) -> None:
    """Join the process group of a multi-process run (nothing to do for a single process).

    The backend is NCCL when training on CUDA and Gloo otherwise. A group the caller already
    initialised is reused after checking its size. A group created here is destroyed at exit.

    Args:
        context: From [`detect`][chexviz.training.distributed.detect].
        device: The device this process trains on.

    Raises:
        ValueError: If an existing process group's size differs from ``context.world_size``.
    """
    if not context.enabled:
        return
    if dist.is_initialized():
        if dist.get_world_size() != context.world_size:
            raise ValueError(
                f"the initialised process group has {dist.get_world_size()} processes but "
                f"WORLD_SIZE is {context.world_size}"
            )
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=context.rank, world_size=context.world_size)
    atexit.register(_destroy)
    logger.info(
        "joined %s process group as rank %d of %d", backend, context.rank, context.world_size
    )


def gather_rows(local: Tensor, total: int, context: DistributedContext) -> Tensor:
    """Reassemble per-process outputs of a ``DistributedSampler(shuffle=False)`` in dataset order.

    That sampler gives rank ``r`` the items ``r, r + W, r + 2W, ...`` of the dataset, padded by
    repeating the first items so that every rank has the same count. Interleaving the ranks'
    rows and dropping the padding restores exactly the single-process order.

    Args:
        local: This process's rows ``[n, ...]`` (``n`` equal on every rank).
        total: Length of the dataset.
        context: The distributed context.

    Returns:
        The ``total`` rows in dataset order (``local`` itself for a single process).
    """
    if not context.enabled:
        return local[:total]
    parts = [torch.empty_like(local) for _ in range(context.world_size)]
    dist.all_gather(parts, local.contiguous())
    return torch.stack(parts, dim=1).flatten(0, 1)[:total]


def broadcast_buffers(module: nn.Module, context: DistributedContext) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) to every process.

    DDP broadcasts buffers before each forward pass, so after the last training step of an
    epoch each rank still holds statistics updated from its own batch; this makes evaluation and
    checkpoints identical on every rank.

    Args:
        module: The (unwrapped) model.
        context: The distributed context.
    """
    if not context.enabled:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)
