from __future__ import annotations

import functools
import gc
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from chexviz.data.images import load_image, to_tensor
from chexviz.data.labels import CHEXPERT_LABELS
from chexviz.explain.gradcam import METHODS, CamMethod, GradCAM
from chexviz.models.classifier import MultiLabelClassifier
from chexviz.models.registry import create_backbone, list_backbones

STUDY_BACKBONES = ("densenet121", "mobilenet_v2", "inception_v3", "vgg16")

# Raw maps against captum: same float32 arithmetic in another order.
RAW_RTOL = 1e-4
# Normalised maps against pytorch-grad-cam: cv2's float bilinear resize against torch's, and
# its 1e-7 epsilon in the normalisation.
HEATMAP_ATOL = 1e-4


def _calibrate(model: nn.Module, size: int, channels: int = 1) -> nn.Module:
    """Sets batch-norm statistics from random images, so random-init activations and
    gradients have realistic magnitudes instead of vanishing through deep stacks."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(4, channels, size, size, generator=generator))
    return model.eval()


@functools.cache
def _classifier(name: str, size: int = 128) -> MultiLabelClassifier:
    torch.manual_seed(0)
    model = MultiLabelClassifier(name, image_size=size)
    _calibrate(model, size)
    return model


def _images(batch: int, size: int = 128, channels: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _registry_size(name: str) -> int:
    return max(64, create_backbone(name).info.min_input_size)


class TinyNet(nn.Module):
    """Conv stack with an in-place ReLU after the target layer, and a linear head."""

    def __init__(self, num_classes: int = 4, channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.act = nn.ReLU(inplace=True)
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16))
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.act(self.stem(x)))
        x = self.relu(x)
        return self.head(torch.flatten(self.pool(x), 1))


def _tiny(seed: int = 0, num_classes: int = 4) -> TinyNet:
    torch.manual_seed(seed)
    return _calibrate(TinyNet(num_classes), 16)  # type: ignore[return-value]


_tiny_cached = functools.cache(_tiny)


def _hook_state(model: nn.Module) -> list[tuple[int, ...]]:
    return [
        (
            len(m._forward_hooks),
            len(m._forward_pre_hooks),
            len(m._backward_hooks),
            len(m._backward_pre_hooks),
            len(m._forward_hooks_with_kwargs),
            len(m._forward_pre_hooks_with_kwargs),
        )
        for m in model.modules()
    ]


# --- equality with captum and pytorch-grad-cam -----------------------------------------------


@pytest.mark.parametrize("name", STUDY_BACKBONES)
def test_study_backbones_match_captum_and_pytorch_grad_cam(name: str) -> None:
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM as ReferenceGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _classifier(name)
    cam = GradCAM(model)
    assert cam.target_layer is model.target_layer
    assert cam.target_layer_name == model.target_layer_name
    x = _images(2)
    per_image = [["Edema", "No Finding"], ["Pleural Effusion", "Edema"]]
    explanation = cam.explain(x, classes=per_image)
    assert explanation.classes == (("Edema", "No Finding"), ("Pleural Effusion", "Edema"))

    captum = LayerGradCam(model, cam.target_layer)
    nonzero = 0
    with ReferenceGradCAM(model, [cam.target_layer]) as reference:
        for slot in range(2):
            targets = [CHEXPERT_LABELS.index(per_image[b][slot]) for b in range(2)]
            raw = captum.attribute(x, target=targets, relu_attributions=True)[:, 0].detach()
            heat = reference(x, targets=[ClassifierOutputTarget(k) for k in targets])
            for b in range(2):
                cls = per_image[b][slot]
                scale = float(raw[b].max())
                nonzero += scale > 0
                torch.testing.assert_close(
                    explanation.raw_maps[b][cls], raw[b], rtol=RAW_RTOL, atol=RAW_RTOL * scale
                )
                np.testing.assert_allclose(
                    explanation.heatmaps[b][cls].numpy(), heat[b], atol=HEATMAP_ATOL
                )
    assert nonzero >= 2  # the comparison is not between all-zero maps


@functools.cache
def _scaled_head_densenet() -> MultiLabelClassifier:
    """DenseNet-121 with its head scaled by 100: logit gradients of ~0.1 instead of ~1e-3 make
    the epsilons pytorch-grad-cam adds to its Grad-CAM++ / XGrad-CAM denominators negligible."""
    torch.manual_seed(0)
    model = MultiLabelClassifier("densenet121", image_size=128)
    _calibrate(model, 128)
    with torch.no_grad():
        for p in model.head.parameters():
            p.mul_(100.0)
    return model


@pytest.mark.parametrize(
    ("method", "reference_name"),
    [
        ("gradcam++", "GradCAMPlusPlus"),
        ("xgradcam", "XGradCAM"),
        ("hirescam", "HiResCAM"),
        ("layercam", "LayerCAM"),
    ],
)
def test_methods_match_pytorch_grad_cam(method: CamMethod, reference_name: str) -> None:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _scaled_head_densenet()
    cam = GradCAM(model, method=method)
    x = _images(2, seed=3)
    classes = ["Cardiomegaly", "Edema", "Atelectasis"]
    explanation = cam.explain(x, classes=classes)
    with getattr(pytorch_grad_cam, reference_name)(model, [cam.target_layer]) as reference:
        for cls in classes:
            heat = reference(x, targets=[ClassifierOutputTarget(CHEXPERT_LABELS.index(cls))] * 2)
            ours = np.stack([explanation.heatmaps[b][cls].numpy() for b in range(2)])
            assert heat.max() > 0.99
            # Grad-CAM++ still sees pytorch-grad-cam's epsilon (1e-6 against 2g^2 ~ 1e-2).
            atol = 1e-3 if method == "gradcam++" else HEATMAP_ATOL
            np.testing.assert_allclose(ours, heat, atol=atol)


def test_gradcam_raw_map_is_the_selvaraju_formula() -> None:
    model = _tiny()
    cam = GradCAM(model, "block")
    x = _images(1, size=16)
    explanation = cam.explain(x, classes=[2])
    feats = model.block(model.act(model.stem(x))).detach().requires_grad_()
    logit = model.head(torch.flatten(model.pool(torch.relu(feats)), 1))[0, 2]
    (grad,) = torch.autograd.grad(logit, feats)
    expected = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * feats).sum(dim=1))[0]
    torch.testing.assert_close(explanation.raw_maps[0]["2"], expected.detach())
    assert explanation.raw_maps[0]["2"].shape == (8, 8)


# --- every registered backbone ----------------------------------------------------------------


@pytest.mark.parametrize("name", list_backbones())
def test_every_registry_backbone(name: str) -> None:
    from captum.attr import LayerGradCam

    size = _registry_size(name)
    model = _classifier(name, size)
    cam = GradCAM(model)
    assert cam.target_layer is model.target_layer
    x = _images(2, size=size, seed=5)
    explanation = cam.explain(x, classes=[["Edema"], ["Cardiomegaly", "Edema"]])
    assert explanation.layer == model.target_layer_name
    assert explanation.images.shape == (2, 1, size, size)
    raw = LayerGradCam(model, cam.target_layer).attribute(x, target=5, relu_attributions=True)
    raw = raw.detach()
    for b in range(2):
        scale = float(raw[b].abs().max())
        torch.testing.assert_close(
            explanation.raw_maps[b]["Edema"],
            raw[b, 0],
            rtol=RAW_RTOL,
            atol=RAW_RTOL * scale + 1e-12,
        )
        for heat in explanation.heatmaps[b].values():
            assert heat.shape == (size, size)
            assert 0.0 <= float(heat.min()) <= float(heat.max()) <= 1.0


# --- plain PyTorch models and automatic layer detection ---------------------------------------


def test_plain_torchvision_resnet_auto_layer_matches_captum() -> None:
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    model = _calibrate(torchvision.models.resnet18(weights=None, num_classes=5), 64, 3)
    cam = GradCAM(model)
    assert cam.target_layer_name == "layer4"
    assert cam.target_layer is model.layer4
    x = _images(2, size=64, channels=3)
    explanation = cam.explain(x)
    assert explanation.labels == ("0", "1", "2", "3", "4")
    assert torch.equal(explanation.thresholds, torch.full((5,), 0.5))
    expected = [
        tuple(str(k) for k in range(5) if row[k] >= 0.5) for row in explanation.probabilities
    ]
    assert list(explanation.classes) == expected
    reference = LayerGradCam(model, model.layer4)
    for b, classes in enumerate(explanation.classes):
        for cls in classes:
            raw = reference.attribute(x[b : b + 1], target=int(cls), relu_attributions=True)
            raw = raw[0, 0].detach()
            torch.testing.assert_close(
                explanation.raw_maps[b][cls], raw, rtol=RAW_RTOL, atol=RAW_RTOL * float(raw.max())
            )


def test_plain_densenet_with_in_place_relu_after_target() -> None:
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    model = _calibrate(torchvision.models.densenet121(weights=None, num_classes=3), 64, 3)
    cam = GradCAM(model)
    # torchvision's DenseNet applies F.relu(inplace=True) to the output of `features`.
    assert cam.target_layer_name == "features"
    x = _images(1, size=64, channels=3)
    explanation = cam.explain(x, classes=[0, 1, 2])
    reference = LayerGradCam(model, model.features)
    for k in range(3):
        raw = reference.attribute(x, target=k, relu_attributions=True)[0, 0].detach()
        torch.testing.assert_close(
            explanation.raw_maps[0][str(k)],
            raw,
            rtol=RAW_RTOL,
            atol=RAW_RTOL * float(raw.max()) + 1e-12,
        )


class TinyVGG(nn.Module):
    """VGG layout: at small inputs its AdaptiveAvgPool2d((7, 7)) *upsamples* the feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4))
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Linear(8 * 49, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class SharedReLU(nn.Module):
    """The last 4-D module output comes from a ReLU module used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def test_auto_detection_rules() -> None:
    # Adaptive pooling is skipped even when it outputs h, w > 1.
    assert GradCAM(TinyVGG()).target_layer_name == "features"
    # A module called twice is skipped: its captured output would be ambiguous.
    assert GradCAM(SharedReLU()).target_layer_name == "conv2"
    # Plain mobilenet_v2: the last block of `features`, before the pooled classifier.
    mobilenet = torchvision.models.mobilenet_v2(weights=None, num_classes=2)
    assert GradCAM(mobilenet).target_layer_name == "features"


def test_auto_detection_restores_state_and_fails_clearly() -> None:
    model = TinyVGG().train()
    before = _hook_state(model)
    GradCAM(model)
    assert model.training
    assert _hook_state(model) == before

    class NoMaps(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(224, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.mean(dim=(1, 2)))

    with pytest.raises(ValueError, match="4-D feature map"):
        GradCAM(NoMaps())

    class NeedsOtherSize(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4 * 30 * 30, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(self.conv(x), 1))

    with pytest.raises(ValueError, match="pass target_layer"):
        GradCAM(NeedsOtherSize())


def test_torchxrayvision_densenet() -> None:
    xrv = pytest.importorskip("torchxrayvision")
    torch.manual_seed(0)
    model = xrv.models.DenseNet()  # random init: weights=None downloads nothing
    cam = GradCAM(model)
    assert cam.target_layer_name == "features"
    x = torch.rand(1, 1, 224, 224) * 2048 - 1024  # torchxrayvision's input range
    explanation = cam.explain(x, classes=[0, 4])
    assert explanation.classes == (("0", "4"),)
    assert explanation.raw_maps[0]["0"].shape == (7, 7)


# --- target layers ----------------------------------------------------------------------------


def test_target_layer_by_module_and_by_name() -> None:
    model = _tiny()
    by_module = GradCAM(model, model.stem)
    by_name = GradCAM(model, "stem.1")
    assert by_module.target_layer_name == "stem"
    assert by_name.target_layer is model.stem[1]
    x = _images(1, size=16)
    a = by_module.explain(x, classes=[1]).raw_maps[0]["1"]
    b = by_name.explain(x, classes=[1]).raw_maps[0]["1"]
    torch.testing.assert_close(a, b)
    assert a.shape == (16, 16)


def test_bad_target_layers() -> None:
    model = _tiny()
    with pytest.raises(ValueError, match=r"'blok' is not a submodule of TinyNet; did you mean"):
        GradCAM(model, "blok")
    with pytest.raises(ValueError, match="not a submodule"):
        GradCAM(model, nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="model itself"):
        GradCAM(model, model)
    with pytest.raises(ValueError, match="empty"):
        GradCAM(model, [])
    with pytest.raises(ValueError, match="more than once"):
        GradCAM(model, ["block", model.block])
    with pytest.raises(TypeError, match="target_layer"):
        GradCAM(model, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown method 'gradcam\+'; choose one of"):
        GradCAM(model, method="gradcam+")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"nn\.Module"):
        GradCAM(lambda x: x)  # type: ignore[arg-type]
    # A layer that outputs logits, not a feature map.
    with pytest.raises(ValueError, match=r"'head' outputs shape \[1, 4\]"):
        GradCAM(model, "head").explain(_images(1, size=16), classes=[0])
    # A layer that does not run in the forward pass.
    model.spare = nn.Conv2d(1, 1, 1)
    with pytest.raises(ValueError, match="'spare' ran 0 times"):
        GradCAM(model, "spare").explain(_images(1, size=16), classes=[0])


def test_shared_layer_running_twice_is_refused() -> None:
    model = SharedReLU()
    with pytest.raises(ValueError, match="'relu' ran 2 times"):
        GradCAM(model, "relu").explain(_images(1, size=8, channels=3), classes=[0])
    assert _hook_state(model) == _hook_state(SharedReLU())


def test_multi_layer_fusion_is_mean_of_normalised_maps() -> None:
    model = _classifier("simple_cnn")
    names = ["backbone.features.block3", "backbone.features.block4"]
    fused = GradCAM(model, names, method="layercam")
    assert fused.target_layer_name == "+".join(names)
    assert fused.target_layers == tuple(model.get_submodule(n) for n in names)
    with pytest.raises(AttributeError, match="target_layers"):
        _ = fused.target_layer
    x = _images(2, seed=7)
    classes = ["Edema", "Cardiomegaly"]
    explanation = fused.explain(x, classes=classes)
    assert explanation.layer == "+".join(names)
    singles = [GradCAM(model, n, method="layercam").explain(x, classes=classes) for n in names]
    fine = max(s.raw_maps[0]["Edema"].shape for s in singles)
    for b in range(2):
        for cls in classes:
            parts = []
            for single in singles:
                raw = single.raw_maps[b][cls][None, None]
                if raw.shape[-2:] != fine:
                    raw = nn.functional.interpolate(
                        raw, size=fine, mode="bilinear", align_corners=False
                    )
                raw = raw[0, 0]
                parts.append((raw - raw.min()) / (raw.max() - raw.min()))
            expected = torch.stack(parts).mean(dim=0)
            torch.testing.assert_close(explanation.raw_maps[b][cls], expected)


def test_finer_layer_gives_finer_map() -> None:
    model = _classifier("densenet121")
    last = GradCAM(model).explain(_images(1), classes=["Edema"])
    earlier = GradCAM(model, "backbone.features.denseblock3").explain(_images(1), classes=[5])
    assert last.raw_maps[0]["Edema"].shape == (4, 4)
    assert earlier.raw_maps[0]["Edema"].shape == (8, 8)


# --- guarantees: one pass, hooks, state -------------------------------------------------------


@pytest.fixture
def grad_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    original = torch.autograd.grad

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    return calls


def test_one_forward_and_one_backward_for_all_classes(grad_calls: list[dict[str, Any]]) -> None:
    model = _classifier("densenet121")
    forwards: list[str] = []
    stem_requires_grad: list[bool] = []
    handles = [
        model.register_forward_hook(lambda *_: forwards.append("model")),
        model.backbone.features.denseblock1.register_forward_hook(
            lambda m, a, out: stem_requires_grad.append(out.requires_grad)
        ),
    ]
    try:
        explanation = GradCAM(model).explain(_images(3), classes=list(CHEXPERT_LABELS))
    finally:
        for handle in handles:
            handle.remove()
    assert forwards == ["model"]
    assert len(grad_calls) == 1
    assert grad_calls[0]["is_grads_batched"] is True
    # Layers before the target run without an autograd graph.
    assert stem_requires_grad == [False]
    assert all(len(c) == 14 for c in explanation.classes)


def test_row_by_row_fallback_when_vmap_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _classifier("mobilenet_v2")
    x = _images(2)
    classes = [["Edema", "Cardiomegaly", "Atelectasis"], ["Edema"]]
    expected = GradCAM(model).explain(x, classes=classes)
    original = torch.autograd.grad
    calls: list[bool] = []

    def no_vmap(*args: Any, **kwargs: Any) -> Any:
        calls.append(bool(kwargs.get("is_grads_batched")))
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("Batching rule not implemented")
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_vmap)
    fallback = GradCAM(model).explain(x, classes=classes)
    assert calls == [True, False, False, False]
    for b in range(2):
        for cls in classes[b]:
            torch.testing.assert_close(fallback.raw_maps[b][cls], expected.raw_maps[b][cls])


def test_batch_equals_images_explained_alone() -> None:
    model = _classifier("resnet18", 64)
    x = _images(3, size=64, seed=11)
    classes = [["Edema", "Fracture"], [], ["No Finding"]]
    batch = GradCAM(model, method="gradcam++").explain(x, classes=classes)
    for b in range(3):
        alone = GradCAM(model, method="gradcam++").explain(x[b], classes=classes[b])
        assert alone.classes[0] == batch.classes[b]
        for cls in classes[b]:
            torch.testing.assert_close(batch.raw_maps[b][cls], alone.raw_maps[0][cls])
            torch.testing.assert_close(batch.heatmaps[b][cls], alone.heatmaps[0][cls])


def test_model_state_untouched() -> None:
    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", image_size=64, dropout=0.5)
    model.backbone.features.block1.eval()  # a mixed train/eval model
    model.head.fc.weight.requires_grad_(False)
    x = _images(2, size=64)
    model(x).sum().backward()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = [m.training for m in model.modules()]
    hooks = _hook_state(model)
    cam = GradCAM(model)
    first = cam.explain(x, classes=["Edema"])
    second = cam.explain(x, classes=["Edema"])
    assert [m.training for m in model.modules()] == modes
    assert _hook_state(model) == hooks
    for n, p in model.named_parameters():
        assert p.requires_grad == flags[n]
        if grads[n] is None:
            assert p.grad is None
        else:
            assert torch.equal(p.grad, grads[n])  # type: ignore[arg-type]
    # Dropout and batch statistics are off while explaining: explanations are deterministic
    # and equal to those of the model in eval mode.
    torch.testing.assert_close(first.raw_maps[0]["Edema"], second.raw_maps[0]["Edema"])
    model.eval()
    torch.testing.assert_close(
        first.raw_maps[1]["Edema"], cam.explain(x, classes=["Edema"]).raw_maps[1]["Edema"]
    )


def test_cleanup_after_an_exception_mid_explain() -> None:
    model = _tiny().train()
    hooks = _hook_state(model)

    def explode(*_: Any) -> None:
        raise RuntimeError("boom in the head")

    handle = model.head.register_forward_hook(explode)
    try:
        with pytest.raises(ValueError, match="boom in the head"):
            GradCAM(model, "block").explain(_images(1, size=16), classes=[0])
    finally:
        handle.remove()
    assert _hook_state(model) == hooks
    assert all(m.training for m in model.modules())
    assert torch.is_grad_enabled()


def test_no_graph_survives_and_results_are_detached() -> None:
    model = _classifier("simple_cnn")
    refs: list[weakref.ref[torch.Tensor]] = []
    handle = model.register_forward_hook(lambda m, a, out: refs.append(weakref.ref(out)))
    try:
        explanation = GradCAM(model).explain(_images(2), classes=["Edema", "Fracture"])
    finally:
        handle.remove()
    gc.collect()
    assert refs[0]() is None  # the logits (and the graph hanging from them) are gone
    tensors = [explanation.images, explanation.probabilities, explanation.thresholds]
    for maps in (*explanation.heatmaps, *explanation.raw_maps):
        tensors.extend(maps.values())
    assert all(
        not t.requires_grad and t.grad_fn is None and t.device.type == "cpu" for t in tensors
    )


def test_works_under_no_grad_and_inference_mode() -> None:
    model = _tiny()
    x = _images(1, size=16)
    expected = GradCAM(model, "block").explain(x, classes=[0]).raw_maps[0]["0"]
    with torch.no_grad():
        got = GradCAM(model, "block").explain(x, classes=[0]).raw_maps[0]["0"]
        assert not torch.is_grad_enabled()
    torch.testing.assert_close(got, expected)
    with torch.inference_mode():
        inference_x = x.clone()
        got = GradCAM(model, "block").explain(inference_x, classes=[0]).raw_maps[0]["0"]
        assert torch.is_inference_mode_enabled()
    torch.testing.assert_close(got, expected)


def test_repr_names_model_layer_and_method() -> None:
    cam = GradCAM(_tiny(), "block")
    assert repr(cam) == "GradCAM(model=TinyNet, target_layer='block', method='gradcam')"


# --- classes, thresholds, positives -----------------------------------------------------------


def test_predicted_positives_use_model_thresholds() -> None:
    model = _classifier("simple_cnn")
    x = _images(3, seed=2)
    probabilities = model.predict_proba(x)
    thresholds = torch.linspace(0.3, 0.7, 14)
    original = model.thresholds.clone()
    model.set_thresholds(thresholds)
    try:
        explanation = GradCAM(model).explain(x)
    finally:
        model.set_thresholds(original)
    torch.testing.assert_close(explanation.probabilities, probabilities)
    torch.testing.assert_close(explanation.thresholds, thresholds)
    for b in range(3):
        expected = tuple(
            label
            for label, p, t in zip(CHEXPERT_LABELS, probabilities[b], thresholds, strict=True)
            if p >= t
        )
        assert explanation.classes[b] == expected == explanation.positives[b]
        assert list(explanation.heatmaps[b]) == list(expected)


def test_threshold_argument_overrides(grad_calls: list[dict[str, Any]]) -> None:
    model = _classifier("simple_cnn")
    x = _images(2)
    cam = GradCAM(model)
    everything = cam.explain(x, threshold=0.0)
    assert all(c == CHEXPERT_LABELS for c in everything.classes)
    assert torch.equal(everything.thresholds, torch.zeros(14))
    grad_calls.clear()
    nothing = cam.explain(x, threshold=1.0)
    assert nothing.classes == ((), ())
    assert nothing.heatmaps == ({}, {})
    assert nothing.raw_maps == ({}, {})
    assert nothing.zero_maps == (frozenset(), frozenset())
    assert grad_calls == []  # nothing to explain: no backward pass
    assert len(nothing) == 2
    assert nothing.probabilities.shape == (2, 14)


def test_class_specifications() -> None:
    model = _classifier("simple_cnn")
    cam = GradCAM(model)
    x = _images(2)
    assert cam.explain(x, classes="Edema").classes == (("Edema",), ("Edema",))
    assert cam.explain(x, classes=5).classes == (("Edema",), ("Edema",))
    assert cam.explain(x, classes=[5, "No Finding"]).classes == (("Edema", "No Finding"),) * 2
    per_image = cam.explain(x, classes=[["Edema"], [0, 2]])
    assert per_image.classes == (("Edema",), ("No Finding", "Cardiomegaly"))
    assert cam.explain(x, classes=[]).classes == ((), ())


def test_bad_classes() -> None:
    model = _classifier("simple_cnn")
    cam = GradCAM(model)
    x = _images(2)
    with pytest.raises(ValueError, match="unknown class 'Edemaa'") as info:
        cam.explain(x, classes=["Edemaa"])
    assert all(label in str(info.value) for label in CHEXPERT_LABELS)
    assert "did you mean ['Edema']" in str(info.value)
    with pytest.raises(ValueError, match="out of range"):
        cam.explain(x, classes=[14])
    with pytest.raises(ValueError, match="out of range"):
        cam.explain(x, classes=[-1])
    with pytest.raises(ValueError, match=r"asks for \['Edema'\] more than once"):
        cam.explain(x, classes=["Edema", 5])
    with pytest.raises(ValueError, match="2 images"):
        cam.explain(x, classes=[["Edema"]])
    with pytest.raises(TypeError, match="not a mix"):
        cam.explain(x, classes=["Edema", ["Edema"]])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="classes"):
        cam.explain(x, classes=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"threshold must lie in \[0, 1\]"):
        cam.explain(x, threshold=1.5)
    with pytest.raises(TypeError, match="threshold"):
        cam.explain(x, threshold="0.5")  # type: ignore[arg-type]


# --- inputs -----------------------------------------------------------------------------------


def test_bad_images() -> None:
    model = _classifier("simple_cnn")
    cam = GradCAM(model)
    expects = r"the model expects \[B, 1, 128, 128\]"
    with pytest.raises(ValueError, match=r"\[1, 3, 128, 128\]" + ".*" + expects):
        cam.explain(torch.rand(1, 3, 128, 128))
    with pytest.raises(ValueError, match=r"\[1, 1, 64, 64\]" + ".*" + expects):
        cam.explain(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"\[128, 128\]" + ".*" + expects):
        cam.explain(torch.rand(128, 128))
    with pytest.raises(ValueError, match=r"\[0, 1\].*normalises internally"):
        cam.explain(torch.rand(1, 1, 128, 128) * 2)
    with pytest.raises(ValueError, match="float tensor"):
        cam.explain(torch.zeros(1, 1, 128, 128, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        cam.explain(torch.full((1, 1, 128, 128), float("nan")))
    with pytest.raises(ValueError, match="empty batch"):
        cam.explain(torch.rand(0, 1, 128, 128))
    with pytest.raises(TypeError, match="img must be"):
        cam.explain(3)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        cam.explain(Path("/nonexistent/xray.png"))


def test_plain_model_bad_inputs() -> None:
    model = _tiny()
    cam = GradCAM(model, "block")
    with pytest.raises(ValueError, match=r"model failed on input of shape \[1, 3, 16, 16\]"):
        cam.explain(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="no image_size / in_channels"):
        cam.explain(Image.new("L", (16, 16)))

    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    with pytest.raises(ValueError, match=r"must return logits \[B, K\]"):
        GradCAM(Pair(), "conv").explain(torch.rand(1, 1, 8, 8), classes=[0])


def test_paths_and_pil_images(tmp_path: Path) -> None:
    model = _classifier("simple_cnn")
    cam = GradCAM(model)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        path = tmp_path / f"xray{i}.png"
        Image.fromarray(rng.integers(0, 256, (200, 150), dtype=np.uint8)).save(path)
        paths.append(path)
    expected = torch.stack([to_tensor(load_image(p, size=128)) for p in paths])
    from_paths = cam.explain(paths, classes=["Edema"])
    torch.testing.assert_close(from_paths.images, expected)
    tensor_run = cam.explain(expected, classes=["Edema"])
    torch.testing.assert_close(from_paths.heatmaps[1]["Edema"], tensor_run.heatmaps[1]["Edema"])
    with Image.open(paths[0]) as image:
        from_pil = cam.explain(image, classes=["Edema"])
    torch.testing.assert_close(from_pil.images, expected[:1])
    assert len(cam.explain(str(paths[1]), classes=["Edema"])) == 1
    # Each file's (width, height) before resizing, for overlays at the X-ray's own size.
    assert from_paths.source_sizes == ((150, 200), (150, 200))
    assert from_pil.source_sizes == ((150, 200),)
    assert tensor_run.source_sizes == ()
    assert tensor_run.source_size(1) == (128, 128)


def test_source_size_is_upright_and_read_before_jpeg_draft(tmp_path: Path) -> None:
    model = _classifier("simple_cnn", size=32)
    cam = GradCAM(model)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (300, 200), dtype=np.uint8)  # 200 wide, 300 high as stored
    turned = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees clockwise to show upright
    Image.fromarray(pixels).save(turned, exif=exif)
    assert cam.explain(turned, classes=[0]).source_sizes == ((300, 200),)
    # A lazily opened JPEG would be drafted to a fraction of its size by decoding.
    with Image.open(turned) as image:
        assert cam.explain(image, classes=[0]).source_sizes == ((300, 200),)


# --- maps -------------------------------------------------------------------------------------


def test_all_zero_map_is_reported_not_divided_by_zero() -> None:
    model = _tiny()
    with torch.no_grad():
        model.head.weight[1].zero_()  # class 1 ignores the features: its gradient is zero
    explanation = GradCAM(model, "block").explain(_images(1, size=16), classes=[0, 1])
    assert explanation.zero_maps == (frozenset({"1"}),)
    assert torch.equal(explanation.heatmaps[0]["1"], torch.zeros(16, 16))
    assert torch.equal(explanation.raw_maps[0]["1"], torch.zeros(8, 8))
    assert float(explanation.heatmaps[0]["0"].max()) == 1.0


def test_non_finite_maps_are_an_error() -> None:
    model = _tiny()
    with torch.no_grad():
        model.head.weight[3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"Grad-CAM map of class '\d' for image 0 is not finite"):
        GradCAM(model, "block").explain(_images(1, size=16), classes=[0, 3])


def test_heatmap_is_normalised_bilinear_upsampling_of_raw_map() -> None:
    model = _classifier("simple_cnn")
    explanation = GradCAM(model).explain(_images(1), classes=["Edema"])
    raw = explanation.raw_maps[0]["Edema"]
    up = nn.functional.interpolate(
        raw[None, None], size=(128, 128), mode="bilinear", align_corners=False
    )[0, 0]
    expected = (up - up.min()) / (up.max() - up.min())
    torch.testing.assert_close(explanation.heatmaps[0]["Edema"], expected)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(METHODS),
    batch=st.integers(1, 3),
    size=st.integers(4, 24),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_cam_invariants(method: CamMethod, batch: int, size: int, seed: int, data: Any) -> None:
    model = _tiny_cached(seed % 4)
    classes = [
        data.draw(st.lists(st.integers(0, 3), unique=True, max_size=4), label=f"classes[{b}]")
        for b in range(batch)
    ]
    x = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(seed))
    explanation = GradCAM(model, "block", method=method).explain(x, classes=classes)
    h = (size + 1) // 2
    for b in range(batch):
        assert explanation.classes[b] == tuple(str(k) for k in classes[b])
        for cls in explanation.classes[b]:
            heat, raw = explanation.heatmaps[b][cls], explanation.raw_maps[b][cls]
            assert heat.shape == (size, size)
            assert raw.shape == (h, h)
            assert bool(torch.isfinite(heat).all())
            assert bool(torch.isfinite(raw).all())
            assert float(heat.min()) >= 0.0
            assert float(heat.max()) <= 1.0
            assert float(raw.min()) >= 0.0
            assert (cls in explanation.zero_maps[b]) == (float(raw.max()) == 0.0)
            if float(raw.max()) > float(raw.min()):
                assert float(heat.max()) == pytest.approx(1.0, abs=1e-6)
            else:
                assert float(heat.max()) == 0.0


def test_explain_path_center_crops_for_an_xrv_model(tmp_path: Path) -> None:
    xrv = pytest.importorskip("torchxrayvision")
    from chexviz.models.xrv import center_crop_resize, from_torchxrayvision

    net = xrv.models.DenseNet(weights=None)
    model = from_torchxrayvision(net)
    assert model.input_crop == "center"
    size = model.image_size
    pixels = np.random.default_rng(5).integers(0, 256, (size * 3 // 2, size), dtype=np.uint8)
    path = tmp_path / "tall.png"
    Image.fromarray(pixels).save(path)
    cam = GradCAM(model)
    from_path = cam.explain(str(path), classes=[0, 1])
    tensor = center_crop_resize(torch.from_numpy(pixels).float()[None, None] / 255, size)
    from_tensor = cam.explain(tensor, classes=[0, 1])
    # The short side is the model's size, so the crop is not resized: the inputs are equal.
    torch.testing.assert_close(from_path.images, from_tensor.images)
    for label in from_tensor.heatmaps[0]:
        torch.testing.assert_close(from_path.heatmap(label), from_tensor.heatmap(label))
    assert from_path.source_sizes == ((size, size),)
