"""Grad-CAM of models wrapped by torch.compile and DistributedDataParallel: the module inside
is explained, with its labels, thresholds and target layer, exactly as if unwrapped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from chexviz.explain.gradcam import GradCAM
from chexviz.models.classifier import MultiLabelClassifier

LABELS = ("a", "b", "c")


def _model() -> MultiLabelClassifier:
    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", labels=LABELS, image_size=32)
    model.set_thresholds(torch.tensor([0.2, 0.5, 0.9]))
    return model.eval()


def _images() -> torch.Tensor:
    return torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def _assert_same_explanation(wrapped: nn.Module, model: MultiLabelClassifier) -> None:
    cam = GradCAM(wrapped)
    assert cam.model is model
    assert cam.target_layer_name == model.target_layer_name
    got, expected = cam.explain(_images()), GradCAM(model).explain(_images())
    assert got.labels == LABELS
    assert torch.equal(got.thresholds, model.thresholds)
    assert got.classes == expected.classes
    assert any(got.classes)  # something was explained
    for mine, theirs in zip(got.heatmaps, expected.heatmaps, strict=True):
        assert mine.keys() == theirs.keys()
        for name in mine:
            assert torch.equal(mine[name], theirs[name])


def test_compiled_model_after_its_graph_was_captured() -> None:
    # The graph is captured before the explainer's hooks exist; explaining through it would
    # miss the target layer. The "eager" backend traces with dynamo like inductor does, without
    # generating code (seconds instead of minutes on a CPU).
    model = _model()
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        compiled(_images())
    _assert_same_explanation(compiled, model)


def test_nested_wrappers_are_all_removed() -> None:
    model = _model()
    _assert_same_explanation(torch.compile(DataParallel(model), backend="eager"), model)


def test_ddp_model_explained_on_one_process(tmp_path: Path) -> None:
    # A one-process gloo group: enough for DDP to wrap the model. Two processes, with only one
    # of them explaining (a DDP forward there would wait for ever on the buffer broadcast), run
    # in the GPU check's DDP part (tests/test_gpu_check.py).
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    try:
        model = _model()
        _assert_same_explanation(DistributedDataParallel(model), model)
    finally:
        dist.destroy_process_group()
