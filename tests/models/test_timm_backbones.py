"""timm models as chexviz backbones: built through the registry, trained, explained."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from chexviz.data.dataset import CheXpertDataset
from chexviz.data.synthetic import make_synthetic_chexpert
from chexviz.models.classifier import MultiLabelClassifier
from chexviz.models.registry import create_backbone, list_backbones
from chexviz.training.trainer import Trainer

timm = pytest.importorskip("timm")

VIT = "timm/vit_tiny_patch16_224"
CONVNEXT = "timm/convnext_atto"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_chexpert(
        tmp_path_factory.mktemp("timm-data"), n_patients=4, valid_patients=2, seed=1
    )


@pytest.mark.parametrize(("name", "size"), [(VIT, 32), (CONVNEXT, 32)])
def test_classifier_trains_one_epoch(release: Path, name: str, size: int) -> None:
    torch.manual_seed(0)
    model = MultiLabelClassifier(name, image_size=size)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = CheXpertDataset(release, image_size=size, progress=False)
    trainer = Trainer(model, batch_size=4, epochs=1, lr=1e-3, progress=False)
    history = trainer.fit(data)
    assert len(history) == 1
    assert torch.isfinite(torch.tensor(history[0].train_loss))
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.features.model.") for k in changed)
    model.eval()
    features = model.forward_features(torch.rand(2, 1, size, size))
    assert features.shape[:2] == (2, model.backbone.info.num_features)
    assert model.target_layer is model.backbone.features.grid


def test_info_comes_from_pretrained_cfg_and_feature_info() -> None:
    vit = create_backbone(VIT).info
    assert vit.first_conv == "features.model.patch_embed.proj"
    assert (vit.mean, vit.std) == ((0.5,), (0.5,))  # the pretrained RGB values, averaged
    assert (vit.num_features, vit.min_input_size, vit.input_size) == (192, 16, 224)
    convnext = create_backbone(CONVNEXT, in_channels=3).info
    cfg = timm.create_model("convnext_atto").pretrained_cfg
    assert convnext.mean == tuple(cfg["mean"])
    assert convnext.std == tuple(cfg["std"])
    assert (convnext.num_features, convnext.min_input_size) == (320, 32)
    assert convnext.first_conv == "features.model.stem.0"
    assert convnext.weights is None


def test_tokens_become_the_patch_grid_without_prefix_tokens() -> None:
    torch.manual_seed(0)
    backbone = create_backbone(VIT).eval()
    x = torch.rand(1, 1, 32, 48)  # a 2x3 patch grid: non-square
    with torch.no_grad():
        tokens = backbone.features.model.forward_features(x)
        grid = backbone(x)
    assert tokens.shape == (1, 1 + 6, 192)  # class token first
    assert grid.shape == (1, 192, 2, 3)
    torch.testing.assert_close(grid[0, :, 1, 2], tokens[0, 1 + 5])


def test_one_channel_stem_is_timms_summed_rgb(monkeypatch: pytest.MonkeyPatch) -> None:
    """in_chans=1 goes to timm, which sums pretrained RGB kernels (here checked offline)."""
    calls = []
    real = timm.create_model

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    backbone = create_backbone(CONVNEXT, in_channels=1)
    assert calls[-1]["in_chans"] == 1
    assert backbone.get_submodule(backbone.info.first_conv).in_channels == 1
    rgb = torch.randn(8, 3, 4, 4)
    adapted = timm.models.adapt_input_conv(1, rgb)
    torch.testing.assert_close(adapted, rgb.sum(dim=1, keepdim=True))


def test_unknown_timm_name_lists_close_matches() -> None:
    with pytest.raises(KeyError, match="close matches: timm/convnext_atto"):
        create_backbone("timm/convnxt_atto")


def test_listing_mentions_the_prefix_without_listing_timm() -> None:
    assert not any(name.startswith("timm/") for name in list_backbones())
    with pytest.raises(KeyError, match="timm/<name>"):
        create_backbone("no_such_backbone")


def test_missing_timm_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match=r'pip install "chexviz\[timm\]"'):
        create_backbone(CONVNEXT)


def test_saved_timm_classifier_loads_back(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MultiLabelClassifier(CONVNEXT, image_size=32).eval()
    again = MultiLabelClassifier.load(model.save(tmp_path / "m.safetensors"))
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
