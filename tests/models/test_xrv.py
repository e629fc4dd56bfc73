"""torchxrayvision models through chexviz: safe loading, labels, thresholds, same outputs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from chexviz.models.classifier import MultiLabelClassifier
from chexviz.models.registry import create_backbone
from chexviz.models.xrv import center_crop_resize, from_torchxrayvision, load_xrv_state_dict

xrv = pytest.importorskip("torchxrayvision")

CHEX = "densenet121-res224-chex"


def _cache_file(cache: Path, name: str) -> Path:
    return cache / os.path.basename(xrv.models.model_urls[name]["weights_url"])


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """xrv's cache folder, moved into tmp_path (xrv and chexviz both look there)."""
    folder = tmp_path / "models_data"
    folder.mkdir()
    monkeypatch.setattr(xrv.utils, "get_cache_dir", lambda: str(folder) + "/")
    return folder


def _publish_densenet(cache: Path, name: str) -> None:
    """Saves a random DenseNet as xrv publishes its DenseNets: the whole pickled module."""
    torch.manual_seed(0)
    torch.save(xrv.models.DenseNet(weights=None), _cache_file(cache, name))


def _image() -> tuple[torch.Tensor, torch.Tensor]:
    """One 8-bit image as chexviz feeds it ([0, 1]) and as xrv does (normalize(img, 255))."""
    pixels = np.random.default_rng(0).integers(0, 256, (224, 224)).astype(np.uint8)
    ours = torch.from_numpy(pixels).float().div(255)[None, None]
    theirs = torch.from_numpy(xrv.datasets.normalize(pixels, 255).astype(np.float32))[None, None]
    return ours, theirs


def test_densenet_gives_xrv_outputs_labels_and_thresholds(cache: Path) -> None:
    _publish_densenet(cache, CHEX)
    model = from_torchxrayvision(f"xrv:{CHEX}")
    reference = xrv.models.DenseNet(weights=CHEX)  # xrv's own (unsafe) loader, on our file
    keep = [i for i, p in enumerate(reference.pathologies) if p]
    assert model.labels == (
        "Atelectasis",
        "Consolidation",
        "Pneumothorax",
        "Edema",
        "Pleural Effusion",
        "Pneumonia",
        "Cardiomegaly",
        "Lung Lesion",
        "Fracture",
        "Lung Opacity",
        "Enlarged Cardiomediastinum",
    )
    assert (model.image_size, model.in_channels) == (224, 1)
    op = torch.tensor(xrv.models.model_urls[CHEX]["op_threshs"], dtype=torch.float32)
    torch.testing.assert_close(model.thresholds, op[keep])
    ours, theirs = _image()
    with torch.no_grad():
        normalised = reference(theirs)  # op_norm applied: 0.5 is the operating point
        reference.op_threshs = None
        logits = reference(theirs)[:, keep]
        mine = model(ours)
    # Random weights give logits in the thousands: compare relative to their size.
    assert ((mine - logits).abs().max() / logits.abs().max()).item() <= 1e-5
    assert (torch.sigmoid(mine) - torch.sigmoid(logits)).abs().max().item() <= 1e-5
    decided = torch.sigmoid(mine) >= model.thresholds
    assert torch.equal(decided, normalised[:, keep] >= 0.5)


def test_resnet_state_dict_file_gives_xrv_outputs(cache: Path) -> None:
    name = "resnet50-res512-all"
    torch.manual_seed(0)
    # xrv publishes its ResNets as the inner torchvision model's state dict.
    inner = pytest.importorskip("torchvision").models.resnet50(num_classes=18)
    inner.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    torch.save(inner.state_dict(), _cache_file(cache, name))
    model = from_torchxrayvision(name)
    reference = xrv.models.ResNet(weights=name)
    reference.op_threshs = None
    assert model.image_size == 512
    assert "Pleural Effusion" in model.labels
    assert "Infiltration" in model.labels
    x = torch.rand(1, 1, 512, 512)
    with torch.no_grad():
        mine, theirs = model(x), reference(x * 2048 - 1024)
    assert ((mine - theirs).abs().max() / theirs.abs().max()).item() <= 1e-5


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_run(cache: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"model": _Exploit(marker)}, _cache_file(cache, CHEX))
    with pytest.raises(ValueError, match=r"refused.*allow-list"):
        from_torchxrayvision(CHEX)
    assert not marker.exists()
    with pytest.raises(ValueError, match="refused"):
        load_xrv_state_dict(_cache_file(cache, CHEX))
    assert not marker.exists()


def test_missing_weights_say_where_to_put_them(cache: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"not in the cache.*Download https://"):
        from_torchxrayvision(CHEX)


def test_unknown_weights_name_lists_known() -> None:
    with pytest.raises(KeyError, match="densenet121-res224-all"):
        from_torchxrayvision("densenet121-res224-nope")


def test_from_module_drops_empty_outputs_and_keeps_own_names() -> None:
    torch.manual_seed(0)
    net = xrv.models.DenseNet(weights=None)
    net.pathologies = ["", "Effusion", "Infiltration", *[f"x{i}" for i in range(15)]]
    model = from_torchxrayvision(net)
    assert model.labels[:2] == ("Pleural Effusion", "Infiltration")
    assert model.num_labels == 17
    torch.testing.assert_close(model.thresholds, torch.full((17,), 0.5))


def test_module_with_wrong_output_count_is_refused() -> None:
    net = xrv.models.DenseNet(weights=None)
    net.pathologies = ["Effusion"] * 3
    with pytest.raises(ValueError, match=r"18 outputs for 3 pathologies.*\(N, 3\)"):
        from_torchxrayvision(net)


def test_not_an_xrv_model_is_refused() -> None:
    with pytest.raises(TypeError, match="DenseNet / ResNet"):
        from_torchxrayvision(torch.nn.Linear(2, 2))


def test_saved_xrv_classifier_loads_back(cache: Path, tmp_path: Path) -> None:
    _publish_densenet(cache, CHEX)
    model = from_torchxrayvision(CHEX)
    path = model.save(tmp_path / "xrv.safetensors")
    again = MultiLabelClassifier.load(path)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    assert again.labels == model.labels
    assert again.pretrained_weights == f"torchxrayvision:{CHEX}"
    assert model.input_crop == again.input_crop == "center"


def test_xrv_backbone_needs_one_channel() -> None:
    assert create_backbone("xrv/densenet121-res224-all").info.input_size == 224
    with pytest.raises(ValueError, match="1 input channel"):
        create_backbone("xrv/densenet121-res224-all", in_channels=3)


def test_missing_torchxrayvision_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchxrayvision", None)
    with pytest.raises(ImportError, match=r'pip install "chexviz\[xrv\]"'):
        from_torchxrayvision(CHEX)


def test_center_crop_resize_matches_xrv_crop() -> None:
    image = torch.rand(1, 30, 40)
    cropped = xrv.datasets.XRayCenterCrop()(image.numpy())
    torch.testing.assert_close(center_crop_resize(image, 30), torch.from_numpy(cropped))
    assert center_crop_resize(image, 16).shape == (1, 16, 16)


def test_cli_explains_with_an_xrv_spec(cache: Path, tmp_path: Path) -> None:
    from PIL import Image

    from chexviz.cli import main

    _publish_densenet(cache, CHEX)
    image = tmp_path / "cxr.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (240, 200), np.uint8)).save(image)
    out = tmp_path / "out"
    code = main(["explain", str(image), "--model", f"xrv:{CHEX}", "--out", str(out)])
    assert code in (0, None)
    assert (out / "report.html").is_file()


def test_old_weight_file_loads_as_whole_and_bad_crop_is_refused(tmp_path: Path) -> None:
    from chexviz.models.serialization import WeightFileError, read_header, write_weights

    model = MultiLabelClassifier("example_tiny", 2, image_size=32)
    path = model.save(tmp_path / "old.safetensors")
    assert "input_crop" not in read_header(path)["config"]  # as files before the field
    assert MultiLabelClassifier.load(path).input_crop == "whole"
    bad = {**model.config(), "input_crop": "middle"}
    write_weights(tmp_path / "bad.safetensors", model.state_dict(), {"config": bad})
    with pytest.raises(WeightFileError, match="input_crop' must be 'whole' or 'center'"):
        MultiLabelClassifier.load(tmp_path / "bad.safetensors")


def test_cli_localize_refuses_boxes_for_a_center_crop_model(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from chexviz.cli import main

    _publish_densenet(cache, CHEX)
    boxes = tmp_path / "BBox_List_2017.csv"
    boxes.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n", encoding="utf-8")
    argv = ["localize", "--model", f"xrv:{CHEX}", "--data", str(tmp_path)]
    assert main([*argv, "--nih-boxes", str(boxes), "--out", str(tmp_path / "out")]) == 1
    assert "boxes are drawn on the whole image" in capsys.readouterr().err
