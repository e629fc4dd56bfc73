"""Shared test fixtures."""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import settings
from PIL import Image

# Property tests draw the same examples on every run: a suite whose verdict changes from one
# run to the next cannot tell a regression from bad luck (issue 18). The examples are derived
# from each test's source, and failures are not replayed from a local database, so a clean
# clone, CI and a developer's machine all run the same cases. To search new examples on
# purpose, run with HYPOTHESIS_PROFILE=explore.
settings.register_profile("chexviz", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "chexviz"))

# Written out rather than built from CHEXPERT_LABELS: this is the release's header, the
# reference that the label order and the synthetic data set are checked against.
CHEXPERT_HEADER = [
    "Path",
    "Sex",
    "Age",
    "Frontal/Lateral",
    "AP/PA",
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]


def write_chexpert(
    root: Path,
    *,
    patients: int = 4,
    studies: int = 2,
    lateral: bool = True,
    csv_name: str = "train.csv",
    split: str = "train",
    folder: str = "CheXpert-v1.0-small",
    size: tuple[int, int] = (48, 40),
    seed: int = 0,
) -> Path:
    """Writes a tiny CheXpert-format data set and returns its release folder.

    Every study has a frontal view (``view1_frontal.jpg``) and, with ``lateral``, a lateral
    one. Label cells are drawn from the real encodings (``1.0``, ``0.0``, ``-1.0``, blank;
    ``No Finding`` only ``1.0`` or blank). Each image is a smooth gradient with a brightness
    unique to its row, so tests can tell images apart after resizing.
    """
    rng = np.random.default_rng(seed)
    release = root / folder
    rows = []
    for patient in range(1, patients + 1):
        for study in range(1, studies + 1):
            views = ["frontal", "lateral"] if lateral else ["frontal"]
            for number, view in enumerate(views, start=1):
                relative = f"{split}/patient{patient:05d}/study{study}/view{number}_{view}.jpg"
                image_path = release / relative
                image_path.parent.mkdir(parents=True, exist_ok=True)
                level = (len(rows) * 37) % 200
                width, height = size
                gradient = np.linspace(0, 40, width)[None, :] + np.zeros((height, 1))
                pixels = np.clip(gradient + level, 0, 255).astype(np.uint8)
                Image.fromarray(pixels, mode="L").save(image_path, quality=95)
                cells = [rng.choice(["1.0", "0.0", "-1.0", ""]) for _ in range(13)]
                rows.append(
                    [
                        f"{folder}/{relative}",
                        rng.choice(["Male", "Female"]),
                        str(int(rng.integers(18, 90))),
                        "Frontal" if view == "frontal" else "Lateral",
                        rng.choice(["AP", "PA"]) if view == "frontal" else "",
                        rng.choice(["1.0", ""]),
                        *cells,
                    ]
                )
    release.mkdir(parents=True, exist_ok=True)
    with open(release / csv_name, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CHEXPERT_HEADER)
        writer.writerows(rows)
    return release


@pytest.fixture
def make_chexpert(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a tiny CheXpert-format data set under ``tmp_path`` (see write_chexpert)."""

    def make(**options: object) -> Path:
        return write_chexpert(tmp_path, **options)  # type: ignore[arg-type]

    return make


@pytest.fixture(autouse=True)
def _seeded_global_generators() -> None:
    """Seeds torch's, NumPy's and Python's global generators before every test.

    Tests draw their inputs from seeded generators of their own; this also pins what they leave
    to the global ones (a ``torch.rand`` input, a transform's coin flip, DataLoader worker
    seeds), so that no test's outcome depends on the tests that ran before it.
    """
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - the global generator is the one being pinned
    random.seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips tests marked ``slow`` unless ``CHEXVIZ_SLOW=1`` or ``-m slow`` asks for them."""

    if os.environ.get("CHEXVIZ_SLOW") == "1" or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="long soak/fuzz variant: set CHEXVIZ_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# --------------------------------------------------------------------------------------------
# A stand-in for an accelerator (see tests/test_device.py)


class DeviceTensor(torch.Tensor):
    """Stand-in for a tensor on an accelerator: NumPy refuses it until it is moved to the CPU.

    Results of operations on it are ``DeviceTensor``s too (as results of CUDA operations are
    CUDA tensors); ``.cpu()`` and ``.to("cpu")`` return plain tensors. ``.item()`` and
    ``.tolist()`` keep working, as they do on CUDA.
    """

    @classmethod
    def __torch_function__(
        cls,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in (torch.Tensor.numpy, torch.Tensor.__array__):
            raise TypeError(
                "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy "
                "the tensor to host memory first. (DeviceTensor stand-in)"
            )
        if func is torch.Tensor.cpu or (func is torch.Tensor.to and _to_cpu(args, kwargs)):
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*args, **kwargs)
            return out.as_subclass(torch.Tensor)
        return super().__torch_function__(func, types, args, kwargs)


def _to_cpu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    given = [*args[1:2], kwargs.get("device")]
    return any(str(value) == "cpu" for value in given if isinstance(value, (str, torch.device)))


def put_on_device(model: torch.nn.Module) -> None:
    """Makes the model's floating-point buffers, and so every output, DeviceTensors."""
    for module in model.modules():
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.is_floating_point():
                module._buffers[name] = buffer.as_subclass(DeviceTensor)


def trainers_on_device(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Makes every ``Trainer`` built from now on put its model on the DeviceTensor stand-in.

    Returns:
        The list the trainers are appended to as they are built.
    """
    from chexviz.training.trainer import Trainer

    built: list[Trainer] = []
    original = Trainer.__init__

    def on_device(self: Trainer, model: torch.nn.Module, **kwargs: Any) -> None:
        original(self, model, **kwargs)  # type: ignore[arg-type]  # moves it to its device
        put_on_device(model)
        built.append(self)

    monkeypatch.setattr(Trainer, "__init__", on_device)
    return built


@pytest.fixture(scope="module")
def chexlocalize_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small synthetic set with CheXlocalize files (16 validation patients) and a model file.

    Module scope: each test module gets its own copy, so their outputs never meet.
    """
    from chexviz.data.synthetic import make_synthetic_chexpert
    from chexviz.models.classifier import MultiLabelClassifier

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_chexpert(root / "data", n_patients=1, valid_patients=16)
    torch.manual_seed(0)
    model = root / "model.safetensors"
    MultiLabelClassifier("simple_cnn", image_size=48).save(model)
    return root, model
