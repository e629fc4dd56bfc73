"""The GPU-minded parts of the training loop, observed on the CPU.

No host synchronisation in the step path, the device-side skip of non-finite steps, loaders and
workers built once per fit, per-batch worker seeds (exact mid-epoch resume with workers), the
optimizer state's memory layout on resume and the autocast dtype per GPU generation.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from chexviz.models.classifier import MultiLabelClassifier
from chexviz.training import trainer as trainer_module
from chexviz.training.checkpoint import LAST_NAME, restore_optimizer
from chexviz.training.distributed import DistributedContext
from chexviz.training.trainer import Trainer

LABELS = ("a", "b", "c")


def _data(count: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, 16, 16, generator=generator)
    targets = (images.mean(dim=(1, 2, 3))[:, None] + 0.2 * torch.rand(count, 3) > 0.6).float()
    targets[::4, 2] = float("nan")
    return TensorDataset(images, targets)


TRAIN, VAL = _data(24, 1), _data(12, 2)


def _model(dropout: float = 0.0) -> MultiLabelClassifier:
    torch.manual_seed(0)
    return MultiLabelClassifier("simple_cnn", labels=LABELS, image_size=16, dropout=dropout)


def _fused_adam(params: Any) -> torch.optim.Optimizer:
    # What the trainer builds on CUDA; torch's fused Adam also runs on the CPU.
    return torch.optim.Adam(params, lr=1e-2, fused=True)


def _trainer(model: MultiLabelClassifier | None = None, **kwargs: Any) -> Trainer:
    options = {"batch_size": 8, "epochs": 2, "lr": 1e-2, "progress": False, **kwargs}
    return Trainer(_model() if model is None else model, **options)


# Tensor methods that copy a value to the host: on a GPU each one waits for the device.
_SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Counts host reads of tensors made while ``Trainer._train_step`` runs.

    The target check reads the batch's own host copy before anything is sent to the device, so
    its reads are not counted.
    """
    counts: collections.Counter[str] = collections.Counter()
    active = [False]

    def counting(name: str, original: Any) -> Any:
        def wrapper(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if active[0] and sys._getframe(1).f_code.co_name != "_check_targets":
                counts[name] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name in _SYNCING:
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    step = Trainer._train_step

    def watched(self: Trainer, *args: Any) -> Any:
        counts["steps"] += 1
        active[0] = True
        try:
            return step(self, *args)
        finally:
            active[0] = False

    monkeypatch.setattr(Trainer, "_train_step", watched)
    return counts


def test_the_step_path_reads_nothing_back_with_a_fused_optimizer(host_reads):
    history = _trainer(optimizer=_fused_adam).fit(TRAIN, VAL)
    assert host_reads["steps"] == 6
    assert {k: v for k, v in host_reads.items() if k != "steps"} == {}
    assert all(torch.isfinite(torch.tensor(r.train_loss)) for r in history)


def test_other_optimizers_read_the_skip_flag_once_per_step(host_reads):
    # Their step() has no device-side skip; the flag is read after the backward is queued.
    _trainer(optimizer="sgd").fit(TRAIN)
    assert host_reads["steps"] == 6
    assert {k: v for k, v in host_reads.items() if k != "steps"} == {"__bool__": 6}


class _Poisoned(Dataset[Any]):
    """Yields nan images for fetches number ``after + 1`` to ``until``."""

    def __init__(self, base: TensorDataset, after: int, until: int) -> None:
        self.base, self.after, self.until, self.fetches = base, after, until, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Any:
        self.fetches += 1
        image, target = self.base[index]
        if self.after < self.fetches <= self.until:
            image = torch.full_like(image, float("nan"))
        return image, target


@pytest.mark.parametrize("optimizer", ["adam", _fused_adam], ids=["host-check", "fused"])
def test_a_nan_step_read_back_late_never_updates_the_weights(tmp_path, optimizer):
    # As on a GPU, statistics are read one step late: the nan of epoch 2, step 1 is seen while
    # step 2, whose loss is finite, has already run. Neither may update the weights, and the
    # message names step 1.
    clean = _trainer(epochs=1, optimizer=optimizer)
    clean.fit(TRAIN)
    after_epoch_1 = {k: v.clone() for k, v in clean.model.state_dict().items()}
    trainer = _trainer(epochs=2, optimizer=optimizer, out_dir=tmp_path)
    trainer._stats_lag = 1
    with pytest.raises(FloatingPointError, match=r"epoch 2, step 1 of 3.*last good checkpoint"):
        trainer.fit(_Poisoned(TRAIN, after=1 + 24, until=1 + 24 + 8))
    for key, value in trainer.model.state_dict().items():
        if "running" in key or "num_batches" in key:
            continue  # the nan forward passes did update BatchNorm statistics
        assert torch.equal(value, after_epoch_1[key]), key


def test_lagged_statistics_give_the_same_history():
    now, late = _trainer(optimizer=_fused_adam), _trainer(optimizer=_fused_adam)
    late._stats_lag = 1
    first, second = now.fit(TRAIN, VAL), late.fit(TRAIN, VAL)
    assert [r.train_loss for r in first] == [r.train_loss for r in second]


class _Recording(Dataset[Any]):
    """Random flips drawn in the loading process; records which processes loaded items."""

    def __init__(self, base: TensorDataset, log: Path) -> None:
        self.base, self.log = base, log

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Any:
        with self.log.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        image, target = self.base[index]
        return (image.flip(-1) if torch.rand(()) < 0.5 else image), target


def test_loaders_and_workers_live_for_the_whole_fit(tmp_path, monkeypatch):
    trainer = _trainer(epochs=3, num_workers=1)
    loaders, inferred = [], []
    epoch, infer = trainer._train_epoch, trainer._infer

    def spy_epoch(loader, *args):
        loaders.append(loader)
        return epoch(loader, *args)

    def spy_infer(dataset):
        inferred.append(trainer._kept_loaders[id(dataset)][1])
        return infer(dataset)

    monkeypatch.setattr(trainer, "_train_epoch", spy_epoch)
    monkeypatch.setattr(trainer, "_infer", spy_infer)
    log = tmp_path / "pids"
    trainer.fit(_Recording(TRAIN, log), _Recording(VAL, log))
    assert len(loaders) == len(inferred) == 3
    assert all(loader is loaders[0] for loader in loaders)
    assert all(loader is inferred[0] for loader in inferred)
    assert loaders[0].persistent_workers
    assert loaders[0].prefetch_factor == 4
    pids = set(log.read_text().split())
    # One training and one validation worker for the three epochs (the first item is read by
    # the trainer's dataset check, in this process).
    assert str(os.getpid()) in pids
    assert len(pids - {str(os.getpid())}) == 2
    assert trainer._kept_loaders == {}


def test_mid_epoch_resume_with_workers_replays_their_random_augmentations(tmp_path, monkeypatch):
    # Workers reseed per batch from (seed, epoch, rank, batch number), so a resumed run's fresh
    # workers draw what the uninterrupted run's long-lived workers drew.
    log = tmp_path / "pids"
    options = {"epochs": 2, "num_workers": 2, "checkpoint_every": 1, "model": _model(0.3)}
    full = _trainer(out_dir=tmp_path / "full", **options)
    full.fit(_Recording(TRAIN, log))
    options["model"] = _model(0.3)
    part = _trainer(out_dir=tmp_path / "part", **options)
    step = part._train_step

    def crash_in_epoch_2(images, targets, epoch, number):
        if (epoch, number) == (2, 2):
            raise RuntimeError("simulated crash")
        return step(images, targets, epoch, number)

    monkeypatch.setattr(part, "_train_step", crash_in_epoch_2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        part.fit(_Recording(TRAIN, log))
    state = trainer_module.load_training_state(tmp_path / "part" / LAST_NAME, _model(0.3))
    assert (state.epoch, state.step) == (1, 1)  # inside epoch 2: a mid-epoch resume
    options["model"] = _model(0.3)
    resumed = _trainer(out_dir=tmp_path / "part", **options)
    resumed.fit(_Recording(TRAIN, log), resume=True)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_restored_optimizer_state_takes_the_parameters_layout(tmp_path):
    model = _model().to(memory_format=torch.channels_last)
    trainer = _trainer(model=model, epochs=1, out_dir=tmp_path)
    trainer.fit(TRAIN)
    conv = next(p for p in model.parameters() if p.ndim == 4 and p.shape[1] > 1)
    assert not conv.is_contiguous()  # channels_last, as on CUDA
    saved = trainer_module.load_training_state(tmp_path / LAST_NAME, _model()).optimizer
    assert saved["state"][0]["exp_avg"].is_contiguous()  # files hold contiguous tensors
    optimizer = torch.optim.Adam(model.parameters())
    restore_optimizer(optimizer, saved)
    for param in model.parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            state = optimizer.state[param][key]
            assert state.stride() == param.stride(), key
    index = next(i for i, param in enumerate(model.parameters()) if param is conv)
    assert torch.equal(optimizer.state[conv]["exp_avg"], saved["state"][index]["exp_avg"])


def test_compiled_training_drops_the_short_last_batch(caplog):
    # compile=True is CUDA-only; the flag alone decides the batches, so set it directly.
    trainer = _trainer(epochs=1)
    trainer._compiled = True
    with caplog.at_level(logging.INFO, logger="chexviz.training.trainer"):
        history = trainer.fit(_data(20, 3))  # 2 batches of 8 and one of 4
    assert history[0].images_per_second > 0
    assert "the last batch of each epoch (4 images) is skipped" in caplog.text
    loader = trainer._train_loader(_data(20, 3))
    assert len(loader) == 2
    trainer._compiled = False
    assert len(trainer._train_loader(_data(20, 3))) == 3


def test_sync_bn_converts_only_for_several_gpu_processes(caplog):
    model = _model()
    trainer = _trainer(model=model, sync_bn=True)  # one process: nothing to synchronise
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    trainer.context = DistributedContext(rank=0, world_size=2, local_rank=0, local_world_size=2)
    with caplog.at_level(logging.WARNING, logger="chexviz.training.trainer"):
        trainer._convert_sync_bn()
    assert "sync_bn=True is ignored on CPU" in caplog.text
    trainer._cuda = True  # as on GPUs under torchrun (conversion itself needs no GPU)
    parameters = list(model.parameters())
    trainer._convert_sync_bn()
    converted = [m for m in model.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    assert len(converted) == sum(1 for k in model.state_dict() if k.endswith("running_mean"))
    assert converted
    # The same parameter objects: the optimizer built before still updates the model.
    assert all(a is b for a, b in zip(parameters, model.parameters(), strict=True))
    assert model.target_layer is model.get_submodule(model.target_layer_name)


def test_workers_default_to_zero_on_cpu():
    assert _trainer().num_workers == 0
    assert _trainer(num_workers=3).num_workers == 3
    with pytest.raises(ValueError, match="num_workers must be a non-negative integer or None"):
        _trainer(num_workers=-1)


@pytest.mark.parametrize(
    ("capability", "amp", "expected"),
    [
        ((9, 0), "auto", torch.bfloat16),  # Hopper
        ((8, 0), "auto", torch.bfloat16),  # Ampere
        ((7, 0), "auto", torch.float16),  # Volta: bf16 only emulated
        ((7, 5), "fp16", torch.float16),
        ((9, 0), "off", None),
    ],
)
def test_auto_amp_follows_the_compute_capability(monkeypatch, capability, amp, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert trainer_module._amp_dtype(amp, torch.device("cuda", 0)) == expected
    assert trainer_module._amp_dtype("auto", torch.device("cpu")) is None


def test_bf16_on_an_old_gpu_warns(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    with caplog.at_level(logging.WARNING, logger="chexviz.training.trainer"):
        assert trainer_module._amp_dtype("bf16", torch.device("cuda", 0)) == torch.bfloat16
    assert "emulated" in caplog.text


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_named_optimizers_are_fused_on_cuda_only(name):
    trainer = _trainer(optimizer=name)
    assert not trainer.optimizer.defaults.get("fused")
    trainer._cuda = True  # what __init__ sets on a GPU; torch's fused kernels also run on CPU
    optimizer = trainer._build_optimizer(name, 0.0)
    assert optimizer.defaults["fused"] is True
    assert getattr(optimizer, "_step_supports_amp_scaling", False)  # takes found_inf
