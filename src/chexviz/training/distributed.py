"""Data-parallel helpers for running the trainer under ``torchrun``.

``torchrun --nproc_per_node=N script.py`` starts ``N`` copies of a script with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set.
[`detect`][chexviz.training.distributed.detect] reads them,
[`resolve_device`][chexviz.training.distributed.resolve_device] gives each process its own GPU,
[`setup`][chexviz.training.distributed.setup] joins the process group (NCCL on GPUs, Gloo on CPU
or when processes share a GPU) and the other helpers do the collective work the trainer and the
study script need: gathering evaluation outputs in dataset order, keeping buffers identical
across processes, and letting rank 0 prepare shared files while the others wait
([`main_process_first`][chexviz.training.distributed.main_process_first]).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "DistributedContext",
    "broadcast_buffers",
    "detect",
    "gather_objects",
    "gather_rows",
    "main_process_first",
    "resolve_device",
    "setup",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: Global rank of this process.
        world_size: Number of processes.
        local_rank: Rank on this machine (picks the GPU).
        local_world_size: Number of processes on this machine.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

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
    # Without LOCAL_WORLD_SIZE (a launcher other than torchrun) all processes are taken to be
    # on this machine, the safe guess when deciding whether they must share GPUs.
    local_world_size = _env_int(env, "LOCAL_WORLD_SIZE", world_size)
    if (
        world_size < 1
        or not 0 <= rank < world_size
        or not 0 <= local_rank < max(local_world_size, 1)
        or not 1 <= local_world_size <= world_size
    ):
        raise ValueError(
            f"inconsistent distributed environment: RANK={rank}, WORLD_SIZE={world_size}, "
            f"LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_world_size}"
        )
    return DistributedContext(
        rank=rank, world_size=world_size, local_rank=local_rank, local_world_size=local_world_size
    )


def resolve_device(
    device: str | torch.device = "auto", context: DistributedContext | None = None
) -> torch.device:
    """The device this process computes on; a GPU is also made the current CUDA device.

    * ``"auto"``: this process's GPU when CUDA is available, else the CPU.
    * ``"cuda"`` (no index): under ``torchrun``, GPU ``local_rank`` (modulo the number of GPUs
      when there are more processes than GPUs on the machine); in a single process, the current
      CUDA device.
    * ``"cuda:N"``, ``"cpu"``, ...: that device.

    Making the GPU current matters: NCCL, pinned-memory copies and every ``.cuda()`` without an
    index use it, and with every process on GPU 0 a multi-GPU run fails or crawls.

    Args:
        device: The requested device.
        context: The distributed context; read from the environment when None.

    Returns:
        The device, with an index for CUDA.

    Raises:
        ValueError: If CUDA is requested but not available, or the index does not exist.
    """
    context = detect() if context is None else context
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type != "cuda":
        return resolved
    if not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available")
    count = torch.cuda.device_count()
    requested: int | None = resolved.index  # None for a bare "cuda" (torch's stubs say int)
    if requested is not None:
        index = requested
        if index >= count:
            raise ValueError(f"device={str(device)!r} but this machine has {count} CUDA devices")
    elif context.enabled:
        index = context.local_rank % count
    else:
        index = torch.cuda.current_device()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def _shares_gpus(context: DistributedContext) -> bool:
    """Whether this machine's processes train on fewer GPUs than there are processes.

    Decided from the GPUs this process can see. Processes that each see every GPU (torchrun's
    default) take GPU ``LOCAL_RANK % count``, and share one when there are more of them than
    GPUs. A process that sees exactly one GPU while ``CUDA_VISIBLE_DEVICES`` is set was given
    that GPU by its launcher (one per process), so it shares it with no one: NCCL. Launchers
    that hand several processes the same GPU that way say so with ``CHEXVIZ_SHARED_GPUS=1``.
    """
    if os.environ.get("CHEXVIZ_SHARED_GPUS") == "1":
        return True
    visible = torch.cuda.device_count()
    if visible == 1 and os.environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        return False
    return context.local_world_size > visible


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def setup(context: DistributedContext, device: torch.device) -> None:
    """Join the process group of a multi-process run (nothing to do for a single process).

    The backend is NCCL when each process has a GPU of its own, and Gloo on CPU or when
    processes share GPUs (NCCL refuses two ranks on one GPU; Gloo supports the all-reduce and
    broadcast DDP needs on CUDA tensors, slowly). NCCL is joined with ``device_id`` so that the
    communicator is bound to this process's GPU from the start. A group the caller already
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
    shared = device.type == "cuda" and _shares_gpus(context)
    backend = "nccl" if device.type == "cuda" and not shared else "gloo"
    if shared:
        logger.warning(
            "%d processes share %d GPU(s) on this machine; using the gloo backend (slow, for "
            "testing the multi-process path; CHEXVIZ_SHARED_GPUS=1 asks for it)",
            context.local_world_size,
            torch.cuda.device_count(),
        )
    options: dict[str, Any] = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(
        backend=backend, rank=context.rank, world_size=context.world_size, **options
    )
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
    if local.device.type != "cpu" and dist.get_backend() == "gloo":
        local = local.cpu()  # Gloo gathers CPU tensors only
    parts = [torch.empty_like(local) for _ in range(context.world_size)]
    dist.all_gather(parts, local.contiguous())
    return torch.stack(parts, dim=1).flatten(0, 1)[:total]


def gather_objects(value: Any, context: DistributedContext) -> list[Any]:
    """Every process's ``value``, in rank order (``[value]`` for a single process).

    Values travel pickled between the processes of one run (``all_gather_object``); nothing
    is written to or read from files.

    Args:
        value: A picklable value.
        context: The distributed context.

    Returns:
        One value per rank.
    """
    if not context.enabled:
        return [value]
    values: list[Any] = [None] * context.world_size
    dist.all_gather_object(values, value)
    return values


@contextlib.contextmanager
def main_process_first(context: DistributedContext) -> Iterator[None]:
    """Run a block on rank 0 first, then on the other ranks.

    For work whose result the ranks share through the file system, such as generating a data
    set or building the image cache: rank 0 does it while the others wait at a barrier, and
    they then find the files ready. Rank 0 reaches the barrier even when the block fails, so
    the other ranks are released (and run into the same error themselves) instead of waiting
    for ever.

    Args:
        context: The distributed context (a process group must be joined when it is enabled;
            see [`setup`][chexviz.training.distributed.setup]).

    Yields:
        Nothing; the block runs once on every rank.
    """
    if context.enabled and not context.is_main:
        dist.barrier()
    try:
        yield
    finally:
        if context.enabled and context.is_main:
            dist.barrier()


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
