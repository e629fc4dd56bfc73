"""Device and backend choice under a simulated torchrun environment (CUDA calls stubbed)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed as dist

from chexviz.models.classifier import MultiLabelClassifier
from chexviz.training import distributed
from chexviz.training.distributed import DistributedContext, detect, resolve_device
from chexviz.training.trainer import Trainer

TORCHRUN_RANK_3_OF_4 = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Pretends this machine has CUDA with ``gpus["count"]`` devices; records set_device."""
    state: dict[str, Any] = {"count": 4, "current": 0, "set": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: state["count"])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: state["current"])

    def set_device(index: int) -> None:
        state["set"].append(index)
        state["current"] = index

    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    return state


@pytest.mark.parametrize("requested", ["cuda", "auto", torch.device("cuda")])
def test_each_torchrun_process_gets_its_local_rank_gpu(gpus, requested):
    context = detect(TORCHRUN_RANK_3_OF_4)
    assert resolve_device(requested, context) == torch.device("cuda", 1)
    assert gpus["set"] == [1]  # made current, for NCCL and index-less .cuda() calls


def test_single_process_cuda_is_the_current_device(gpus):
    gpus["current"] = 2
    assert resolve_device("cuda", DistributedContext()) == torch.device("cuda", 2)
    assert resolve_device("auto", DistributedContext()) == torch.device("cuda", 2)


def test_an_explicit_index_is_kept_and_checked(gpus):
    context = detect(TORCHRUN_RANK_3_OF_4)
    assert resolve_device("cuda:3", context) == torch.device("cuda", 3)
    assert gpus["set"] == [3]
    with pytest.raises(ValueError, match=r"device='cuda:7' but this machine has 4 CUDA devices"):
        resolve_device("cuda:7", context)


def test_more_processes_than_gpus_share_them(gpus):
    gpus["count"] = 1
    context = detect(TORCHRUN_RANK_3_OF_4)
    assert resolve_device("cuda", context) == torch.device("cuda", 0)


def test_cpu_and_missing_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    context = detect(TORCHRUN_RANK_3_OF_4)
    assert resolve_device("auto", context) == torch.device("cpu")
    assert resolve_device("cpu", context) == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda", context)


def test_trainer_resolves_cuda_through_the_environment(gpus, monkeypatch):
    # The bug this guards against: `Trainer(device="cuda")` put every rank on GPU 0. Stop the
    # trainer right after it resolved its device (no real GPU here).
    for name, value in TORCHRUN_RANK_3_OF_4.items():
        monkeypatch.setenv(name, value)
    seen = []

    def stop(context, device):
        seen.append(device)
        raise RuntimeError("stop here")

    monkeypatch.setattr(distributed, "setup", stop)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    model = MultiLabelClassifier("simple_cnn", labels=("a", "b"), image_size=16)
    with pytest.raises(RuntimeError, match="stop here"):
        Trainer(model, device="cuda", batch_size=8, progress=False)
    assert seen == [torch.device("cuda", 1)]


@pytest.fixture
def joins(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(distributed.atexit, "register", lambda function: None)
    return calls


def test_nccl_is_joined_bound_to_the_process_gpu(gpus, joins):
    context = detect(TORCHRUN_RANK_3_OF_4)
    distributed.setup(context, torch.device("cuda", 1))
    assert joins == [
        {"backend": "nccl", "rank": 3, "world_size": 4, "device_id": torch.device("cuda", 1)}
    ]


def test_processes_sharing_a_gpu_use_gloo(gpus, joins, caplog):
    gpus["count"] = 1
    distributed.setup(detect(TORCHRUN_RANK_3_OF_4), torch.device("cuda", 0))
    assert joins == [{"backend": "gloo", "rank": 3, "world_size": 4}]
    assert "2 processes share 1 GPU(s)" in caplog.text


def test_cpu_processes_use_gloo(joins):
    distributed.setup(detect(TORCHRUN_RANK_3_OF_4), torch.device("cpu"))
    assert joins == [{"backend": "gloo", "rank": 3, "world_size": 4}]


def test_detect_reads_the_local_world_size():
    assert detect(TORCHRUN_RANK_3_OF_4).local_world_size == 2
    assert detect({"RANK": "1", "WORLD_SIZE": "2"}).local_world_size == 2  # assumed one machine
    with pytest.raises(ValueError, match="LOCAL_WORLD_SIZE=3"):
        detect({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "3"})
    with pytest.raises(ValueError, match="LOCAL_RANK=2"):
        detect({"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"})
