from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from chexviz.data.labels import CHEXPERT_LABELS, COMPETITION_LABELS
from chexviz.models.classifier import MultiLabelClassifier
from chexviz.models.registry import list_backbones


def _model(**kwargs: object) -> MultiLabelClassifier:
    torch.manual_seed(0)
    options: dict[str, object] = {"image_size": 32}
    options.update(kwargs)
    return MultiLabelClassifier("simple_cnn", **options)  # type: ignore[arg-type]


def test_defaults() -> None:
    model = _model()
    assert model.labels == CHEXPERT_LABELS
    assert model.num_labels == 14
    assert model.in_channels == 1
    assert model.image_size == 32
    assert model.backbone.info.name == "simple_cnn"
    torch.testing.assert_close(model.thresholds, torch.full((14,), 0.5))
    assert model.config() == {
        "pretrained_weights": None,
        "backbone": "simple_cnn",
        "head": "linear",
        "in_channels": 1,
        "num_labels": 14,
        "labels": list(CHEXPERT_LABELS),
        "image_size": 32,
        "dropout": 0.0,
    }


@pytest.mark.parametrize("head", ["linear", "mlp", "attention_pool", "study_attention"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_returns_logits(head: str, in_channels: int) -> None:
    model = _model(head=head, in_channels=in_channels, labels=COMPETITION_LABELS).eval()
    x = torch.rand(3, in_channels, 32, 32)
    logits = model(x)
    assert logits.shape == (3, 5)
    torch.testing.assert_close(model.predict_proba(x), torch.sigmoid(logits))
    torch.testing.assert_close(model.forward_head(model.forward_features(x)), logits)
    assert not model.predict_proba(x).requires_grad


def test_normalisation_happens_inside() -> None:
    model = _model(in_channels=3).eval()
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(model.backbone.info.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.backbone.info.std).view(1, 3, 1, 1)
    expected = model.head(model.backbone((x - mean) / std))
    torch.testing.assert_close(model(x), expected)
    assert set(model.state_dict()) >= {"mean", "std", "thresholds"}


@pytest.mark.parametrize("head", ["linear", "mlp", "attention_pool", "study_attention"])
def test_target_layer_output_is_what_the_head_consumes(head: str) -> None:
    model = _model(head=head).eval()
    assert model.target_layer_name == "backbone.features.block4"
    assert model.target_layer is model.get_submodule(model.target_layer_name)
    captured: list[torch.Tensor] = []
    consumed: list[torch.Tensor] = []
    model.target_layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    model.head.register_forward_pre_hook(lambda _m, args: consumed.append(args[0]))
    model(torch.rand(1, 1, 32, 32))
    assert captured[0] is consumed[0]
    assert captured[0].shape == (1, model.backbone.info.num_features, 4, 4)


@pytest.mark.parametrize("name", list_backbones())
def test_gradients_of_each_logit_reach_target_layer(name: str) -> None:
    torch.manual_seed(0)
    model = MultiLabelClassifier(name, labels=("a", "b"), head="attention_pool", image_size=75)
    model.eval()
    grads: list[torch.Tensor] = []

    def keep_grad(_module: nn.Module, _inputs: object, out: torch.Tensor) -> None:
        out.register_hook(grads.append)

    model.target_layer.register_forward_hook(keep_grad)
    logits = model(torch.rand(1, 1, 75, 75))
    logits[0, 1].backward()
    assert len(grads) == 1
    assert grads[0].shape[1] == model.backbone.info.num_features
    assert grads[0].abs().sum() > 0


def test_mlp_head_construction_keeps_batchnorm_statistics() -> None:
    model = _model(head="mlp")
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.num_batches_tracked.item() == 0
            torch.testing.assert_close(module.running_mean, torch.zeros_like(module.running_mean))
    assert model.training
    assert model.head.fc1.in_features == 128 * 4 * 4


@pytest.mark.parametrize(
    ("x", "error", "message"),
    [
        (torch.rand(1, 3, 32, 32), ValueError, r"expected 1 input channel\(s\), got 3"),
        (torch.rand(1, 1, 4, 32), ValueError, r"input 4x32 is smaller than .*minimum 8x8"),
        (torch.rand(1, 32, 32), ValueError, r"expected images of shape \[B, 1, H, W\]"),
        (torch.zeros(1, 1, 32, 32, dtype=torch.uint8), ValueError, "float images"),
        ("not a tensor", TypeError, "expected a torch.Tensor, got str"),
    ],
)
def test_bad_input(x: object, error: type[Exception], message: str) -> None:
    model = _model()
    with pytest.raises(error, match=message):
        model(x)  # type: ignore[arg-type]


def test_mlp_head_needs_training_size() -> None:
    model = _model(head="mlp")
    with pytest.raises(ValueError, match="'mlp' head needs 32x32 input, got 64x64"):
        model(torch.rand(1, 1, 64, 64))
    assert _model(head="linear")(torch.rand(1, 1, 64, 64)).shape == (1, 14)


def test_inception_accepts_study_size_and_rejects_small() -> None:
    model = MultiLabelClassifier("inception_v3", image_size=128).eval()
    assert model(torch.rand(1, 1, 128, 128)).shape == (1, 14)
    with pytest.raises(ValueError, match=r"smaller than backbone 'inception_v3'.s minimum 75x75"):
        model(torch.rand(1, 1, 74, 74))
    with pytest.raises(ValueError, match="image_size=64 is below backbone 'inception_v3'"):
        MultiLabelClassifier("inception_v3", image_size=64)


def test_labels_resolution() -> None:
    assert _model(labels=COMPETITION_LABELS).num_labels == 5
    assert _model(num_labels=14).labels == CHEXPERT_LABELS
    assert _model(num_labels=3).labels == ("label_0", "label_1", "label_2")
    with pytest.raises(ValueError, match="num_labels=4 but 5 labels were given"):
        _model(num_labels=4, labels=COMPETITION_LABELS)
    with pytest.raises(ValueError, match=r"repeated: \['a'\]"):
        _model(labels=("a", "b", "a"))
    with pytest.raises(ValueError, match="not the string"):
        _model(labels="Edema")
    with pytest.raises(ValueError, match="num_labels must be a positive integer"):
        _model(num_labels=0)


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match="unknown head 'rnn'; available heads: attention"):
        _model(head="rnn")
    with pytest.raises(KeyError, match="unknown backbone 'nope'"):
        MultiLabelClassifier("nope")
    with pytest.raises(ValueError, match="image_size=4 is below backbone 'simple_cnn'"):
        _model(image_size=4)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        _model(dropout=1.5)


def test_set_thresholds() -> None:
    model = _model(labels=COMPETITION_LABELS)
    model.set_thresholds([0.1, 0.2, 0.3, 0.4, 0.5])
    torch.testing.assert_close(model.thresholds, torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5]))
    model.set_thresholds({"Edema": 0.9})
    assert model.thresholds[COMPETITION_LABELS.index("Edema")].item() == pytest.approx(0.9)
    assert model.thresholds[0].item() == pytest.approx(0.1)
    model.set_thresholds(torch.full((5,), 0.25))
    torch.testing.assert_close(model.thresholds, torch.full((5,), 0.25))
    with pytest.raises(KeyError, match="unknown label 'Fracture'"):
        model.set_thresholds({"Fracture": 0.5})
    with pytest.raises(ValueError, match="expected 5 thresholds"):
        model.set_thresholds([0.5, 0.5])
    with pytest.raises(ValueError, match=r"Cardiomegaly=1.5"):
        model.set_thresholds([0.5, 1.5, 0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="Atelectasis=nan"):
        model.set_thresholds([float("nan"), 0.5, 0.5, 0.5, 0.5])
    torch.testing.assert_close(model.thresholds, torch.full((5,), 0.25))


@settings(max_examples=20, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=14, max_size=14))
def test_thresholds_round_trip(values: list[float]) -> None:
    model = _THRESHOLD_MODEL
    model.set_thresholds(values)
    torch.testing.assert_close(model.thresholds, torch.tensor(values, dtype=torch.float32))


_THRESHOLD_MODEL = MultiLabelClassifier("simple_cnn", image_size=8)


@pytest.mark.parametrize("head", ["linear", "mlp", "attention_pool", "study_attention"])
def test_from_config_rebuilds_architecture(head: str) -> None:
    model = _model(head=head, dropout=0.1, in_channels=3, labels=("x", "y"))
    clone = MultiLabelClassifier.from_config(model.config())
    assert clone.config() == model.config()
    assert {k: v.shape for k, v in clone.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
