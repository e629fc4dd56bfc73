from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import EntryPoint

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from chexviz.models import registry
from chexviz.models.registry import (
    ENTRY_POINT_GROUP,
    Backbone,
    BackboneInfo,
    create_backbone,
    list_backbones,
    register_backbone,
)

PLUGIN_INSTALLED = importlib.util.find_spec("chexviz_example_plugin") is not None


def _info(name: str, in_channels: int = 1) -> BackboneInfo:
    return BackboneInfo(name, 4, (0.5,) * in_channels, (0.5,) * in_channels, 1, "features")


def _tiny(name: str, in_channels: int) -> Backbone:
    return Backbone(nn.Conv2d(in_channels, 4, 1), _info(name, in_channels))


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A private copy of the registry state, discovered afresh with no plugins."""
    list_backbones()  # make sure built-ins are registered before copying
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))
    monkeypatch.setattr(registry, "_BROKEN_PLUGINS", {})


def _fake_entry_points(
    monkeypatch: pytest.MonkeyPatch, *points: tuple[str, str]
) -> list[EntryPoint]:
    eps = [EntryPoint(name=n, value=v, group=ENTRY_POINT_GROUP) for n, v in points]

    def fake(*, group: str) -> list[EntryPoint]:
        assert group == ENTRY_POINT_GROUP
        return eps

    monkeypatch.setattr(registry, "entry_points", fake)
    monkeypatch.setattr(registry, "_discovered", False)
    return eps


def test_builtins_listed_sorted() -> None:
    names = list_backbones()
    assert names == sorted(names)
    for name in ("densenet121", "inception_v3", "simple_cnn", "vgg16", "convnext_tiny"):
        assert name in names


def test_list_patterns() -> None:
    assert list_backbones("resnet*") == ["resnet18", "resnet50"]
    assert list_backbones(["vgg*", "dense*"]) == ["densenet121", "vgg16"]
    assert list_backbones("resnet*", exclude="*50") == ["resnet18"]
    assert "simple_cnn" not in list_backbones(exclude=["simple_*", "x"])
    assert list_backbones("nothing*") == []


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789*?", max_size=6))
def test_list_is_subset_and_exclusion_complements(pattern: str) -> None:
    everything = set(list_backbones())
    included = set(list_backbones(pattern))
    excluded = set(list_backbones(exclude=pattern))
    assert included <= everything
    assert included | excluded == everything
    assert not included & excluded


def test_unknown_name_lists_registered() -> None:
    with pytest.raises(KeyError, match=r"unknown backbone 'resnet19'.*resnet18, resnet50"):
        create_backbone("resnet19")


@pytest.mark.usefixtures("isolated")
def test_register_and_create() -> None:
    @register_backbone("unit_tiny")
    def build(*, pretrained: bool, in_channels: int) -> Backbone:
        return _tiny("unit_tiny", in_channels)

    assert "unit_tiny" in list_backbones("unit_*")
    backbone = create_backbone("unit_tiny", in_channels=3)
    assert backbone.info.in_channels == 3
    assert backbone(torch.rand(1, 3, 5, 5)).shape == (1, 4, 5, 5)


@pytest.mark.usefixtures("isolated")
def test_duplicate_name_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"'resnet18' is already registered .*chexviz\.models\.backbones"
    ):
        register_backbone("resnet18")(lambda *, pretrained, in_channels: None)


def test_bad_names_and_channels_rejected() -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        register_backbone("")
    with pytest.raises(ValueError, match="in_channels must be a positive integer, got 0"):
        create_backbone("simple_cnn", in_channels=0)


@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize(
    ("result", "message"),
    [
        (lambda c: nn.Identity(), "returned Identity, expected a chexviz.models.registry.Backbone"),
        (lambda c: _tiny("other", c), "whose info.name is 'other'"),
        (lambda c: _tiny("broken_builder", 3), "asked for in_channels=1"),
        (
            lambda c: Backbone(
                nn.Identity(), BackboneInfo("broken_builder", 1, (0.0,), (1.0,), 1, "nope")
            ),
            "gradcam_layer 'nope'",
        ),
    ],
)
def test_inconsistent_builder_reported(result: object, message: str) -> None:
    register_backbone("broken_builder")(lambda *, pretrained, in_channels: result(in_channels))  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        create_backbone("broken_builder")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "name"),
        ({"num_features": 0}, "num_features"),
        ({"mean": (0.5,), "std": (0.5, 0.5)}, "one value per input channel"),
        ({"mean": (), "std": ()}, "one value per input channel"),
        ({"std": (0.0,)}, "finite and positive"),
        ({"min_input_size": 0}, "min_input_size"),
        ({"gradcam_layer": ""}, "gradcam_layer"),
    ],
)
def test_backbone_info_validated(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "name": "x",
        "num_features": 1,
        "mean": (0.5,),
        "std": (0.5,),
        "min_input_size": 1,
        "gradcam_layer": "features",
    }
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        BackboneInfo(**fields)  # type: ignore[arg-type]


@pytest.mark.skipif(not PLUGIN_INSTALLED, reason="pip install -e tests/plugin")
def test_plugin_discovered_through_entry_point() -> None:
    assert "example_tiny" in list_backbones()
    backbone = create_backbone("example_tiny", in_channels=1)
    assert type(backbone).__module__ == "chexviz.models.registry"
    assert registry._BUILDERS["example_tiny"].__module__ == "chexviz_example_plugin"
    out = backbone(torch.rand(2, 1, 8, 8))
    assert out.shape == (2, 8, 4, 4)


@pytest.mark.usefixtures("isolated")
def test_plugin_entry_point_to_callable_is_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = type(sys)("fake_chexviz_plugin")
    module.build = lambda *, pretrained, in_channels: _tiny("callable_tiny", in_channels)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_chexviz_plugin", module)
    _fake_entry_points(monkeypatch, ("callable_tiny", "fake_chexviz_plugin:build"))
    assert "callable_tiny" in list_backbones()
    assert create_backbone("callable_tiny").info.name == "callable_tiny"


@pytest.mark.usefixtures("isolated")
def test_broken_plugin_warns_and_does_not_break_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_entry_points(monkeypatch, ("ghost", "chexviz_no_such_module_xyz:build"))
    with pytest.warns(RuntimeWarning, match=r"plugin 'ghost' \(chexviz_no_such_module_xyz:build\)"):
        names = list_backbones()
    assert "resnet18" in names
    assert "ghost" not in names
    assert create_backbone("simple_cnn").info.name == "simple_cnn"
    with pytest.raises(KeyError, match=r"'ghost' comes from a plugin that failed to load.*"):
        create_backbone("ghost")


@pytest.mark.usefixtures("isolated")
def test_plugin_clashing_with_builtin_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    module = type(sys)("clashing_chexviz_plugin")
    monkeypatch.setitem(sys.modules, "clashing_chexviz_plugin", module)

    def load_clash() -> None:
        register_backbone("resnet18")(lambda *, pretrained, in_channels: None)

    module.__getattr__ = lambda name: load_clash()  # type: ignore[attr-defined]
    _fake_entry_points(monkeypatch, ("clash", "clashing_chexviz_plugin:anything"))
    with pytest.warns(RuntimeWarning, match=r"plugin 'clash'.*already registered"):
        list_backbones()
    assert registry._BUILDERS["resnet18"].__module__ == "chexviz.models.backbones"


@pytest.mark.usefixtures("isolated")
def test_discovery_happens_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting(*, group: str) -> list[EntryPoint]:
        calls.append(group)
        return []

    monkeypatch.setattr(registry, "entry_points", counting)
    monkeypatch.setattr(registry, "_discovered", False)
    list_backbones()
    list_backbones("res*")
    create_backbone("simple_cnn")
    assert calls == [ENTRY_POINT_GROUP]


@pytest.mark.usefixtures("isolated")
def test_failed_builtin_import_is_retried_by_the_next_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_entry_points(monkeypatch)
    real = registry.importlib.import_module
    calls: list[str] = []

    def flaky(name: str) -> object:
        calls.append(name)
        if len(calls) == 1:
            raise ImportError("torchvision is broken")
        return real(name)

    monkeypatch.setattr(registry.importlib, "import_module", flaky)
    with pytest.raises(ImportError, match="torchvision is broken"):
        list_backbones()
    assert "resnet18" in list_backbones()  # tried again, not remembered as discovered
    assert calls == ["chexviz.models.backbones", "chexviz.models.backbones"]


@pytest.mark.usefixtures("isolated")
def test_first_conv_must_name_a_conv2d(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_entry_points(monkeypatch)

    @register_backbone("bad_stem")
    def bad_stem(*, pretrained: bool, in_channels: int) -> Backbone:
        info = BackboneInfo("bad_stem", 4, (0.5,), (0.5,), 1, "features", first_conv="features")
        return Backbone(nn.ReLU(), info)

    with pytest.raises(ValueError, match="first_conv 'features', which is a ReLU"):
        create_backbone("bad_stem")
