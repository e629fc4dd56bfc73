from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from chexviz.models.classifier import MultiLabelClassifier
from chexviz.models.registry import list_backbones
from chexviz.models.serialization import (
    EXTRA_PREFIX,
    FORMAT_VERSION,
    WeightFileError,
    read_extra,
    read_header,
    read_weights,
    write_weights,
)


def _small(**kwargs: object) -> MultiLabelClassifier:
    torch.manual_seed(0)
    options: dict[str, object] = {"image_size": 16, "labels": ("a", "b", "c")}
    options.update(kwargs)
    return MultiLabelClassifier("simple_cnn", **options)  # type: ignore[arg-type]


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return _small().save(tmp_path / "model.safetensors")


def _perturb_batchnorm(model: MultiLabelClassifier) -> None:
    # Non-default running statistics prove buffers are saved, not just parameters.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                assert module.running_mean is not None
                assert module.running_var is not None
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.9, 1.1)


@pytest.mark.parametrize("name", list_backbones())
def test_round_trip_every_backbone(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    size = 75  # inception_v3's minimum; every other backbone accepts it too
    model = MultiLabelClassifier(name, labels=("x", "y"), head="linear", image_size=size)
    _perturb_batchnorm(model)
    model.set_thresholds([0.3, 0.7])
    model.eval()
    x = torch.rand(2, 1, size, size)
    with torch.no_grad():
        expected = model(x)
    path = model.save(tmp_path / f"{name}.safetensors")
    loaded = MultiLabelClassifier.load(path)
    assert not loaded.training
    assert loaded.config() == model.config()
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    torch.testing.assert_close(loaded.thresholds, torch.tensor([0.3, 0.7]))


@pytest.mark.parametrize("head", ["linear", "mlp", "attention_pool", "study_attention"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_round_trip_heads_and_channels(tmp_path: Path, head: str, in_channels: int) -> None:
    model = _small(head=head, in_channels=in_channels, dropout=0.2).eval()
    x = torch.rand(3, in_channels, 16, 16)
    loaded = MultiLabelClassifier.load(model.save(tmp_path / "m.safetensors"))
    assert loaded.config() == model.config()
    assert torch.equal(loaded(x), model(x))


def test_header_contents(saved: Path) -> None:
    header = read_header(saved)
    assert header["format"] == "chexviz"
    assert header["format_version"] == FORMAT_VERSION
    assert isinstance(header["chexviz_version"], str)
    assert header["config"] == _small().config()
    # One source of truth: the normalisation and thresholds live in the tensors only.
    assert not {"thresholds", "mean", "std"} & set(header)


def test_extras_round_trip(tmp_path: Path) -> None:
    model = _small()
    history = torch.arange(6, dtype=torch.float64).view(2, 3)
    path = model.save(
        tmp_path / "m.safetensors",
        extra_tensors={"history": history, "calibration/a": torch.ones(3)},
        extra_metadata={"epoch": "7", "note": "ünïcode"},
    )
    tensors, metadata = read_extra(path)
    assert set(tensors) == {"history", "calibration/a"}
    assert torch.equal(tensors["history"], history)
    assert tensors["history"].dtype == torch.float64
    assert metadata == {"epoch": "7", "note": "ünïcode"}
    _, state = read_weights(path)
    assert not any(k.startswith(EXTRA_PREFIX) for k in state)
    MultiLabelClassifier.load(path)  # extras do not disturb loading
    assert read_extra(_small().save(tmp_path / "plain.safetensors")) == ({}, {})


def test_extra_validation(tmp_path: Path) -> None:
    model = _small()
    with pytest.raises(ValueError, match="extra tensor 'x' is a list, not a Tensor"):
        model.save(tmp_path / "m.safetensors", extra_tensors={"x": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="extra metadata 'k' is a int, not a str"):
        model.save(tmp_path / "m.safetensors", extra_metadata={"k": 3})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="non-empty strings"):
        model.save(tmp_path / "m.safetensors", extra_metadata={"": "v"})
    with pytest.raises(ValueError, match="reserved prefix"):
        write_weights(tmp_path / "m.safetensors", {"extra/x": torch.ones(1)}, {})
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_old_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _small().save(tmp_path / "m.safetensors")
    before = path.read_bytes()

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        _small(dropout=0.3).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_overwrite_and_missing_directory(tmp_path: Path) -> None:
    path = _small().save(tmp_path / "m.safetensors")
    _small(head="attention_pool").save(path)
    assert read_header(path)["config"]["head"] == "attention_pool"
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    with pytest.raises(FileNotFoundError, match="directory does not exist"):
        _small().save(tmp_path / "nope" / "m.safetensors")
    with pytest.raises(FileNotFoundError, match="weight file not found"):
        MultiLabelClassifier.load(tmp_path / "absent.safetensors")


def test_torch_save_file_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(_small().state_dict(), path)
    with pytest.raises(WeightFileError, match=r"model.pt: this is a pickle / torch.save file"):
        MultiLabelClassifier.load(path)


class _Bomb:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED",))


def test_raw_pickle_refused_and_never_executed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(_Bomb(), protocol=2))
    for reader in (MultiLabelClassifier.load, read_header, read_extra):
        with pytest.raises(WeightFileError, match="pickle"):
            reader(path)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "too short"),
        (b"abc", "too short"),
        (struct.pack("<Q", 10**12) + b"{}", "header claims 1000000000000 bytes"),
        (struct.pack("<Q", 50) + b'{"a": 1}', "header claims 50 bytes but the file has 16"),
        (struct.pack("<Q", 4) + b"abcd", "no JSON header"),
        (struct.pack("<Q", 4) + b"{abc", "not valid JSON"),
        (struct.pack("<Q", 2) + b"[]", "no JSON header"),
        (struct.pack("<Q", 2) + b"{}", "without a chexviz header"),
    ],
)
def test_malformed_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightFileError, match=message):
        MultiLabelClassifier.load(path)


def test_truncated_tensor_data(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) - 100])
    with pytest.raises(WeightFileError, match="corrupt safetensors data"):
        MultiLabelClassifier.load(saved)


def test_foreign_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2)}, path, metadata={"framework": "pt"})
    with pytest.raises(WeightFileError, match="not written by chexviz"):
        MultiLabelClassifier.load(path)


def _rewrite_header(path: Path, edit: dict[str, object]) -> None:
    header, state = read_weights(path)
    header.update(edit)
    save_file(dict(state), path, metadata={"chexviz": json.dumps(header)})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"format_version": 99}, "format_version 99 was written by a newer chexviz"),
        ({"format_version": "1"}, "invalid format_version '1'"),
        ({"format": "other"}, "lacks format='chexviz'"),
        ({"config": "nope"}, "'config' must be an object"),
    ],
)
def test_invalid_header_fields(saved: Path, edit: dict[str, object], message: str) -> None:
    _rewrite_header(saved, edit)
    with pytest.raises(WeightFileError, match=message):
        MultiLabelClassifier.load(saved)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("backbone", None, "lacks field 'backbone'"),
        ("in_channels", True, "field 'in_channels' has invalid value True"),
        ("labels", ["a", 2, "c"], "'labels' must be 3 strings"),
        ("labels", ["a"], "'labels' must be 3 strings"),
        ("dropout", 1.5, "'dropout' out of range"),
        ("image_size", 0, "must be positive"),
        ("colour", "red", r"unknown fields \['colour'\]"),
        ("pretrained_weights", 3, "field 'pretrained_weights' has invalid value 3"),
    ],
)
def test_invalid_config_fields(saved: Path, field: str, value: object, message: str) -> None:
    config = dict(read_header(saved)["config"])
    if value is None:
        del config[field]
    else:
        config[field] = value
    _rewrite_header(saved, {"config": config})
    with pytest.raises(WeightFileError, match=message):
        read_header(saved)


def test_architecture_mismatch_named(saved: Path) -> None:
    config = dict(read_header(saved)["config"])
    config["head"] = "attention_pool"
    _rewrite_header(saved, {"config": config})
    with pytest.raises(
        WeightFileError,
        match=r"do not fit backbone 'simple_cnn' with head 'attention_pool'.*missing keys: "
        r"head\.attention\.0\.bias.*unexpected keys: head\.fc\.bias",
    ):
        MultiLabelClassifier.load(saved)


def test_shape_mismatch_named(saved: Path) -> None:
    config = dict(read_header(saved)["config"])
    config["in_channels"] = 3
    _rewrite_header(saved, {"config": config, "mean": [0.5] * 3, "std": [0.25] * 3})
    with pytest.raises(
        WeightFileError,
        match=r"shape mismatches: backbone\.features\.block1\.0\.weight: file \(16, 1, 3, 3\) "
        r"vs model \(16, 3, 3, 3\)",
    ):
        MultiLabelClassifier.load(saved)


def test_other_backbone_mismatch(saved: Path) -> None:
    config = dict(read_header(saved)["config"])
    config["backbone"] = "resnet18"
    config["image_size"] = 32
    _rewrite_header(saved, {"config": config, "mean": [0.449], "std": [0.226]})
    with pytest.raises(WeightFileError, match=r"backbone 'resnet18'.*\(\d+ in all\)"):
        MultiLabelClassifier.load(saved)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(0, 10_000), flip=st.integers(0, 255))
def test_damaged_files_fail_cleanly(saved: Path, tmp_path: Path, cut: int, flip: int) -> None:
    data = bytearray(saved.read_bytes())
    cut = cut % len(data)
    damaged = tmp_path / "damaged.safetensors"
    data[cut] = flip
    damaged.write_bytes(bytes(data))
    try:
        MultiLabelClassifier.load(damaged)
    except WeightFileError as exc:
        message = str(exc)
    else:
        return  # the flipped byte was inside tensor data
    assert str(damaged) in message


def test_unbuildable_config_named(saved: Path) -> None:
    config = dict(read_header(saved)["config"])
    config["backbone"] = "not_installed_net"
    _rewrite_header(saved, {"config": config})
    with pytest.raises(
        WeightFileError, match=r"cannot build.*unknown backbone 'not_installed_net'"
    ):
        MultiLabelClassifier.load(saved)


def test_version_1_files_still_load_and_their_header_copies_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import chexviz.models.serialization as serialization

    model = _small()
    model.set_thresholds([0.2, 0.4, 0.6])
    monkeypatch.setattr(serialization, "FORMAT_VERSION", 1)
    config = {k: v for k, v in model.config().items() if k != "pretrained_weights"}
    # Version 1 repeated the buffers in the header; a stale copy there must not win.
    header = {"config": config, "thresholds": [0.9, 0.9, 0.9], "mean": [0.1], "std": [9.0]}
    path = write_weights(tmp_path / "v1.safetensors", model.state_dict(), header)
    monkeypatch.undo()
    assert read_header(path)["format_version"] == 1
    loaded = MultiLabelClassifier.load(path)
    torch.testing.assert_close(loaded.thresholds, torch.tensor([0.2, 0.4, 0.6]))
    torch.testing.assert_close(loaded.std, model.std)
    assert loaded.pretrained_weights is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("thresholds", 1.5, "'thresholds' must be in \\[0, 1\\]"),
        ("thresholds", -0.1, "'thresholds' must be in \\[0, 1\\]"),
        ("std", 0.0, "'std' must be positive"),
        ("mean", float("inf"), "NaN or infinite values .* in mean"),
    ],
)
def test_load_refuses_buffers_that_would_make_outputs_wrong(
    tmp_path: Path, name: str, value: float, message: str
) -> None:
    model = _small()
    state = model.state_dict()
    state[name] = torch.full_like(state[name], value)
    path = write_weights(tmp_path / "bad.safetensors", state, {"config": model.config()})
    with pytest.raises(WeightFileError, match=message) as info:
        MultiLabelClassifier.load(path)
    assert "bad.safetensors" in str(info.value)


def test_pretrained_weights_name_survives_save_and_load(tmp_path: Path) -> None:
    model = _small()
    model.pretrained_weights = "ResNet18_Weights.IMAGENET1K_V1"
    loaded = MultiLabelClassifier.load(model.save(tmp_path / "m.safetensors"))
    assert loaded.pretrained_weights == "ResNet18_Weights.IMAGENET1K_V1"
    assert read_header(tmp_path / "m.safetensors")["config"]["pretrained_weights"] == (
        "ResNet18_Weights.IMAGENET1K_V1"
    )
