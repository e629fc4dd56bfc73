"""Training, evaluation and prediction for `MultiLabelClassifier`.

The defaults are the reference study's settings: Adam, learning rate 2e-4, batch size 64, binary
cross-entropy and 15 epochs. The loss ignores ``nan`` targets (see
[`chexviz.training.losses`][chexviz.training.losses]).

On CPU with a fixed ``seed`` a run is deterministic, and a run stopped at any point (even by
``kill -9``) and continued with ``fit(..., resume=True)`` ends with exactly the same weights as an
uninterrupted one. On CUDA the trainer adds mixed precision, ``channels_last``, pinned memory,
fused optimizers, cuDNN autotuning, DataLoader workers and optional ``torch.compile``; none of
that changes CPU behaviour. Under ``torchrun`` the same script trains with
DistributedDataParallel (see [`chexviz.training.distributed`][chexviz.training.distributed]).

The training step never waits for the GPU: the loss is normalised on the device, its
statistics are copied to the host without blocking and read one step later, and a non-finite
loss is kept from updating the weights on the device (see ``Trainer._train_step``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, get_worker_info
from tqdm.auto import tqdm

from chexviz._internal.datasets import unwrap_subsets
from chexviz._internal.modules import eval_mode
from chexviz._internal.progress import format_duration, progress_logger
from chexviz._internal.system import usable_cpus
from chexviz.training import distributed
from chexviz.training.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    TrainingState,
    capture_rng,
    combine_rng,
    load_training_state,
    read_best_weights,
    restore_optimizer,
    restore_rng,
    save_best,
    save_training_state,
)
from chexviz.training.history import EpochRecord, History
from chexviz.training.losses import MaskedBCEWithLogitsLoss, masked_bce_sum, masked_bce_with_logits
from chexviz.training.metrics import (
    EvaluationPolicy,
    Metrics,
    compute_metrics,
    evaluation_targets,
)
from chexviz.training.thresholds import ThresholdMetric, tune_thresholds

if TYPE_CHECKING:
    from chexviz.models.classifier import MultiLabelClassifier

__all__ = ["AmpMode", "OptimizerFactory", "SchedulerFactory", "Trainer"]

logger = logging.getLogger(__name__)

AmpMode = Literal["auto", "bf16", "fp16", "off"]
"""Mixed precision: ``"auto"`` (bf16 on GPUs with native bf16, i.e. compute capability 8.0 or
newer, else fp16; off on CPU)."""

OptimizerFactory = Callable[[Any], torch.optim.Optimizer]
"""A callable taking ``model.parameters()`` and returning an optimizer."""

SchedulerFactory = Callable[[torch.optim.Optimizer], Any]
"""A callable taking the optimizer and returning an LR scheduler stepped once per epoch."""

_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULERS = ("cosine", "plateau")
# Batches each DataLoader worker keeps ready (torch's default is 2).
_PREFETCH = 4
# Inference keeps no activations for a backward pass, so a CUDA batch this many times the
# training batch fits in less memory than training used, with fewer, fuller kernel launches.
_INFERENCE_BATCH_FACTOR = 4
# DataLoader workers per process at most, when the trainer picks the number.
_MAX_AUTO_WORKERS = 8


class _SizedDataset(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


@dataclass
class _EpochTotals:
    """Running sums of one training epoch (checkpointed mid-epoch to resume exactly)."""

    loss_sum: float = 0.0
    steps: int = 0
    images: int = 0
    seconds: float = 0.0


class _SeededBatch(list[int]):
    """The dataset indices of one batch, with the seed its DataLoader worker loads it under."""

    seed: int | None = None


class _EpochBatches(Sampler[list[int]]):
    """One process's batches of the current epoch, for a DataLoader built once per ``fit``.

    ``set_epoch`` moves it on to the next epoch (skipping the batches a resumed run has already
    done), so the loader and its persistent workers live for the whole run. Every batch carries
    a seed derived from the run's seed, the epoch, the rank and the batch number; workers
    reseed their generators with it (see `_WorkerSeeded`), so random transforms in workers
    depend neither on which worker loads a batch nor on how long the workers have lived, and a
    run resumed in the middle of an epoch replays them exactly.
    """

    def __init__(
        self,
        sampler: DistributedSampler[int],
        batch_size: int,
        *,
        drop_last: bool,
        seed: int,
        rank: int,
    ) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Serve epoch ``epoch``'s batches from batch number ``skip`` (counted from 0) on."""
        self.sampler.set_epoch(epoch)
        self.epoch, self.skip = epoch, skip

    def _batch_count(self) -> int:
        items = len(self.sampler)
        return items // self.batch_size if self.drop_last else -(-items // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        indices = list(self.sampler)
        for number in range(self.skip, self._batch_count()):
            batch = _SeededBatch(indices[number * self.batch_size : (number + 1) * self.batch_size])
            batch.seed = _derived_seed(self.seed, self.epoch, self.rank, number)
            yield batch

    def __len__(self) -> int:
        return max(self._batch_count() - self.skip, 0)


class _WorkerSeeded(Dataset[Any]):
    """A dataset view whose DataLoader workers reseed torch, NumPy and Python per batch.

    In the main process (``num_workers=0``) nothing is reseeded: there transforms draw from the
    process's own generators, which checkpoints save and restore.
    """

    def __init__(self, dataset: _SizedDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        seed = getattr(indices, "seed", None)
        if seed is not None and get_worker_info() is not None:
            _seed_everything(seed)
        fetch = getattr(self.dataset, "__getitems__", None)
        return list(fetch(indices)) if fetch is not None else [self.dataset[i] for i in indices]


class _StepStats:
    """Reads each training step's statistics on the host without making the host wait.

    A step's statistics are copied into pinned host memory by a non-blocking copy queued
    behind the step, and an event marks when they have arrived. They are read one step later:
    by then the next step is queued, so the GPU always has work while the host waits for the
    event, which is normally long past anyway. On the CPU the values are ready at once
    (``lag=0``).
    """

    def __init__(self, device: torch.device, lag: int) -> None:
        self._cuda = device.type == "cuda"
        self._lag = lag
        self._pending: collections.deque[tuple[int, Tensor, Any]] = collections.deque()

    def push(self, step: int, stats: Tensor) -> list[tuple[int, list[float]]]:
        """Queue ``stats`` of step ``step``; returns the steps whose statistics are now read."""
        if self._cuda:
            host = torch.empty(stats.shape, dtype=stats.dtype, pin_memory=True)
            host.copy_(stats, non_blocking=True)
            event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            event.record()
            self._pending.append((step, host, event))
        else:
            self._pending.append((step, stats, None))
        return self._read(keep=self._lag)

    def drain(self) -> list[tuple[int, list[float]]]:
        """Read every queued step (waits for the GPU to finish them)."""
        return self._read(keep=0)

    def _read(self, keep: int) -> list[tuple[int, list[float]]]:
        done = []
        while len(self._pending) > keep:
            step, host, event = self._pending.popleft()
            if event is not None:
                event.synchronize()
            done.append((step, host.tolist()))
        return done


def _seed_worker(worker_id: int) -> None:
    # A terminal's Ctrl-C reaches the workers too. Only the main process may act on it (finish
    # the step, checkpoint, then shut the workers down); a worker that stopped on it would end
    # the run with "DataLoader worker exited unexpectedly" and no checkpoint.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # torch seeds each worker from the loader's generator; NumPy and random follow it so that
    # transforms using them are reproducible too.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 (the global generator is what user transforms draw from)
    random.seed(seed)


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global generator is what user code draws from)
    torch.manual_seed(seed)


def _close(loader: DataLoader[Any]) -> None:
    """Stop a loader's persistent workers now rather than whenever the loader is collected."""
    # DataLoader has no public close(); its persistent iterator owns the worker processes.
    iterator = getattr(loader, "_iterator", None)
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device`` (None: no mixed precision)."""
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or 'off', got {amp!r}")
    if device.type != "cuda":
        if amp in ("bf16", "fp16"):
            raise ValueError(f"amp={amp!r} needs a CUDA device; use 'auto' or 'off' on CPU")
        return None
    # torch.cuda.is_bf16_supported() also says yes where bf16 is only emulated (before
    # Ampere), which is slower than fp32; the compute capability tells native support.
    native_bf16 = torch.cuda.get_device_capability(device) >= (8, 0)
    if amp == "auto":
        return torch.bfloat16 if native_bf16 else torch.float16
    if amp == "bf16" and not native_bf16:
        logger.warning("amp='bf16' on a GPU without native bf16 is emulated and slow")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


def _dataset_labels(dataset: object) -> tuple[str, ...] | None:
    labels = getattr(unwrap_subsets(dataset)[0], "labels", None)
    return tuple(labels) if labels is not None else None


def _split_batch(batch: Any) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (list, tuple)) and len(batch) >= 1:
        return batch[0], batch[1] if len(batch) > 1 else None
    raise TypeError(
        f"a dataset item must be an image tensor or an (image, target) pair, got {type(batch)}"
    )


class Trainer:
    """Train and evaluate a multi-label classifier.

    The model is moved to the device (and to ``channels_last`` on CUDA) when the trainer is
    built; under ``torchrun`` the process group is joined then too.

    Args:
        model: The classifier.
        lr: Learning rate.
        batch_size: Images per optimizer step, over all processes (each of ``N`` data-parallel
            processes takes ``batch_size / N``).
        epochs: Total number of epochs (a resumed run continues up to this count).
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9) or a callable
            ``params -> Optimizer``.
        weight_decay: Weight decay of the named optimizers.
        device: ``"auto"`` (the process's CUDA device if available, else CPU) or a device;
            under ``torchrun`` a bare ``"cuda"`` is the local rank's GPU (see
            [`resolve_device`][chexviz.training.distributed.resolve_device]).
        amp: Mixed precision on CUDA: ``"auto"``, ``"bf16"``, ``"fp16"`` (with gradient
            scaling) or ``"off"``. ``"auto"`` is bf16 on GPUs of compute capability 8.0 or
            newer (Ampere, Hopper...), fp16 on older ones (where bf16 is only emulated), and
            off on CPU.
        num_workers: DataLoader worker processes per process; None picks 0 on CPU and, on
            CUDA, the CPUs available to each process of this machine less one (for the
            training loop), at most 8. Workers persist for the whole ``fit``.
        out_dir: Where ``last.safetensors`` (every epoch) and ``best.safetensors`` (best
            validation macro-AUROC) go; None writes nothing.
        seed: Seed of torch, NumPy, Python and the data order; ``fit`` seeds them at its start.
        patience: Stop after this many epochs without a better validation macro-AUROC; None
            never stops early.
        scheduler: None, ``"cosine"`` (cosine annealing over ``epochs``), ``"plateau"`` (halve
            the LR after 2 epochs without improvement of validation macro-AUROC) or a callable
            ``optimizer -> scheduler``; stepped once per epoch.
        pos_weight: Positive-class weight per label for the loss (see
            [`pos_weight_from_targets`][chexviz.training.losses.pos_weight_from_targets]).
        threshold_metric: After each epoch, tune per-label thresholds on the validation set
            maximising ``"f1"`` or ``"youden"`` and store them on the model; None keeps the
            model's thresholds.
        progress: Show tqdm bars (only ever on an interactive terminal, on rank 0).
        compile: Run the training forward pass through ``torch.compile`` (CUDA only), with
            static shapes; the short last batch of each epoch is then left out, as a new batch
            size would recompile the model.
        checkpoint_every: Also write ``last`` every this many optimizer steps (None: only at
            epoch ends).
        sync_bn: Under ``torchrun`` on GPUs, turn the model's BatchNorm layers into
            ``SyncBatchNorm`` (in place), so that batch statistics are computed over the global
            batch as in a single-process run; ignored with a warning on CPU.

    Raises:
        ValueError: If an argument is invalid (the message names it).
    """

    def __init__(
        self,
        model: MultiLabelClassifier,
        *,
        lr: float = 2e-4,
        batch_size: int = 64,
        epochs: int = 15,
        optimizer: str | OptimizerFactory = "adam",
        weight_decay: float = 0.0,
        device: str | torch.device = "auto",
        amp: AmpMode = "auto",
        num_workers: int | None = None,
        out_dir: str | Path | None = None,
        seed: int = 0,
        patience: int | None = None,
        scheduler: str | SchedulerFactory | None = None,
        pos_weight: Sequence[float] | np.ndarray | Tensor | None = None,
        threshold_metric: ThresholdMetric | None = "f1",
        progress: bool = True,
        compile: bool = False,
        checkpoint_every: int | None = None,
        sync_bn: bool = False,
    ) -> None:
        self._check_arguments(
            lr=lr,
            batch_size=batch_size,
            epochs=epochs,
            weight_decay=weight_decay,
            num_workers=num_workers,
            patience=patience,
            threshold_metric=threshold_metric,
            checkpoint_every=checkpoint_every,
        )
        self.model = model
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.seed = seed
        self.patience = patience
        self.threshold_metric = threshold_metric
        self.progress = progress
        self.checkpoint_every = checkpoint_every
        self.history = History()
        self._interrupted = False  # set by the first Ctrl-C during fit
        # Loaders that live for one fit (validation), by the id of their dataset.
        self._kept_loaders: dict[int, tuple[_SizedDataset, DataLoader[Any]]] = {}

        self.context = distributed.detect()
        if batch_size % self.context.world_size:
            raise ValueError(
                f"batch_size={batch_size} must be divisible by the number of processes "
                f"({self.context.world_size})"
            )
        self.device = distributed.resolve_device(device, self.context)
        self._cuda = self.device.type == "cuda"
        self.amp_dtype = _amp_dtype(amp, self.device)
        self.num_workers = self._default_workers() if num_workers is None else num_workers
        distributed.setup(self.context, self.device)

        model.to(self.device)
        if self._cuda:
            model.to(memory_format=torch.channels_last)
            self._enable_cudnn_autotuning()
        if sync_bn:
            self._convert_sync_bn()
        self.loss_fn = MaskedBCEWithLogitsLoss(pos_weight).to(self.device)
        if self.loss_fn.pos_weight is not None and len(self.loss_fn.pos_weight) != model.num_labels:
            raise ValueError(
                f"pos_weight has {len(self.loss_fn.pos_weight)} values but the model has "
                f"{model.num_labels} outputs"
            )
        self.optimizer = self._build_optimizer(optimizer, weight_decay)
        self.scheduler = self._build_scheduler(scheduler)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

        network: nn.Module = model
        if self.context.enabled:
            network = DistributedDataParallel(
                model, device_ids=[self.device.index] if self._cuda else None
            )
        self._compiled = compile and self._cuda
        if self._compiled:
            # Static shapes: one graph for the training batch (the short last batch is dropped).
            network = torch.compile(network, dynamic=False)  # type: ignore[assignment]
        elif compile:
            logger.warning("compile=True is ignored on CPU (compilation is CUDA-only here)")
        self._network = network
        # Device-side flags of the step loop (see _train_step), made at the start of fit.
        self._stop_flag = torch.zeros((), device=self.device)
        self._stop_flag_set = False
        self._skip = torch.zeros((), device=self.device)
        # Steps between queuing a step and reading its statistics back (see _StepStats).
        self._stats_lag = 1 if self._cuda else 0

    # ------------------------------------------------------------------ set-up helpers
    @staticmethod
    def _check_arguments(
        *,
        lr: float,
        batch_size: int,
        epochs: int,
        weight_decay: float,
        num_workers: int | None,
        patience: int | None,
        threshold_metric: str | None,
        checkpoint_every: int | None,
    ) -> None:
        positive_ints = {"batch_size": batch_size, "epochs": epochs}
        optional_ints = {"patience": patience, "checkpoint_every": checkpoint_every}
        for name, value in {**positive_ints, **optional_ints}.items():
            if value is None and name in optional_ints:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if num_workers is not None and (
            isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0
        ):
            raise ValueError(
                f"num_workers must be a non-negative integer or None, got {num_workers!r}"
            )
        if threshold_metric not in (None, "f1", "youden"):
            raise ValueError(
                f"threshold_metric must be 'f1', 'youden' or None, got {threshold_metric!r}"
            )

    def _default_workers(self) -> int:
        if not self._cuda:
            return 0
        # One CPU per process stays with the training loop (and the pinning thread).
        per_process = usable_cpus() // self.context.local_world_size
        return max(0, min(_MAX_AUTO_WORKERS, per_process - 1))

    def _enable_cudnn_autotuning(self) -> None:
        # Input sizes are fixed, so timing cuDNN's algorithms once per shape pays off; it is
        # left alone when the user asked for deterministic kernels.
        if torch.backends.cudnn.deterministic or torch.are_deterministic_algorithms_enabled():
            return
        torch.backends.cudnn.benchmark = True

    def _convert_sync_bn(self) -> None:
        if not self.context.enabled:
            return  # one process: BatchNorm already sees the whole batch
        if not self._cuda:
            logger.warning("sync_bn=True is ignored on CPU (SyncBatchNorm runs on GPUs only)")
            return
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)  # type: ignore[no-untyped-call]
        assert converted is self.model  # the classifier itself is not a BatchNorm layer

    def _build_optimizer(
        self, optimizer: str | OptimizerFactory, weight_decay: float
    ) -> torch.optim.Optimizer:
        params = self.model.parameters()
        if callable(optimizer):
            return optimizer(params)
        # Fused kernels on CUDA: one launch per step for all parameters, and a device-side
        # skip of non-finite steps (see _backward_step). CPU keeps torch's default kernels.
        fused: dict[str, Any] = {"fused": True} if self._cuda else {}
        if optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=weight_decay, **fused)
        if optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=weight_decay, **fused)
        if optimizer == "sgd":
            sgd = torch.optim.SGD(
                params, lr=self.lr, momentum=0.9, weight_decay=weight_decay, **fused
            )
            # A first step skipped on the device (fp16's scaler seeing an overflow, or a
            # non-finite loss in any precision) would leave fused SGD's momentum buffer as
            # torch.empty_like's garbage for every later step and the checkpoint. Zero buffers
            # from the start give the same first step (dampening 0: 0.9 * 0 + grad = grad).
            for group in sgd.param_groups:
                for param in group["params"]:
                    sgd.state[param]["momentum_buffer"] = torch.zeros_like(param)
            return sgd
        raise ValueError(
            f"optimizer must be one of {', '.join(_OPTIMIZERS)} or a callable, got {optimizer!r}"
        )

    def _build_scheduler(self, scheduler: str | SchedulerFactory | None) -> Any:
        if scheduler is None:
            return None
        if callable(scheduler):
            return scheduler(self.optimizer)
        if scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.epochs)
        if scheduler == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max", factor=0.5, patience=1
            )
        raise ValueError(
            f"scheduler must be one of {', '.join(_SCHEDULERS)}, a callable or None, "
            f"got {scheduler!r}"
        )

    # ------------------------------------------------------------------ small utilities
    def _info(self, message: str, *args: object) -> None:
        if self.context.is_main:
            logger.info(message, *args)

    def _show_progress(self) -> bool:
        return self.progress and self.context.is_main and sys.stderr.isatty()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _to_device(self, images: Tensor) -> Tensor:
        if self._cuda:
            return images.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        return images.to(self.device)

    def _targets_to_device(self, targets: Tensor) -> Tensor:
        # Copy first, convert on the device: a dtype conversion on the host would make a
        # pageable tensor, and copying pageable memory waits for the GPU.
        return targets.to(self.device, non_blocking=True).to(torch.float32)

    def _per_rank_batch(self) -> int:
        return self.batch_size // self.context.world_size

    def _sampler(self, dataset: _SizedDataset, *, shuffle: bool) -> DistributedSampler[int]:
        # One sampler type for one and many processes: the data order then depends on the seed
        # and epoch only, which is what makes resuming exact.
        return DistributedSampler(
            dataset,  # type: ignore[arg-type]
            num_replicas=self.context.world_size,
            rank=self.context.rank,
            shuffle=shuffle,
            seed=self.seed,
        )

    def _loader(
        self, dataset: _SizedDataset, batches: _EpochBatches, *, persistent: bool
    ) -> DataLoader[Any]:
        workers = self.num_workers
        # The loader's own generator seeds its workers; without one it would draw from (and so
        # change) the global generator, which a checkpoint restores.
        generator = torch.Generator().manual_seed(_derived_seed(self.seed, self.context.rank))
        options: dict[str, Any] = (
            {"persistent_workers": persistent, "prefetch_factor": _PREFETCH} if workers else {}
        )
        return DataLoader(
            _WorkerSeeded(dataset),
            batch_sampler=batches,
            num_workers=workers,
            pin_memory=self._cuda,
            generator=generator,
            worker_init_fn=_seed_worker,
            **options,
        )

    def _train_loader(self, train: _SizedDataset) -> DataLoader[Any]:
        """The training loader of a whole ``fit``; ``loader.batch_sampler.set_epoch`` moves it."""
        per_rank = self._per_rank_batch()
        sampler = self._sampler(train, shuffle=True)
        short = len(sampler) % per_rank
        # BatchNorm cannot train on a batch of one image, and a compiled model would recompile
        # for a new batch size: such a last batch is left out.
        drop_last = (short == 1 and len(sampler) > 1) or (short > 0 and self._compiled)
        if drop_last and len(sampler) >= per_rank:
            self._info("the last batch of each epoch (%d images) is skipped", short)
        else:
            drop_last = False
        batches = _EpochBatches(
            sampler, per_rank, drop_last=drop_last, seed=self.seed, rank=self.context.rank
        )
        return self._loader(train, batches, persistent=True)

    def _inference_loader(self, dataset: _SizedDataset, *, persistent: bool) -> DataLoader[Any]:
        factor = _INFERENCE_BATCH_FACTOR if self._cuda else 1
        batches = _EpochBatches(
            self._sampler(dataset, shuffle=False),
            self._per_rank_batch() * factor,
            drop_last=False,
            seed=self.seed,
            rank=self.context.rank,
        )
        return self._loader(dataset, batches, persistent=persistent)

    def _check_dataset(self, dataset: _SizedDataset, name: str) -> None:
        if len(dataset) == 0:
            raise ValueError(f"the {name} dataset is empty")
        labels = _dataset_labels(dataset)
        if labels is not None and labels != self.model.labels:
            raise ValueError(
                f"the {name} dataset's labels {list(labels)} differ from the model's "
                f"{list(self.model.labels)} (count or order)"
            )
        _, target = _split_batch(dataset[0])
        if target is None:
            raise ValueError(f"the {name} dataset yields no targets; items must be (image, target)")
        count = int(torch.as_tensor(target).shape[-1])
        if count != self.model.num_labels:
            raise ValueError(
                f"the {name} dataset yields targets with {count} labels but the model has "
                f"{self.model.num_labels} outputs"
            )

    def _prepare_out_dir(self) -> None:
        if self.out_dir is None or not self.context.is_main:
            return
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            probe = self.out_dir / f".write-test-{id(self)}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ValueError(f"out_dir {self.out_dir} is not a writable directory: {exc}") from exc

    # ------------------------------------------------------------------ inference
    def _infer(self, dataset: _SizedDataset) -> tuple[Tensor, Tensor | None]:
        """Logits ``[N, L]`` (float32, CPU) and targets (or None), in dataset order.

        Always in full precision: mixed precision is for training. bf16 logits round
        probabilities to about three digits, and the ties they create move AUROC and the
        tuned thresholds.
        """
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        kept = self._kept_loaders.get(id(dataset))
        if kept is not None and kept[0] is dataset:
            loader = kept[1]  # built once per fit (the validation set)
        else:
            loader = self._inference_loader(dataset, persistent=False)
        logits: list[Tensor] = []
        targets: list[Tensor] = []
        with eval_mode(self.model), torch.inference_mode():
            for batch in loader:
                images, target = _split_batch(batch)
                logits.append(self.model(self._to_device(images)).float())
                if target is not None:
                    targets.append(target.to(self.device, torch.float32))
        total = len(dataset)
        all_logits = distributed.gather_rows(torch.cat(logits), total, self.context).cpu()
        if not targets:
            return all_logits, None
        all_targets = distributed.gather_rows(torch.cat(targets), total, self.context).cpu()
        return all_logits, all_targets

    def predict(self, dataset: _SizedDataset) -> np.ndarray:
        """Predict probabilities for every item of a dataset, in order.

        Items may be images or ``(image, target)`` pairs.

        Args:
            dataset: The dataset.

        Returns:
            Probabilities ``[N, L]`` as float32.

        Raises:
            ValueError: If the dataset is empty.
        """
        logits, _ = self._infer(dataset)
        return torch.sigmoid(logits).cpu().numpy()

    @staticmethod
    def _answer_key(dataset: _SizedDataset, yielded: Tensor, uncertain: EvaluationPolicy) -> Tensor:
        """The targets to score against: fixed by the raw labels, not the training policy."""
        key = evaluation_targets(dataset, uncertain=uncertain)
        if key is not None:
            return torch.from_numpy(key)
        if uncertain == "exclude":
            raise ValueError(
                "uncertain='exclude' needs the raw label cells (a dataset with .raw_labels, "
                "such as CheXpertDataset); this dataset only yields targets"
            )
        return yielded

    def _metrics(self, logits: Tensor, targets: Tensor) -> Metrics:
        if targets.shape != logits.shape:
            raise ValueError(
                f"targets have shape {tuple(targets.shape)} but the model outputs "
                f"{tuple(logits.shape)}"
            )
        # Outputs were gathered to the CPU; the loss's pos_weight lives on the training device.
        weight = self.loss_fn.pos_weight
        loss = masked_bce_with_logits(logits, targets, None if weight is None else weight.cpu())
        return compute_metrics(
            torch.sigmoid(logits).cpu().numpy(),
            targets.cpu().numpy(),
            self.model.thresholds.cpu().numpy(),
            self.model.labels,
            loss=loss.item(),
        )

    def evaluate(
        self, dataset: _SizedDataset, *, uncertain: EvaluationPolicy = "negative"
    ) -> Metrics:
        """Compute metrics of the model on a labelled dataset at the model's thresholds.

        The answer key does not depend on the policy the dataset was built with: for a dataset
        that keeps its raw label cells (``raw_labels``, as
        [`CheXpertDataset`][chexviz.data.dataset.CheXpertDataset] does, also through
        ``Subset``s) it is [`evaluation_targets`][chexviz.training.metrics.evaluation_targets]
        (positive 1, negative and blank 0, uncertain as ``uncertain`` says), so a model trained
        with U-Ones and one trained with U-Zeros are scored on the same answers. Other datasets
        are scored on the targets they yield.

        Args:
            dataset: Items ``(image, target)``.
            uncertain: ``"negative"`` (uncertain labels count as negative, the reference
                study's choice) or ``"exclude"`` (left out of their label's metrics).

        Returns:
            The metrics (its ``loss`` is the masked BCE with this trainer's ``pos_weight``).

        Raises:
            ValueError: If the dataset is empty, has no targets, its label count differs from
                the model's, or ``uncertain="exclude"`` for a dataset without raw labels.
        """
        self._check_dataset(dataset, "evaluation")
        logits, targets = self._infer(dataset)
        assert targets is not None  # _check_dataset guarantees (image, target) items
        return self._metrics(logits, self._answer_key(dataset, targets, uncertain))

    def _validate(self, dataset: _SizedDataset) -> Metrics:
        logits, yielded = self._infer(dataset)
        assert yielded is not None
        # Model selection and thresholds follow the same answer key as the final evaluation.
        targets = self._answer_key(dataset, yielded, "negative")
        if self.threshold_metric is not None:
            tuned = tune_thresholds(
                torch.sigmoid(logits).cpu().numpy(),
                targets.cpu().numpy(),
                metric=self.threshold_metric,
                default=self.model.thresholds.cpu().numpy(),
                labels=self.model.labels,
            )
            self.model.set_thresholds(torch.from_numpy(tuned))
        return self._metrics(logits, targets)

    # ------------------------------------------------------------------ training
    def _process_seed(self) -> int:
        """This process's seed: ``seed`` on rank 0 (and in a single process), else derived.

        Other ranks derive theirs from ``seed`` and the rank, so that ranks draw different
        dropout masks and augmentations.
        """
        rank = self.context.rank
        return self.seed if rank == 0 else _derived_seed(self.seed, rank)

    def _fresh_state(self) -> TrainingState:
        _seed_everything(self._process_seed())
        return TrainingState(
            epoch=0,
            step=0,
            history=History(),
            best_score=-math.inf,
            bad_epochs=0,
            optimizer={},
            settings=self._settings(),
        )

    def _settings(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "seed": self.seed,
            "world_size": self.context.world_size,
            "lr": self.lr,
        }

    def _resume_state(self) -> TrainingState | None:
        assert self.out_dir is not None
        last = self.out_dir / LAST_NAME
        if not last.is_file():
            self._info("resume=True but %s does not exist; starting from scratch", last)
            return None
        state = load_training_state(last, self.model)
        restore_optimizer(self.optimizer, state.optimizer)
        if self.scheduler is not None and state.scheduler is not None:
            self.scheduler.load_state_dict(state.scheduler)
        if self.scaler is not None and state.scaler is not None:
            self.scaler.load_state_dict(state.scaler)
        if not restore_rng(state.rng_tensors, state.rng_json, rank=self.context.rank):
            logger.warning(
                "%s holds no random generator states for rank %d (written by fewer processes); "
                "this rank starts from fresh ones",
                last,
                self.context.rank,
            )
            _seed_everything(_derived_seed(self._process_seed(), state.epoch, state.step))
        if state.settings != self._settings():
            logger.warning(
                "resuming with settings %s that differ from the checkpoint's %s; the run will "
                "not match an uninterrupted one",
                self._settings(),
                state.settings,
            )
        self._info("resumed from %s at epoch %d, step %d", last, state.epoch + 1, state.step)
        return state

    def _checkpoint(self, state: TrainingState, totals: _EpochTotals | None) -> None:
        """Write ``last`` (rank 0) with the current weights, optimizer and every rank's RNG.

        Collective under ``torchrun``: every rank sends its generator states to rank 0.
        """
        if self.out_dir is None:
            return
        rng = distributed.gather_objects(capture_rng(), self.context)
        if not self.context.is_main:
            return
        state.optimizer = self.optimizer.state_dict()
        state.scheduler = self.scheduler.state_dict() if self.scheduler is not None else None
        state.scaler = self.scaler.state_dict() if self.scaler is not None else None
        state.partial = vars(totals).copy() if totals is not None else {}
        state.rng_tensors, state.rng_json = combine_rng(rng)
        save_training_state(self.out_dir / LAST_NAME, self.model, state)

    def _train_epoch(
        self, loader: DataLoader[Any], state: TrainingState, epoch: int
    ) -> _EpochTotals:
        start = state.step
        batches = loader.batch_sampler
        assert isinstance(batches, _EpochBatches)
        batches.set_epoch(epoch, skip=start)  # skips the batches a resumed run has done
        totals = _EpochTotals(**state.partial) if start else _EpochTotals()
        steps_in_epoch = start + len(loader)
        stats = _StepStats(self.device, self._stats_lag)
        began = time.perf_counter()
        shown = math.nan  # the latest loss read back, for the progress bar

        def account(done: list[tuple[int, list[float]]]) -> bool:
            """Add read-back steps to the totals; whether any asked every process to stop."""
            nonlocal shown
            stop = False
            for step, (total, count, flag) in done:
                shown = total / max(count, 1.0)
                if not math.isfinite(shown):
                    self._raise_non_finite(shown, epoch, step, steps_in_epoch)
                totals.loss_sum += shown
                stop = stop or flag > 0
            return stop

        def save_partial(step: int) -> None:
            # Every step up to ``step`` is complete, so that is what the checkpoint holds.
            account(stats.drain())
            state.step = step
            saved = _EpochTotals(**vars(totals))
            saved.seconds += time.perf_counter() - began
            self._checkpoint(state, saved)

        def save_and_stop(error: Exception) -> NoReturn:
            save_partial(totals.steps)
            if totals.steps:
                raise self._interrupt_error(epoch, totals.steps) from error
            raise self._interrupt_error(epoch - 1, 0) from error

        self._network.train()
        bar = tqdm(
            total=steps_in_epoch,
            initial=start,
            desc=f"epoch {epoch}/{self.epochs}",
            unit="batch",
            disable=not self._show_progress(),
            leave=False,
        )
        with bar:
            for step, batch in enumerate(self._batches(loader, save_and_stop), start=start + 1):
                images, targets = _split_batch(batch)
                if targets is None:
                    raise ValueError("the train dataset yields no targets")
                step_stats = self._train_step(images, targets, epoch, step)
                totals.steps += 1
                totals.images += int(images.shape[0]) * self.context.world_size
                asked = account(stats.push(step, step_stats))
                # Under torchrun the ranks stop at the step where the all-reduced flag is read
                # back, the same on every rank; a single process can act on its own flag.
                stop = asked if self.context.enabled else self._interrupted
                if not bar.disable:
                    elapsed = totals.seconds + time.perf_counter() - began
                    bar.set_postfix(loss=f"{shown:.4f}", img_s=f"{totals.images / elapsed:.1f}")
                    bar.update()
                # The epoch-end checkpoint follows the last step, so it is not written twice.
                every = self.checkpoint_every
                if stop or (every and step % every == 0 and step < steps_in_epoch):
                    save_partial(step)
                if stop:
                    raise self._interrupt_error(epoch, step)
            account(stats.drain())
        totals.seconds += time.perf_counter() - began
        return totals

    def _train_step(self, images: Tensor, targets: Tensor, epoch: int, step: int) -> Tensor:
        """Queue one optimizer step on the device; nothing here waits for the GPU.

        Returns the step's statistics ``[loss sum, valid entries, stop flag]`` summed over
        processes, still on the device; the caller reads them back later (`_StepStats`).

        Instead of reading the loss before deciding to update, a non-finite global loss sets a
        device-side flag that is never cleared during ``fit`` and that skips this and every
        later update (see `_backward_step`); the host raises ``FloatingPointError`` when it
        reads the statistics back, at the latest before the next checkpoint, so the weights
        stay those of the last finite step.

        Raises:
            ValueError: A target is not 0, 1 or nan (checked on the host copy of the batch).
        """
        self._check_targets(targets, epoch, step)
        if self._interrupted and not self._stop_flag_set:
            self._stop_flag.fill_(1.0)  # once per fit: no host-to-device copy per step
            self._stop_flag_set = True
        with self._autocast():
            logits = self._network(self._to_device(images))
        total, count = masked_bce_sum(
            logits.float(), self._targets_to_device(targets), self.loss_fn.pos_weight
        )
        # Summing over processes before dividing makes the loss (and so the averaged gradient)
        # the mean over the global batch's valid entries. The stop flag rides along so that
        # every process stops at the same step.
        stats = torch.stack([total.detach(), count, self._stop_flag])
        if self.context.enabled:
            torch.distributed.all_reduce(stats)
        self._skip = torch.maximum(self._skip, (~torch.isfinite(stats[0])).float())
        world = float(self.context.world_size)
        self._backward_step(total * world / stats[1].clamp(min=1.0), self._skip)
        return stats

    def _backward_step(self, loss: Tensor, skip: Tensor) -> None:
        """Backward and optimizer step, through the gradient scaler under fp16.

        The one place that knows about mixed precision in the update, like ``accelerate``'s
        ``Accelerator.backward``. The update is skipped when ``skip`` (a device scalar) is 1:

        * fused optimizers (the default on CUDA) take it as their ``found_inf`` input, the
          protocol ``GradScaler`` uses, and skip on the device;
        * under fp16 the loss is multiplied by nan, so that every gradient is nan and the
          scaler's own check skips the update (and backs off its scale, which does not matter
          as the run stops);
        * any other optimizer has no device-side skip: the flag is read on the host after the
          backward pass is queued (on CPU this costs nothing).
        """
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            poisoned = loss * torch.where(skip > 0, math.nan, 1.0)
            torch.autograd.backward(self.scaler.scale(poisoned))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return
        torch.autograd.backward(loss)
        # torch's fused optimizers set this flag; GradScaler relies on it in the same way.
        if getattr(self.optimizer, "_step_supports_amp_scaling", False):
            self.optimizer.found_inf = skip  # type: ignore[attr-defined]
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf  # type: ignore[attr-defined]
        elif not bool(skip):
            self.optimizer.step()

    def _batches(
        self, loader: DataLoader[Any], stop: Callable[[Exception], NoReturn]
    ) -> Iterator[Any]:
        """The loader's batches; if the loader fails after a Ctrl-C, ``stop`` takes over."""
        batches = iter(loader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as error:
                # Ctrl-C also reaches the DataLoader workers; one still starting up (spawn or
                # forkserver) dies of it before it can ignore it, and the loader fails.
                if not self._interrupted or self.context.enabled:
                    raise
                stop(error)
            yield batch

    @staticmethod
    def _check_targets(targets: Tensor, epoch: int, step: int) -> None:
        bad = ~(torch.isnan(targets) | (targets == 0) | (targets == 1))
        if bool(bad.any()):
            value = targets[bad][0].item()
            raise ValueError(
                f"a training target is {value!r} at epoch {epoch}, step {step}; targets must be "
                "0, 1 or nan"
            )

    def _raise_non_finite(self, value: float, epoch: int, step: int, steps: int) -> None:
        if self.out_dir is None:
            kept = "no checkpoint (out_dir=None)"
        elif (self.out_dir / LAST_NAME).is_file():
            kept = f"the last good checkpoint is {self.out_dir / LAST_NAME}"
        else:
            kept = "no checkpoint was written yet"
        raise FloatingPointError(
            f"training loss is {value} at epoch {epoch}, step {step} of {steps}; stopped before "
            f"updating the weights ({kept}). Lower lr, check the inputs for nan/inf or use "
            "amp='off'."
        )

    def _step_scheduler(self, metrics: Metrics | None) -> None:
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            assert metrics is not None  # fit() rejects "plateau" without validation
            self.scheduler.step(metrics.macro_auroc)
        else:
            self.scheduler.step()

    def fit(
        self, train: _SizedDataset, val: _SizedDataset | None = None, *, resume: bool = False
    ) -> History:
        """Train for ``epochs`` epochs, validating, checkpointing and tuning thresholds.

        After each epoch: validation metrics (at thresholds tuned on the validation set when
        ``threshold_metric`` is set), an LR scheduler step, ``best.safetensors`` when the
        validation macro-AUROC improved, and ``last.safetensors``. When training ends (all
        epochs done or early stop) the model holds the best epoch's weights and thresholds (the
        last epoch's without a validation set).

        The first Ctrl-C (SIGINT) lets the current step finish, writes ``last`` for it and then
        raises ``KeyboardInterrupt``; ``resume=True`` continues exactly from there. A second
        Ctrl-C stops at once.

        Args:
            train: Items ``(image, target)``, targets in ``{0, 1, nan}``.
            val: Validation items, or None (no metrics, no ``best``, no early stopping).
            resume: Continue from ``out_dir/last.safetensors`` (starts fresh, with a log line,
                when it does not exist).

        Returns:
            The history of all epochs (including those before a resume).

        Raises:
            ValueError: On an empty dataset, a label-count mismatch, an unwritable
                ``out_dir``, ``resume`` without ``out_dir`` or ``"plateau"`` without ``val``.
            FloatingPointError: If the training loss becomes nan or inf (names epoch and step).
            KeyboardInterrupt: After Ctrl-C, once the checkpoint is written.
        """
        self._check_dataset(train, "train")
        if val is not None:
            self._check_dataset(val, "validation")
        elif self.patience is not None or isinstance(
            self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau
        ):
            raise ValueError("patience and scheduler='plateau' need a validation dataset")
        if resume and self.out_dir is None:
            raise ValueError("resume=True needs out_dir")
        self._prepare_out_dir()

        with self._deferred_interrupt():
            return self._fit(train, val, resume)

    def _fit(self, train: _SizedDataset, val: _SizedDataset | None, resume: bool) -> History:
        self._stop_flag = torch.zeros((), device=self.device)
        self._stop_flag_set = False
        self._skip = torch.zeros((), device=self.device)
        # Built once: workers persist across epochs and validations instead of being started
        # (and, with spawn or forkserver, re-importing torch) every time.
        loader = self._train_loader(train)
        if val is not None:
            self._kept_loaders[id(val)] = (val, self._inference_loader(val, persistent=True))
        try:
            return self._fit_epochs(loader, val, resume)
        finally:
            for kept in [loader, *(kept for _, kept in self._kept_loaders.values())]:
                _close(kept)
            self._kept_loaders.clear()

    def _fit_epochs(
        self, loader: DataLoader[Any], val: _SizedDataset | None, resume: bool
    ) -> History:
        resumed = self._resume_state() if resume else None
        state = resumed or self._fresh_state()
        best_weights = self._read_best() if resumed and resumed.best_score > -math.inf else None
        self.history = state.history
        # One bar over the epochs (its time left is the run's) above each epoch's own bar.
        overall = tqdm(
            total=self.epochs,
            initial=state.epoch,
            desc="training",
            unit="epoch",
            disable=not self._show_progress(),
            leave=False,
        )
        with overall:
            best_weights = self._run_epochs(loader, val, state, best_weights, overall)
        if best_weights is not None:
            self.model.load_state_dict(best_weights)
        return state.history

    def _run_epochs(
        self,
        loader: DataLoader[Any],
        val: _SizedDataset | None,
        state: TrainingState,
        best_weights: dict[str, Tensor] | None,
        overall: tqdm[Any],
    ) -> dict[str, Tensor] | None:
        """The epoch loop of `_fit_epochs`; returns the best epoch's weights (None if none)."""
        began, first = time.perf_counter(), state.epoch
        while state.epoch < self.epochs and not self._early_stop(state):
            epoch = state.epoch + 1
            lr = float(self.optimizer.param_groups[0]["lr"])
            totals = self._train_epoch(loader, state, epoch)
            distributed.broadcast_buffers(self.model, self.context)
            metrics = self._validate(val) if val is not None else None
            self._step_scheduler(metrics)
            record = EpochRecord(
                epoch=epoch,
                train_loss=totals.loss_sum / max(totals.steps, 1),
                seconds=totals.seconds,
                images_per_second=totals.images / totals.seconds if totals.seconds else math.nan,
                lr=lr,
                val_metrics=metrics,
            )
            state.history.append(record)
            state.epoch, state.step = epoch, 0
            if metrics is not None:
                if metrics.macro_auroc > state.best_score:
                    state.best_score, state.bad_epochs = metrics.macro_auroc, 0
                    best_weights = {
                        k: v.detach().to("cpu", copy=True)
                        for k, v in self.model.state_dict().items()
                    }
                    if self.out_dir is not None and self.context.is_main:
                        save_best(self.out_dir / BEST_NAME, self.model, record)
                else:
                    state.bad_epochs += 1
            self._checkpoint(state, None)
            # Whole epochs of this run (validation and checkpoints included) set the pace.
            pace = (time.perf_counter() - began) / (epoch - first)
            self._log_epoch(record, left=pace * (self.epochs - epoch))
            overall.update()
            if self._interrupt_requested():
                raise self._interrupt_error(epoch, 0)
        return best_weights

    @contextlib.contextmanager
    def _deferred_interrupt(self) -> Iterator[None]:
        """Turn the first Ctrl-C (SIGINT) into a stop after the current step, with a checkpoint.

        A second Ctrl-C stops at once. Signal handlers can only be set from the main thread;
        elsewhere Ctrl-C keeps its usual immediate effect.
        """
        self._interrupted = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: FrameType | None) -> None:
            if self._interrupted:
                raise KeyboardInterrupt
            self._interrupted = True
            logger.warning("interrupted: stopping after this step (Ctrl-C again to stop now)")

        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)

    def _interrupt_requested(self) -> bool:
        flag = torch.tensor(float(self._interrupted), device=self.device)
        if self.context.enabled:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def _interrupt_error(self, epoch: int, step: int) -> KeyboardInterrupt:
        where = f"epoch {epoch}" + (f", step {step}" if step else " (end)")
        if self.out_dir is None:
            return KeyboardInterrupt(
                f"training interrupted at {where}; nothing saved (out_dir=None)"
            )
        return KeyboardInterrupt(
            f"training interrupted at {where}; checkpoint {self.out_dir / LAST_NAME} written, "
            "continue with fit(..., resume=True)"
        )

    def _early_stop(self, state: TrainingState) -> bool:
        # Checked before each epoch, so a resumed run that had stopped early stays stopped.
        if self.patience is None or state.bad_epochs < self.patience:
            return False
        self._info(
            "early stop after epoch %d: no better validation macro-AUROC for %d epochs",
            state.epoch,
            self.patience,
        )
        return True

    def _read_best(self) -> dict[str, Tensor]:
        assert self.out_dir is not None
        return read_best_weights(self.out_dir / BEST_NAME)

    def _log_epoch(self, record: EpochRecord, *, left: float) -> None:
        """The epoch's progress line (rank 0): loss, validation, speed and time left."""
        parts = [f"train loss {record.train_loss:.4f}"]
        m = record.val_metrics
        if m is not None:
            parts += [
                f"val loss {m.loss:.4f}",
                f"val macro-AUROC {m.macro_auroc:.4f}",
                f"val accuracy {m.macro_accuracy:.4f} "
                f"(majority class {m.macro_majority_accuracy:.4f})",
            ]
            if m.undefined_auroc:
                parts.append(f"AUROC undefined for {', '.join(m.undefined_auroc)}")
        parts += [f"{record.images_per_second:.1f} images/s", f"{record.seconds:.1f} s"]
        parts.append(f"time left {format_duration(left)}")
        if self.context.is_main:
            progress_logger.info("epoch %d/%d: %s", record.epoch, self.epochs, ", ".join(parts))
