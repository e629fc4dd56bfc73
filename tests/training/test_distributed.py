import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import TensorDataset

from chexviz.models import registry
from chexviz.models.classifier import MultiLabelClassifier
from chexviz.models.registry import list_backbones
from chexviz.training.distributed import DistributedContext, broadcast_buffers, detect, gather_rows
from chexviz.training.trainer import Trainer

SCRIPT = Path(__file__).parent / "scripts" / "ddp_train.py"
LABELS = ("a", "b", "c")


def test_detect_reads_torchrun_variables():
    assert detect({}) == DistributedContext(0, 1, 0)
    context = detect({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (context.rank, context.world_size, context.local_rank) == (3, 4, 1)
    assert context.enabled
    assert not context.is_main
    assert detect({"RANK": "0", "WORLD_SIZE": "1"}).is_main


@pytest.mark.parametrize(
    ("environ", "match"),
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two'"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2, WORLD_SIZE=2"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
    ],
)
def test_detect_rejects_bad_environment(environ, match):
    with pytest.raises(ValueError, match=match):
        detect(environ)


def test_single_process_helpers_are_identity():
    context = DistributedContext()
    rows = torch.arange(12.0).view(6, 2)
    assert torch.equal(gather_rows(rows, 5, context), rows[:5])
    module = torch.nn.BatchNorm1d(2)
    broadcast_buffers(module, context)  # no process group needed
    assert torch.equal(module.running_mean, torch.zeros(2))


def test_batch_size_must_split_over_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    model = MultiLabelClassifier("simple_cnn", labels=LABELS, image_size=16)
    with pytest.raises(
        ValueError, match="batch_size=7 must be divisible by the number of processes"
    ):
        Trainer(model, batch_size=7)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two-process (gloo, torchrun) and one-process runs of the same script."""
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    src = str(Path(__file__).parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.Popen([*torchrun, str(SCRIPT), str(two)], env=env, stderr=subprocess.PIPE)
    # The one-process run goes on meanwhile in this process; the backbone the script registers
    # goes into a copy of the registry that is dropped afterwards.
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        list_backbones()
        patch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))
        patch.setattr(sys, "argv", [str(SCRIPT), str(one)])
        try:
            runpy.run_path(str(SCRIPT), run_name="__main__")
        finally:
            torch.set_num_threads(threads)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    return one, two


def _floats(values):
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _report(folder, backbone):
    return json.loads((folder / f"{backbone}.json").read_text())


@pytest.mark.parametrize("backbone", ["simple_cnn", "tiny_linear_cnn"])
def test_all_ranks_end_with_identical_weights_and_buffers(runs, backbone):
    _, two = runs
    rank0 = load_file(two / f"{backbone}-rank0.safetensors")
    rank1 = load_file(two / f"{backbone}-rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    assert any("running_mean" in k for k in rank0) == (backbone == "simple_cnn")
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key


def test_gathered_metrics_equal_single_process_metrics_of_the_same_weights(runs):
    _, two = runs
    report = _report(two, "simple_cnn")
    assert report["world_size"] == 2
    val = load_file(two / "val.safetensors")
    dataset = TensorDataset(val["images"], val["targets"])
    model = MultiLabelClassifier("simple_cnn", labels=LABELS, image_size=16)
    model.load_state_dict(load_file(two / "simple_cnn-rank0.safetensors"))
    trainer = Trainer(model, batch_size=8, progress=False)
    single = trainer.evaluate(dataset)
    gathered = report["evaluate"]
    # 13 items over 2 ranks: the padded duplicate must not be counted.
    assert list(single.support) == gathered["support"] == [8, 13, 13]
    np.testing.assert_allclose(single.auroc, gathered["auroc"], atol=1e-7)
    np.testing.assert_allclose(single.accuracy, gathered["accuracy"], atol=1e-7)
    np.testing.assert_allclose(single.f1, gathered["f1"], atol=1e-7)
    assert single.loss == pytest.approx(gathered["loss"], abs=1e-6)
    np.testing.assert_allclose(trainer.predict(dataset), report["predict"], atol=1e-6)
    # The history's validation metrics were gathered the same way during training; the model
    # ends with the best epoch's weights and thresholds.
    records = report["history"]["records"]
    best = max(records, key=lambda r: r["val_metrics"]["macro"]["auroc"])
    np.testing.assert_allclose(best["val_metrics"]["auroc"], single.auroc, atol=1e-7)
    np.testing.assert_allclose(best["val_metrics"]["accuracy"], single.accuracy, atol=1e-7)


def test_two_processes_train_like_one_without_batchnorm(runs):
    assert "tiny_linear_cnn" not in list_backbones()  # the script's registration was undone
    one, two = runs
    first, second = _report(one, "tiny_linear_cnn"), _report(two, "tiny_linear_cnn")
    assert (first["world_size"], second["world_size"]) == (1, 2)
    # The global batch is the same 8 images either way, and the loss is the mean over the
    # global batch's valid entries, so only float summation order differs.
    weights_one = load_file(one / "tiny_linear_cnn-rank0.safetensors")
    weights_two = load_file(two / "tiny_linear_cnn-rank0.safetensors")
    for key in weights_one:
        torch.testing.assert_close(weights_one[key], weights_two[key], atol=1e-5, rtol=1e-5)
    for a, b in zip(first["history"]["records"], second["history"]["records"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val_metrics"]["loss"] == pytest.approx(b["val_metrics"]["loss"], abs=1e-5)
        np.testing.assert_allclose(
            _floats(a["val_metrics"]["auroc"]), _floats(b["val_metrics"]["auroc"]), atol=1e-6
        )
    np.testing.assert_allclose(
        _floats(first["evaluate"]["auroc"]), _floats(second["evaluate"]["auroc"]), atol=1e-6
    )


@pytest.mark.parametrize(
    ("visible", "local_world_size", "environ", "backend"),
    [
        (4, 4, {}, "nccl"),  # torchrun: every process sees every GPU
        (2, 4, {}, "gloo"),  # more processes than GPUs
        (1, 4, {"CUDA_VISIBLE_DEVICES": "2"}, "nccl"),  # the launcher gave each process a GPU
        (1, 4, {}, "gloo"),  # four processes on a one-GPU machine
        (1, 4, {"CUDA_VISIBLE_DEVICES": "0", "CHEXVIZ_SHARED_GPUS": "1"}, "gloo"),  # said so
        (4, 4, {"CHEXVIZ_SHARED_GPUS": "1"}, "gloo"),
    ],
)
def test_backend_follows_the_gpus_each_process_sees(
    monkeypatch, visible, local_world_size, environ, backend
):
    from chexviz.training import distributed

    for name in ("CUDA_VISIBLE_DEVICES", "CHEXVIZ_SHARED_GPUS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.atexit, "register", lambda function: None)
    joined = {}
    monkeypatch.setattr(
        distributed.dist, "init_process_group", lambda **options: joined.update(options)
    )
    context = DistributedContext(rank=1, world_size=8, local_rank=1, local_world_size=4)
    distributed.setup(context, torch.device("cuda", 0))
    assert joined["backend"] == backend
    assert ("device_id" in joined) == (backend == "nccl")
