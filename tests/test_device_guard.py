"""Tensors that can live on the model's device never reach NumPy, pandas or matplotlib directly.

On a GPU ``tensor.numpy()`` (and ``np.asarray(tensor)``, which pandas and matplotlib call)
raises for a CUDA tensor; ``examples/reproduce_study.py`` once stopped after its first model
that way. No GPU is needed to catch the bug class:

* a static check: every ``.numpy()`` in the library, the examples, the benchmarks and the docs
  scripts is called on ``.cpu()`` or ``.to("cpu", ...)``, which costs nothing on a CPU tensor;
* a runtime check: the study script runs with the model's buffers and outputs replaced by a
  tensor subclass that refuses NumPy conversion as a CUDA tensor does, until it is moved to the
  CPU. Everything computed from the model (logits, probabilities, thresholds, heatmaps) inherits
  the subclass, so any path that hands such a tensor to NumPy fails here as it would on a GPU.
"""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chexviz.models.classifier import MultiLabelClassifier
from conftest import DeviceTensor, put_on_device, trainers_on_device

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("src", "examples", "benchmarks", "docs/scripts")


def _moves_to_cpu(node: ast.expr) -> bool:
    """Whether an expression is ``x.cpu()`` or ``x.to("cpu", ...)`` / ``x.to(device="cpu")``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    if node.func.attr == "cpu":
        return True
    if node.func.attr != "to":
        return False
    given = [*node.args[:1], *(k.value for k in node.keywords if k.arg == "device")]
    return any(isinstance(value, ast.Constant) and value.value == "cpu" for value in given)


def host_conversions(source: str) -> list[int]:
    """Lines where ``.numpy()`` is called on something not just moved to the CPU."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "numpy"
            and not node.args
            and not _moves_to_cpu(node.func.value)
        ):
            lines.append(node.lineno)
    return lines


def _python_files() -> list[Path]:
    return sorted(path for folder in SOURCES for path in (ROOT / folder).rglob("*.py"))


def test_numpy_is_only_called_on_tensors_moved_to_the_cpu() -> None:
    files = _python_files()
    assert len(files) > 40  # the scan sees the whole code base
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in files
        for line in host_conversions(path.read_text(encoding="utf-8"))
    ]
    assert found == [], "call .cpu() before .numpy() (the tensor may be on a GPU): " + str(found)


def test_the_static_check_catches_the_study_script_bug() -> None:
    assert host_conversions("tuned = compute(probs, model.thresholds.numpy())") == [1]
    assert host_conversions("x = torch.sigmoid(logits).numpy()") == [1]
    assert host_conversions("x = t.to(torch.float64).numpy()") == [1]
    assert host_conversions("x = t.detach().cpu().numpy()") == []
    assert host_conversions('x = t.to("cpu", torch.float64).numpy()') == []
    assert host_conversions('x = t.to(device="cpu").numpy()') == []


def test_the_stand_in_behaves_like_a_cuda_tensor() -> None:
    model = MultiLabelClassifier("simple_cnn", image_size=16).eval()
    put_on_device(model)
    logits = model(torch.rand(2, 1, 16, 16))
    assert isinstance(logits, DeviceTensor)  # inherited through the network
    assert isinstance(torch.sigmoid(logits).detach(), DeviceTensor)
    for convert in (
        lambda: logits.detach().numpy(),
        lambda: np.asarray(logits.detach()),
        lambda: pd.DataFrame(model.thresholds),
        lambda: model.thresholds.numpy(),
    ):
        with pytest.raises(TypeError, match="cuda:0 device type tensor"):
            convert()
    host = logits.detach().cpu()
    assert type(host) is torch.Tensor
    assert type(model.thresholds.to("cpu")) is torch.Tensor
    np.testing.assert_array_equal(host.numpy(), logits.detach().cpu().numpy())
    assert isinstance(logits.sum().item(), float)


def test_metric_functions_take_tensors_on_the_device() -> None:
    from chexviz.training.metrics import compute_metrics
    from chexviz.training.thresholds import tune_thresholds

    model = MultiLabelClassifier("simple_cnn", labels=("a", "b"), image_size=16).eval()
    put_on_device(model)
    with torch.no_grad():
        probs = torch.sigmoid(model(torch.rand(6, 1, 16, 16)))
    targets = torch.tensor([[0.0, 1.0], [1.0, 0.0]] * 3).as_subclass(DeviceTensor)
    metrics = compute_metrics(probs, targets, model.thresholds, model.labels)
    expected = compute_metrics(probs.cpu(), targets.cpu(), [0.5, 0.5], model.labels)
    np.testing.assert_array_equal(metrics.auroc, expected.auroc)
    tuned = tune_thresholds(probs, targets, default=model.thresholds)
    assert tuned.shape == (2,)


def test_the_study_script_runs_with_the_model_on_a_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = trainers_on_device(monkeypatch)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "study"
    arguments = "--synthetic --train 30 --val 12 --test 18 --epochs 1 --image-size 64"
    arguments += f" --batch-size 16 --workers 0 --models simple_cnn --attention --out {out}"
    monkeypatch.setattr(sys, "argv", ["reproduce_study.py", *arguments.split()])
    runpy.run_path(str(ROOT / "examples" / "reproduce_study.py"), run_name="__main__")
    assert len(trained) == 2  # simple_cnn and the attention model, both ran to the end
    assert all(isinstance(t.model.thresholds, DeviceTensor) for t in trained)
    table = pd.read_csv(out / "comparison.csv", index_col="model")
    assert list(table.index) == ["simple_cnn", "vgg16+attention"]
    assert len(list(out.glob("gradcam_*.png"))) == 1
