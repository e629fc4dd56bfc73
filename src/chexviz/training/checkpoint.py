"""Training checkpoints in the safe chexviz weight format (no pickle anywhere).

A checkpoint is a regular model file written by
[`MultiLabelClassifier.save`][chexviz.models.classifier.MultiLabelClassifier.save], so
``MultiLabelClassifier.load`` opens it. The training state rides along as extras:

* extra tensors: the optimizer's per-parameter tensors (``optim/<index>/<name>``) and the torch
  random generator states as ``uint8`` tensors (``rng/torch``, ``rng/cuda/<device>``; in a
  multi-process run also ``rng/rank<r>/torch`` and ``rng/rank<r>/cuda/<device>`` for every
  rank ``r > 0``);
* extra metadata ``training_state``: JSON with the epoch and step reached, the optimizer's
  parameter groups and scalar state, the LR scheduler and gradient scaler states, the NumPy and
  Python generator states (other ranks' under ``"ranks"``), the history so far and the
  early-stopping bookkeeping.

Each process of a multi-process run draws its own random numbers (dropout masks,
augmentations), so each rank's generators are saved and each rank gets its own back on resume.

Writing goes through a temporary file and ``os.replace``, so a crash or ``kill -9`` leaves either
the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from chexviz.models.serialization import WeightFileError, check_state_dict, read_extra, read_weights
from chexviz.training.history import EpochRecord, History

if TYPE_CHECKING:
    from chexviz.models.classifier import MultiLabelClassifier

__all__ = [
    "BEST_KEY",
    "BEST_NAME",
    "LAST_NAME",
    "STATE_KEY",
    "TrainingState",
    "capture_rng",
    "combine_rng",
    "load_training_state",
    "read_best_weights",
    "read_history",
    "restore_optimizer",
    "restore_rng",
    "save_best",
    "save_training_state",
]

LAST_NAME = "last.safetensors"
"""File name of the checkpoint written at the end of every epoch (and every N steps)."""
BEST_NAME = "best.safetensors"
"""File name of the weights with the best validation macro-AUROC so far."""
STATE_KEY = "training_state"
"""Extra-metadata key holding the JSON training state."""
BEST_KEY = "best_epoch"
"""Extra-metadata key of ``best`` files: JSON of that epoch's record."""

_OPTIM_PREFIX = "optim/"
_RNG_PREFIX = "rng/"
_TORCH_RNG = "torch"
_CUDA_RNG_PREFIX = "cuda/"
_RANKS_KEY = "ranks"


@dataclass
class TrainingState:
    """Everything besides the model weights needed to continue a run exactly.

    Attributes:
        epoch: Epochs completed.
        step: Optimizer steps already done in epoch ``epoch + 1`` (0 at an epoch boundary).
        history: Records of the completed epochs.
        best_score: Best validation macro-AUROC so far (``-inf`` before any).
        bad_epochs: Epochs since the last improvement (for early stopping).
        optimizer: The optimizer's ``state_dict()``.
        scheduler: The LR scheduler's ``state_dict()``, if any.
        scaler: The gradient scaler's ``state_dict()``, if any.
        partial: Running sums of the unfinished epoch (``loss_sum``, ``steps``, ``images``,
            ``seconds``) when ``step > 0``.
        settings: Trainer settings that must match for an exact continuation.
        rng_tensors: Torch generator states (from
            [`capture_rng`][chexviz.training.checkpoint.capture_rng], or every rank's from
            [`combine_rng`][chexviz.training.checkpoint.combine_rng]).
        rng_json: NumPy and Python generator states (likewise).
    """

    epoch: int
    step: int
    history: History
    best_score: float
    bad_epochs: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    partial: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    rng_tensors: dict[str, Tensor] = field(default_factory=dict)
    rng_json: dict[str, Any] = field(default_factory=dict)


def _rank_prefix(rank: int) -> str:
    # Rank 0 keeps the keys of a one-process checkpoint, so both read the same way.
    return _RNG_PREFIX if rank == 0 else f"{_RNG_PREFIX}rank{rank}/"


def capture_rng() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Snapshot this process's torch, CUDA, NumPy and Python random generators.

    Returns:
        ``(tensors, json_state)``: torch states as ``uint8`` tensors and the NumPy / Python
        states as JSON-serialisable lists.
    """
    tensors = {_RNG_PREFIX + _TORCH_RNG: torch.get_rng_state()}
    # Only an initialised CUDA context has states worth saving; querying would create one.
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{_RNG_PREFIX}{_CUDA_RNG_PREFIX}{index}"] = state
    numpy_state = np.random.get_state(legacy=True)  # noqa: NPY002 (user code's generator)
    assert isinstance(numpy_state, tuple)  # legacy=True always gives the tuple form
    name, keys, pos, has_gauss, cached = numpy_state
    version, internal, gauss_next = random.getstate()
    json_state = {
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        "python": [version, list(internal), gauss_next],
    }
    return tensors, json_state


def combine_rng(
    per_rank: Sequence[tuple[Mapping[str, Tensor], Mapping[str, Any]]],
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Put the `capture_rng` snapshots of every rank of a run into one checkpoint's fields.

    Rank 0's states keep the keys of a one-process checkpoint; rank ``r``'s tensors go under
    ``rng/rank<r>/`` and its JSON states under ``"ranks"``.

    Args:
        per_rank: One ``capture_rng()`` result per rank, in rank order.

    Returns:
        ``(tensors, json_state)`` for [`TrainingState`][chexviz.training.checkpoint.TrainingState].
    """
    tensors: dict[str, Tensor] = {}
    json_state: dict[str, Any] = {}
    for rank, (rank_tensors, rank_json) in enumerate(per_rank):
        for key, value in rank_tensors.items():
            tensors[_rank_prefix(rank) + key[len(_RNG_PREFIX) :]] = value
        if rank == 0:
            json_state.update(rank_json)
        else:
            json_state.setdefault(_RANKS_KEY, {})[str(rank)] = dict(rank_json)
    return tensors, json_state


def restore_rng(
    tensors: Mapping[str, Tensor], json_state: Mapping[str, Any], *, rank: int = 0
) -> bool:
    """Restore the generator states of one rank, as captured by `capture_rng`.

    CUDA states are restored for the devices present in both the snapshot and this machine.

    Args:
        tensors: The torch states (of one rank, or combined by `combine_rng`).
        json_state: The NumPy and Python states (likewise).
        rank: Whose states to restore.

    Returns:
        False (and nothing restored) when the checkpoint has no states for ``rank``: it was
        written by a run with fewer processes.
    """
    prefix = _rank_prefix(rank)
    rank_json = json_state if rank == 0 else json_state.get(_RANKS_KEY, {}).get(str(rank))
    if prefix + _TORCH_RNG not in tensors or rank_json is None:
        return False
    torch.set_rng_state(tensors[prefix + _TORCH_RNG].cpu())
    cuda_prefix = prefix + _CUDA_RNG_PREFIX
    cuda = sorted(
        (int(k[len(cuda_prefix) :]), v)
        for k, v in tensors.items()
        if k.startswith(cuda_prefix) and k[len(cuda_prefix) :].isdigit()
    )
    if cuda and torch.cuda.is_available():
        for index, state in cuda[: torch.cuda.device_count()]:
            torch.cuda.set_rng_state(state.cpu(), index)
    name, keys, pos, has_gauss, cached = rank_json["numpy"]
    numpy_state = (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
    np.random.set_state(numpy_state)  # noqa: NPY002
    version, internal, gauss_next = rank_json["python"]
    random.setstate((version, tuple(internal), gauss_next))
    return True


def restore_optimizer(optimizer: torch.optim.Optimizer, state_dict: Mapping[str, Any]) -> None:
    """Load an optimizer state and give each state tensor its parameter's memory layout.

    Tensors read from a file are contiguous, while a CUDA model's convolution weights are
    ``channels_last``; Adam's moments with another layout than their parameter would push the
    fused and foreach update kernels off their fast path (or make them copy every step).

    Args:
        optimizer: The optimizer, built over the model's parameters.
        state_dict: A state from ``optimizer.state_dict()`` (or a checkpoint's
            ``TrainingState.optimizer``).
    """
    optimizer.load_state_dict(dict(state_dict))
    for group in optimizer.param_groups:
        for param in group["params"]:
            entries = optimizer.state.get(param, {})
            for key, value in entries.items():
                if (
                    isinstance(value, Tensor)
                    and value.shape == param.shape
                    and value.stride() != param.stride()
                ):
                    # empty_like keeps the parameter's strides (channels_last included).
                    entries[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _split_optimizer(state_dict: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"{_OPTIM_PREFIX}{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(_OPTIM_PREFIX):
            index, name = key[len(_OPTIM_PREFIX) :].split("/", 1)
            state.setdefault(int(index), {})[name] = value
    for index, entries in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    # JSON turned tuples such as Adam's betas into lists; give them back their type.
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _dumps(payload: Mapping[str, Any]) -> str:
    try:
        # allow_nan: scheduler states hold inf (ReduceLROnPlateau's "worse" bound) and only this
        # module reads the text back.
        return json.dumps(payload, allow_nan=True)
    except TypeError as exc:
        raise TypeError(
            f"training state cannot be stored as JSON ({exc}); a custom scheduler must have a "
            "JSON-serialisable state_dict()"
        ) from exc


def save_training_state(
    path: str | Path, model: MultiLabelClassifier, state: TrainingState
) -> Path:
    """Write model weights plus training state to ``path`` atomically.

    Args:
        path: Destination file.
        model: The (unwrapped) model.
        state: The state; its ``rng_*`` fields are written as given.

    Returns:
        The written path.
    """
    optim_tensors, optim_meta = _split_optimizer(state.optimizer)
    payload = {
        "epoch": state.epoch,
        "step": state.step,
        "history": state.history.to_dict(),
        "best_score": state.best_score,
        "bad_epochs": state.bad_epochs,
        "optimizer": optim_meta,
        "scheduler": state.scheduler,
        "scaler": state.scaler,
        "partial": state.partial,
        "settings": state.settings,
        "rng": state.rng_json,
    }
    return model.save(
        path,
        extra_tensors={**optim_tensors, **state.rng_tensors},
        extra_metadata={STATE_KEY: _dumps(payload)},
    )


def save_best(path: str | Path, model: MultiLabelClassifier, record: EpochRecord) -> Path:
    """Write the weights of the best epoch so far (atomically), with that epoch's record.

    The file is a plain model file: ``MultiLabelClassifier.load`` opens it, and
    ``chexviz.models.serialization.read_extra`` returns the record as JSON under
    [`BEST_KEY`][chexviz.training.checkpoint.BEST_KEY].

    Args:
        path: Destination file.
        model: The (unwrapped) model.
        record: The epoch's record (validation metrics included).

    Returns:
        The written path.
    """
    return model.save(path, extra_metadata={BEST_KEY: json.dumps(record.to_dict())})


def read_best_weights(path: str | Path) -> dict[str, Tensor]:
    """Read the weights of a file written by `save_best` (to restore them after a resume).

    Args:
        path: A ``best.safetensors`` file.

    Returns:
        Its state dict, on the CPU.

    Raises:
        FileNotFoundError: If the file does not exist.
        WeightFileError: If it is not a chexviz weight file.
    """
    _, weights = read_weights(path)
    return weights


def _read_payload(path: Path, metadata: Mapping[str, str]) -> dict[str, Any]:
    if STATE_KEY not in metadata:
        raise WeightFileError(
            f"{path}: a model file without training state (not a chexviz training checkpoint)"
        )
    payload: dict[str, Any] = json.loads(metadata[STATE_KEY])
    return payload


def load_training_state(path: str | Path, model: MultiLabelClassifier) -> TrainingState:
    """Load a checkpoint's weights into ``model`` and return its training state.

    Args:
        path: A file written by
            [`save_training_state`][chexviz.training.checkpoint.save_training_state].
        model: The model to load into; its architecture must match the file's.

    Returns:
        The state; apply ``optimizer`` / ``scheduler`` / ``scaler`` / ``rng_*`` to continue.

    Raises:
        FileNotFoundError: If the file does not exist.
        WeightFileError: If it is not a training checkpoint or does not fit the
            model.
    """
    file = Path(path)
    _, weights = read_weights(file)
    check_state_dict(model.state_dict(), weights, source=str(file), model="the trainer's model")
    tensors, metadata = read_extra(file)
    payload = _read_payload(file, metadata)
    model.load_state_dict(weights)
    rng_tensors = {k: v for k, v in tensors.items() if k.startswith(_RNG_PREFIX)}
    return TrainingState(
        epoch=int(payload["epoch"]),
        step=int(payload["step"]),
        history=History.from_dict(payload["history"]),
        best_score=float(payload["best_score"]),
        bad_epochs=int(payload["bad_epochs"]),
        optimizer=_join_optimizer(tensors, payload["optimizer"]),
        scheduler=payload["scheduler"],
        scaler=payload["scaler"],
        partial=payload["partial"],
        settings=payload["settings"],
        rng_tensors=rng_tensors,
        rng_json=payload["rng"],
    )


def read_history(path: str | Path) -> History:
    """Read the history stored in a training checkpoint (e.g. of a run still going or killed).

    Args:
        path: A ``last.safetensors`` file.

    Returns:
        The history of the completed epochs.

    Raises:
        FileNotFoundError: If the file does not exist.
        chexviz.models.serialization.WeightFileError: If it is not a training checkpoint.
    """
    file = Path(path)
    _, metadata = read_extra(file)
    return History.from_dict(_read_payload(file, metadata)["history"])
