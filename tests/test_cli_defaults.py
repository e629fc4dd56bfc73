"""``chexviz train`` defaults that depend on the device: the image cache on CUDA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from chexviz import cli
from chexviz.data import dataset as dataset_module
from chexviz.training import distributed


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """Stops `chexviz train` when it builds its dataset, recording the arguments."""
    seen: dict[str, Any] = {}

    def dataset(*args: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(dataset_module, "CheXpertDataset", dataset)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CHEXVIZ_CACHE", raising=False)
    return seen


def _train(tmp_path: Path, *extra: str) -> int:
    arguments = ["train", "--data", str(tmp_path), "--backbone", "simple_cnn"]
    return cli.main([*arguments, "--out", str(tmp_path / "out"), *extra])


@pytest.mark.parametrize(
    ("device", "extra", "expected"),
    [
        ("cuda", (), "xdg/chexviz/images"),
        ("cuda", ("--no-cache",), None),
        ("cuda", ("--cache-dir", "mine"), "mine"),
        ("cpu", (), None),
    ],
)
def test_cache_by_default_on_cuda(captured, monkeypatch, tmp_path, device, extra, expected):
    monkeypatch.setattr(distributed, "resolve_device", lambda requested: torch.device(device))
    if "--cache-dir" in extra:
        extra = ("--cache-dir", str(tmp_path / "mine"))
    assert _train(tmp_path, *extra) == 1  # the test's stop
    assert captured["cache_dir"] == (None if expected is None else tmp_path / expected)
