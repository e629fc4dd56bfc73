"""Soak tests: long runs in one process keep memory, hooks, threads and open files flat.

The short variants run with ``make test``; the long ones are marked ``slow`` and run with
``CHEXVIZ_SLOW=1`` (10,000 Grad-CAM explanations; 3 epochs on a real-sized toy data set with
DataLoader workers).
"""

from __future__ import annotations

import gc
import os
import resource
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from chexviz.explain.gradcam import GradCAM
from chexviz.models.classifier import MultiLabelClassifier
from chexviz.training.trainer import Trainer

LABELS = ("a", "b", "c")
MB = 1024 * 1024


def _rss() -> int:
    """Resident memory of this process now, in bytes."""
    with open("/proc/self/statm") as handle:
        resident = int(handle.read().split()[1])
    return resident * resource.getpagesize()


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def _hooks(model: nn.Module) -> int:
    return sum(
        len(hooks)
        for module in model.modules()
        for hooks in (
            module._forward_hooks,
            module._forward_pre_hooks,
            module._backward_hooks,
            module._backward_pre_hooks,
            module._forward_hooks_with_kwargs,
            module._forward_pre_hooks_with_kwargs,
        )
    )


def _global_hooks() -> int:
    from torch.nn.modules import module

    return sum(
        len(hooks)
        for hooks in (
            module._global_forward_hooks,
            module._global_forward_pre_hooks,
            module._global_backward_hooks,
            module._global_backward_pre_hooks,
        )
    )


@dataclass
class Resources:
    """What a process holds, sampled before and after a long run."""

    rss: int
    objects: int
    threads: int
    files: int
    samples: list[int] = field(default_factory=list)

    @classmethod
    def now(cls) -> Resources:
        gc.collect()
        return cls(_rss(), len(gc.get_objects()), threading.active_count(), _open_files())


@contextmanager
def _flat(
    *, rss_mb: float, objects: int, report: dict[str, float] | None = None
) -> Iterator[Resources]:
    """Asserts that the block leaves RSS, live objects, threads and files where it found them."""
    before = Resources.now()
    yield before
    after = Resources.now()
    growth = (after.rss - before.rss) / MB
    if report is not None:
        report.update(rss_growth_mb=growth, object_growth=after.objects - before.objects)
    assert growth < rss_mb, f"RSS grew by {growth:.1f} MB"
    assert after.objects - before.objects < objects, "Python objects accumulate"
    assert after.threads == before.threads, "threads left running"
    assert after.files == before.files, "files left open"


def _cam_model() -> MultiLabelClassifier:
    torch.manual_seed(0)
    return MultiLabelClassifier("simple_cnn", labels=LABELS, image_size=32).eval()


def _explain_many(calls: int, report: dict[str, float]) -> None:
    model = _cam_model()
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    cam = GradCAM(model)
    for _ in range(20):  # warm-up: allocator pools and lazy imports settle
        cam.explain(images, classes=["a", "c"])
    hooks, global_hooks = _hooks(model), _global_hooks()
    grads = [p.grad for p in model.parameters()]
    with _flat(rss_mb=24, objects=500, report=report) as start:
        cam = GradCAM(model)
        first = cam.explain(images, classes=["a", "c"])
        for call in range(calls):
            explanation = cam.explain(images, classes=["a", "c"])
            if call % max(calls // 10, 1) == 0:
                start.samples.append(_rss())
        del explanation
    # Same maps at the end as at the start: no state carried from call to call.
    again = GradCAM(model).explain(images, classes=["a", "c"])
    torch.testing.assert_close(again.heatmaps[1]["c"], first.heatmaps[1]["c"])
    assert _hooks(model) == hooks == 0
    assert _global_hooks() == global_hooks
    assert [p.grad for p in model.parameters()] == grads
    assert not model.training
    report["rss_samples_mb"] = (max(start.samples) - min(start.samples)) / MB


def test_gradcam_explain_200_calls_stay_flat() -> None:
    report: dict[str, float] = {}
    _explain_many(200, report)
    print(f"200 explain calls: {report}")


@pytest.mark.slow
def test_gradcam_explain_10000_calls_stay_flat() -> None:
    report: dict[str, float] = {}
    _explain_many(10_000, report)
    print(f"10,000 explain calls: {report}")


class _Watched(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Records RSS each time an epoch starts reading (item 0), in the main process."""

    def __init__(self, data: TensorDataset, on_first: Callable[[], None]) -> None:
        self.data = data
        self.on_first = on_first

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        if index == 0:
            self.on_first()
        return self.data[index]


def _toy(count: int, size: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, size, size, generator=generator)
    targets = (images.mean(dim=(1, 2, 3))[:, None] + 0.3 * torch.rand(count, 3) > 0.65).float()
    return TensorDataset(images, targets)


def _train(count: int, size: int, workers: int, tmp: Any, report: dict[str, float]) -> None:
    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", labels=LABELS, image_size=size)
    epoch_rss: list[int] = []
    train = _Watched(_toy(count, size, 1), lambda: epoch_rss.append(_rss()))
    val = _toy(max(count // 4, 8), size, 2)
    options = {"batch_size": 16, "epochs": 3, "lr": 1e-3, "progress": False}
    # A first fit allocates what every later one reuses (optimizer state, allocator pools).
    Trainer(model, **options, num_workers=0).fit(train, val)  # type: ignore[arg-type]
    epoch_rss.clear()
    with _flat(rss_mb=32, objects=2000, report=report):
        trainer = Trainer(model, **options, num_workers=workers, out_dir=tmp)  # type: ignore[arg-type]
        history = trainer.fit(train, val)
        del trainer
    assert len(history) == 3
    if workers == 0:
        # The trainer reads item 0 once to check the data, then once per epoch.
        epochs = epoch_rss[-3:]
        assert len(epochs) == 3
        report["epoch_rss_spread_mb"] = (max(epochs) - min(epochs)) / MB
        assert max(epochs) - epochs[0] < 32 * MB
    assert _hooks(model) == 0
    assert _global_hooks() == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_three_short_epochs_stay_flat(tmp_path: Any, workers: int) -> None:
    report: dict[str, float] = {}
    _train(64, 16, workers, tmp_path, report)
    print(f"3 short epochs, {workers} workers: {report}")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_three_epochs_stay_flat(tmp_path: Any, workers: int) -> None:
    report: dict[str, float] = {}
    _train(2048, 64, workers, tmp_path, report)
    print(f"3 epochs, {workers} workers: {report}")
