import json
import random

import numpy as np
import pytest
import torch
from safetensors import safe_open

from chexviz.models.classifier import MultiLabelClassifier
from chexviz.models.serialization import WeightFileError, read_extra
from chexviz.training.checkpoint import (
    BEST_KEY,
    STATE_KEY,
    TrainingState,
    capture_rng,
    load_training_state,
    read_history,
    restore_rng,
    save_best,
    save_training_state,
)
from chexviz.training.history import EpochRecord, History
from chexviz.training.metrics import compute_metrics

LABELS = ("a", "b")


def _model(seed=0, backbone="simple_cnn"):
    torch.manual_seed(seed)
    return MultiLabelClassifier(backbone, labels=LABELS, image_size=16)


def _trained(model):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max")
    for _ in range(2):
        loss = model(torch.rand(4, 1, 16, 16)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scheduler.step(0.5)
    return optimizer, scheduler


def _record(epoch=1):
    metrics = compute_metrics(
        np.array([[0.9, 0.2], [0.1, 0.4]]), np.array([[1, 0], [0, 0]]), 0.5, LABELS
    )
    return EpochRecord(epoch, 0.5, 1.0, 8.0, 1e-3, metrics)


def _state(optimizer, scheduler):
    rng_tensors, rng_json = capture_rng()
    return TrainingState(
        epoch=1,
        step=2,
        history=History([_record()]),
        best_score=0.75,
        bad_epochs=1,
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        partial={"loss_sum": 1.25, "steps": 2, "images": 8, "seconds": 0.5},
        settings={"batch_size": 4, "seed": 0},
        rng_tensors=rng_tensors,
        rng_json=rng_json,
    )


def test_rng_round_trip():
    tensors, state = capture_rng()
    json.dumps(state)  # JSON-able as stored
    first = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    restore_rng(tensors, json.loads(json.dumps(state)))
    second = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2] == second[2]
    assert tensors["rng/torch"].dtype == torch.uint8


def test_training_state_round_trip(tmp_path):
    model = _model()
    optimizer, scheduler = _trained(model)
    state = _state(optimizer, scheduler)
    path = save_training_state(tmp_path / "last.safetensors", model, state)

    fresh = _model(seed=1)
    loaded = load_training_state(path, fresh)
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    other_optimizer = torch.optim.Adam(fresh.parameters(), lr=1.0)
    other_optimizer.load_state_dict(loaded.optimizer)
    expected, got = optimizer.state_dict(), other_optimizer.state_dict()
    assert got["param_groups"] == expected["param_groups"]
    for index, entries in expected["state"].items():
        for name, value in entries.items():
            assert torch.equal(got["state"][index][name], value), (index, name)
    assert loaded.scheduler == scheduler.state_dict()
    assert (loaded.epoch, loaded.step, loaded.best_score, loaded.bad_epochs) == (1, 2, 0.75, 1)
    assert loaded.partial == state.partial
    assert loaded.settings == state.settings
    assert loaded.history.to_dict() == state.history.to_dict()
    assert torch.equal(loaded.rng_tensors["rng/torch"], state.rng_tensors["rng/torch"])
    assert read_history(path).to_dict() == state.history.to_dict()


def test_checkpoint_is_plain_safetensors_and_loads_as_a_model(tmp_path):
    model = _model()
    optimizer, scheduler = _trained(model)
    path = save_training_state(tmp_path / "last.safetensors", model, _state(optimizer, scheduler))
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
        assert STATE_KEY in "".join(handle.metadata())
    assert any(k.startswith("extra/optim/") for k in keys)
    assert "extra/rng/torch" in keys
    loaded = MultiLabelClassifier.load(path)
    assert torch.equal(
        loaded.backbone.features.block1[0].weight, model.backbone.features.block1[0].weight
    )
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_best_file_carries_its_record(tmp_path):
    model = _model()
    model.set_thresholds([0.3, 0.7])
    path = save_best(tmp_path / "best.safetensors", model, _record(epoch=4))
    loaded = MultiLabelClassifier.load(path)
    assert loaded.thresholds.tolist() == pytest.approx([0.3, 0.7])
    _, metadata = read_extra(path)
    record = EpochRecord.from_dict(json.loads(metadata[BEST_KEY]))
    assert record.epoch == 4
    assert record.val_auroc == 1.0
    with pytest.raises(WeightFileError, match="without training state"):
        load_training_state(path, _model())


def test_loading_into_another_architecture_fails_clearly(tmp_path):
    model = _model()
    optimizer, scheduler = _trained(model)
    path = save_training_state(tmp_path / "last.safetensors", model, _state(optimizer, scheduler))
    other = MultiLabelClassifier("simple_cnn", labels=("a", "b", "c"), image_size=16)
    with pytest.raises(WeightFileError, match=r"last\.safetensors"):
        load_training_state(path, other)
    with pytest.raises(FileNotFoundError):
        load_training_state(tmp_path / "missing.safetensors", model)


def test_state_that_is_not_json_is_refused(tmp_path):
    model = _model()
    optimizer, scheduler = _trained(model)
    state = _state(optimizer, scheduler)
    state.scheduler = {"lr_lambda": object()}
    with pytest.raises(TypeError, match="JSON-serialisable state_dict"):
        save_training_state(tmp_path / "last.safetensors", model, state)
    assert not list(tmp_path.iterdir())
