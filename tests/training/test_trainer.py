import dataclasses
import io
import logging
import math
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from chexviz._internal.progress import PROGRESS_LOGGER
from chexviz.models.classifier import MultiLabelClassifier
from chexviz.models.serialization import read_weights
from chexviz.training.checkpoint import BEST_NAME, LAST_NAME, read_history
from chexviz.training.metrics import compute_metrics
from chexviz.training.thresholds import tune_thresholds
from chexviz.training.trainer import Trainer

LABELS = ("a", "b", "c")
SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"


def _data(count, seed, *, nan=True):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, 16, 16, generator=generator)
    noise = 0.2 * torch.rand(count, 3, generator=generator)
    targets = (images.mean(dim=(1, 2, 3))[:, None] + noise > 0.6).float()
    if nan:
        targets[::4, 2] = float("nan")
    return TensorDataset(images, targets)


TRAIN, VAL = _data(24, 1), _data(12, 2)


def _model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return MultiLabelClassifier("simple_cnn", labels=LABELS, image_size=16, dropout=dropout)


def _trainer(model=None, **kwargs):
    options = {"batch_size": 8, "epochs": 2, "lr": 1e-2, "progress": False, **kwargs}
    return Trainer(_model() if model is None else model, **options)


def _assert_same_weights(a, b):
    state_a, state_b = a if isinstance(a, dict) else a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


def test_defaults_are_the_reference_study_settings():
    trainer = Trainer(_model(), progress=False)
    assert (trainer.lr, trainer.batch_size, trainer.epochs) == (2e-4, 64, 15)
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    assert trainer.optimizer.param_groups[0]["lr"] == 2e-4
    assert trainer.device == torch.device("cpu")
    assert trainer.amp_dtype is None  # amp="auto" is off on CPU
    assert trainer.scaler is None


def test_fit_is_deterministic_and_records_history():
    first = _trainer(_model(dropout=0.3))
    history = first.fit(TRAIN, VAL)
    second = _trainer(_model(dropout=0.3))
    again = second.fit(TRAIN, VAL)
    _assert_same_weights(first.model, second.model)
    assert [r.train_loss for r in history] == [r.train_loss for r in again]
    assert len(history) == 2
    record = history[1]
    assert record.epoch == 2
    assert math.isfinite(record.train_loss)
    assert record.images_per_second > 0
    assert record.val_metrics is not None
    assert record.val_metrics.labels == LABELS
    assert list(record.val_metrics.support) == [12, 12, 9]  # nan targets are left out
    assert first.history is history


def test_different_seed_gives_different_weights():
    a, b = _trainer(seed=0), _trainer(seed=1)
    a.fit(TRAIN, VAL)
    b.fit(TRAIN, VAL)
    assert not torch.equal(a.model.head.fc.weight, b.model.head.fc.weight)
    assert not torch.equal(a.model.thresholds, b.model.thresholds)


def test_best_checkpoint_is_restored_and_loadable(tmp_path):
    trainer = _trainer(epochs=3, out_dir=tmp_path)
    history = trainer.fit(TRAIN, VAL)
    assert sorted(p.name for p in tmp_path.iterdir()) == [BEST_NAME, LAST_NAME]
    best = MultiLabelClassifier.load(tmp_path / BEST_NAME)
    _assert_same_weights(best.state_dict(), trainer.model)
    assert history.best_epoch is not None
    best_record = history[history.best_epoch - 1]
    assert best_record.val_metrics is not None
    # The thresholds are those tuned on the validation predictions of the best weights.
    probs = trainer.predict(VAL)
    tuned = tune_thresholds(probs, VAL.tensors[1].numpy(), metric="f1")
    np.testing.assert_array_equal(trainer.model.thresholds.numpy(), tuned)
    metrics = trainer.evaluate(VAL)
    np.testing.assert_allclose(metrics.auroc, best_record.val_metrics.auroc)
    np.testing.assert_allclose(metrics.accuracy, best_record.val_metrics.accuracy)
    expected = compute_metrics(probs, VAL.tensors[1].numpy(), tuned, LABELS)
    np.testing.assert_allclose(metrics.f1, expected.f1)
    assert read_history(tmp_path / LAST_NAME).to_dict() == history.to_dict()


def test_threshold_tuning_can_be_switched_off():
    trainer = _trainer(threshold_metric=None)
    trainer.fit(TRAIN, VAL)
    assert trainer.model.thresholds.tolist() == [0.5, 0.5, 0.5]


def test_predict_accepts_image_only_datasets():
    trainer = _trainer()
    images = TRAIN.tensors[0][:5]
    probs = trainer.predict(TensorDataset(images))
    assert probs.shape == (5, 3)
    assert probs.dtype == np.float32
    with torch.no_grad():
        expected = torch.sigmoid(trainer.model.eval()(images)).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    np.testing.assert_allclose(trainer.predict(Subset(TRAIN, range(5))), probs, atol=1e-6)


class _Faulty(Dataset):
    """Goes wrong once more than ``after`` items were fetched: ``"crash"`` raises (like a
    process dying mid-epoch), ``"nan"`` yields nan images from then on."""

    def __init__(self, base, after, fault):
        self.base, self.after, self.fault, self.calls = base, after, fault, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        self.calls += 1
        image, target = self.base[index]
        if self.calls > self.after:
            if self.fault == "crash":
                raise RuntimeError("simulated crash")
            image = torch.full_like(image, float("nan"))
        return image, target


# Item fetches: 1 by the dataset check, then 24 per epoch (3 batches of 8).
@pytest.mark.parametrize(
    ("checkpoint_every", "crash_after"),
    [(None, 1 + 24 + 2), (1, 1 + 24 + 8 + 2)],
    ids=["epoch-boundary", "mid-epoch"],
)
def test_resume_after_crash_matches_uninterrupted(tmp_path, checkpoint_every, crash_after):
    options = {"epochs": 3, "checkpoint_every": checkpoint_every, "scheduler": "cosine"}
    full = _trainer(_model(dropout=0.3), out_dir=tmp_path / "full", **options)
    full_history = full.fit(TRAIN, VAL)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _trainer(_model(dropout=0.3), out_dir=tmp_path / "part", **options).fit(
            _Faulty(TRAIN, crash_after, "crash"), VAL
        )
    assert len(read_history(tmp_path / "part" / LAST_NAME)) == 1
    # A new process would build the model from another seed: resuming must overwrite it all.
    resumed = _trainer(_model(seed=4, dropout=0.3), out_dir=tmp_path / "part", **options)
    history = resumed.fit(TRAIN, VAL, resume=True)
    _assert_same_weights(full.model, resumed.model)
    assert [r.train_loss for r in history] == pytest.approx([r.train_loss for r in full_history])
    assert [r.lr for r in history] == [r.lr for r in full_history]
    for name in (LAST_NAME, BEST_NAME):
        _assert_same_weights(
            read_weights(tmp_path / "full" / name)[1],
            MultiLabelClassifier.load(tmp_path / "part" / name),
        )


class _Interrupting(Dataset):
    """Sends this process SIGINT (Ctrl-C) while fetching the items numbered in ``at``."""

    def __init__(self, base, at):
        self.base, self.at, self.calls = base, set(at), 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        self.calls += 1
        if self.calls in self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return self.base[index]


def test_ctrl_c_finishes_the_step_checkpoints_and_resumes_exactly(tmp_path):
    options = {"epochs": 2, "scheduler": "cosine"}
    full = _trainer(_model(dropout=0.3), out_dir=tmp_path / "full", **options)
    full.fit(TRAIN, VAL)
    before = signal.getsignal(signal.SIGINT)
    interrupted = _trainer(_model(dropout=0.3), out_dir=tmp_path / "part", **options)
    # Fetches: 1 by the dataset check, 24 in epoch 1, then the 3rd item of epoch 2's 2nd batch.
    with pytest.raises(KeyboardInterrupt, match=r"epoch 2, step 2; checkpoint .*last"):
        interrupted.fit(_Interrupting(TRAIN, at=[1 + 24 + 8 + 3]), VAL)
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    _assert_same_weights(
        interrupted.model.state_dict(), MultiLabelClassifier.load(tmp_path / "part" / LAST_NAME)
    )
    resumed = _trainer(_model(seed=4, dropout=0.3), out_dir=tmp_path / "part", **options)
    resumed.fit(TRAIN, VAL, resume=True)
    _assert_same_weights(full.model, resumed.model)


def test_second_ctrl_c_stops_at_once(tmp_path):
    trainer = _trainer(out_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt) as info:
        trainer.fit(_Interrupting(TRAIN, at=[3, 4]), VAL)  # both in the first batch
    assert "checkpoint" not in str(info.value)
    assert not (tmp_path / LAST_NAME).exists()


def _run_in_process(monkeypatch, *args):
    threads = torch.get_num_threads()
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *map(str, args)])
    try:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    finally:
        torch.set_num_threads(threads)


def test_sigkill_then_resume_gives_identical_weights(tmp_path, monkeypatch, caplog):
    victim_dir = tmp_path / "victim"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    src = str(Path(__file__).parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    # The item delay keeps the run going long after its first checkpoint.
    victim = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(victim_dir), "--delay", "0.05"],
        env=env,
        stderr=subprocess.PIPE,
    )
    last = victim_dir / LAST_NAME
    deadline = time.monotonic() + 240
    while not last.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert last.exists(), victim.communicate()[1].decode()[-3000:]
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert not (victim_dir / "final.safetensors").exists()
    assert len(read_history(last)) < 4  # killed while training, not after it

    with caplog.at_level(logging.INFO, logger="chexviz.training.trainer"):
        _run_in_process(monkeypatch, victim_dir, "--resume")
    assert "resumed from" in caplog.text
    _run_in_process(monkeypatch, tmp_path / "reference")
    for name in ("final.safetensors", LAST_NAME, BEST_NAME):
        _, expected = read_weights(tmp_path / "reference" / name)
        _, got = read_weights(victim_dir / name)
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch.equal(expected[key], got[key]), (name, key)


def _scripted_validation(trainer, aurocs, monkeypatch):
    """Make each validation report the next macro-AUROC of ``aurocs``."""
    scores = iter(aurocs)

    def fake(dataset):
        real = compute_metrics(np.full((2, 3), 0.5), np.array([[1, 1, 1], [0, 0, 0]]), 0.5, LABELS)
        return dataclasses.replace(real, auroc=np.full(3, next(scores)))

    monkeypatch.setattr(trainer, "_validate", fake)


def test_early_stopping_keeps_the_best_epoch(tmp_path, monkeypatch):
    # Validation macro-AUROC per epoch; with patience 2 training stops after epoch 4.
    trainer = _trainer(epochs=6, patience=2, out_dir=tmp_path, scheduler="plateau")
    snapshots = []
    original = trainer._train_epoch

    def recording(*args):
        totals = original(*args)
        snapshots.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
        return totals

    monkeypatch.setattr(trainer, "_train_epoch", recording)
    _scripted_validation(trainer, [0.9, 1.0, 0.6, 0.6, 1.0, 1.0], monkeypatch)
    history = trainer.fit(TRAIN, VAL)
    assert len(history) == 4
    assert history.best_epoch == 2
    _assert_same_weights(snapshots[1], trainer.model)
    _assert_same_weights(snapshots[1], MultiLabelClassifier.load(tmp_path / BEST_NAME))
    # "plateau" halves the LR once two epochs in a row did not improve.
    assert [r.lr for r in history] == pytest.approx([1e-2, 1e-2, 1e-2, 1e-2])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)


def test_undefined_auroc_never_counts_as_improvement(tmp_path, caplog):
    val = TensorDataset(VAL.tensors[0], torch.zeros(12, 3))  # one class only
    trainer = _trainer(epochs=5, patience=2, out_dir=tmp_path)
    with caplog.at_level(logging.INFO):  # the epoch line is on chexviz.progress
        history = trainer.fit(TRAIN, val)
    assert len(history) == 2
    assert history.best_epoch is None
    assert not (tmp_path / BEST_NAME).exists()
    assert "AUROC undefined for a, b, c" in caplog.text
    assert "early stop after epoch 2" in caplog.text
    again = _trainer(epochs=5, patience=2, out_dir=tmp_path).fit(TRAIN, val, resume=True)
    assert len(again) == 2  # a run that stopped early stays stopped


def test_schedulers_by_name_and_callable():
    cosine = _trainer(epochs=3, scheduler="cosine")
    history = cosine.fit(TRAIN, None)
    expected = [1e-2 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    assert [r.lr for r in history] == pytest.approx(expected)
    step = _trainer(epochs=3, scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, 0.1))
    assert [r.lr for r in step.fit(TRAIN, None)] == pytest.approx([1e-2, 1e-3, 1e-4])


def test_without_validation_no_metrics_and_last_weights_kept(tmp_path):
    trainer = _trainer(out_dir=tmp_path)
    history = trainer.fit(TRAIN)
    assert all(r.val_metrics is None for r in history)
    assert not (tmp_path / BEST_NAME).exists()
    _assert_same_weights(
        MultiLabelClassifier.load(tmp_path / LAST_NAME).state_dict(), trainer.model
    )


def test_pos_weight_changes_the_loss():
    plain = _trainer(epochs=1).fit(TRAIN, VAL)
    weighted = _trainer(epochs=1, pos_weight=[5.0, 5.0, 5.0]).fit(TRAIN, VAL)
    assert weighted[0].train_loss > plain[0].train_loss
    with pytest.raises(ValueError, match="pos_weight has 2 values but the model has 3 outputs"):
        _trainer(pos_weight=[1.0, 2.0])


def test_other_optimizers():
    assert isinstance(_trainer(optimizer="sgd").optimizer, torch.optim.SGD)
    assert isinstance(_trainer(optimizer="adamw", weight_decay=0.01).optimizer, torch.optim.AdamW)
    custom = _trainer(optimizer=lambda params: torch.optim.RMSprop(params, lr=1e-3))
    assert isinstance(custom.optimizer, torch.optim.RMSprop)
    custom.fit(TRAIN)


def test_single_image_last_batch_is_skipped():
    history = _trainer(epochs=1).fit(_data(17, 3), VAL)
    assert len(history) == 1  # a BatchNorm batch of one image would have raised


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(tmp_path):
    poisoned = _Faulty(TRAIN, after=1 + 24, fault="nan")
    trainer = _trainer(epochs=3, out_dir=tmp_path)
    with pytest.raises(FloatingPointError, match=r"epoch 2, step 1 of 3.*last good checkpoint"):
        trainer.fit(poisoned, VAL)
    assert sorted(p.name for p in tmp_path.iterdir()) == [BEST_NAME, LAST_NAME]
    assert len(read_history(tmp_path / LAST_NAME)) == 1
    saved = MultiLabelClassifier.load(tmp_path / LAST_NAME)
    assert all(
        torch.isfinite(v).all() for v in saved.state_dict().values() if v.is_floating_point()
    )


class _Labelled(TensorDataset):
    labels = ("a", "c", "b")


@pytest.mark.parametrize(
    ("train", "match"),
    [
        (TensorDataset(torch.rand(0, 1, 16, 16), torch.rand(0, 3)), "train dataset is empty"),
        ([{"image": torch.rand(1, 16, 16)}] * 8, "must be an image tensor or an"),
        (TensorDataset(torch.rand(8, 1, 16, 16)), "yields no targets"),
        (
            TensorDataset(torch.rand(8, 1, 16, 16), torch.zeros(8, 5)),
            "targets with 5 labels but the model has 3",
        ),
        (Subset(_Labelled(*TRAIN.tensors), range(8)), r"labels \['a', 'c', 'b'\] differ"),
        (
            TensorDataset(torch.rand(8, 1, 16, 16), torch.full((8, 3), 2.0)),
            "target is 2.0 at epoch 1, step 1",
        ),
        (TensorDataset(torch.rand(8, 3, 16, 16), torch.zeros(8, 3)), "input channel"),
    ],
)
def test_bad_training_data_is_named(train, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _trainer(epochs=1).fit(train)


def test_bad_validation_data_is_named():
    with pytest.raises(ValueError, match="validation dataset yields targets with 2 labels"):
        _trainer().fit(TRAIN, TensorDataset(torch.rand(4, 1, 16, 16), torch.zeros(4, 2)))
    with pytest.raises(ValueError, match="evaluation dataset is empty"):
        _trainer().evaluate(Subset(VAL, []))


def test_unwritable_out_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    trainer = _trainer(out_dir=blocker / "run")
    with pytest.raises(ValueError, match=r"out_dir .*run is not a writable directory"):
        trainer.fit(TRAIN, VAL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"epochs": 1.5}, "epochs must be a positive integer"),
        ({"patience": 0}, "patience must be a positive integer"),
        ({"checkpoint_every": -1}, "checkpoint_every must be a positive integer"),
        ({"num_workers": -1}, "num_workers"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"amp": "fp16"}, "amp='fp16' needs a CUDA device"),
        ({"amp": "fp8"}, "amp must be"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of adam, adamw, sgd"),
        ({"scheduler": "step"}, "scheduler must be one of cosine, plateau"),
        ({"threshold_metric": "accuracy"}, "threshold_metric"),
        ({"device": "cuda"}, "CUDA is not available"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match=match):
        _trainer(**kwargs)


def test_fit_argument_combinations():
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        _trainer().fit(TRAIN, VAL, resume=True)
    with pytest.raises(ValueError, match="need a validation dataset"):
        _trainer(patience=2).fit(TRAIN)


def test_resume_without_checkpoint_starts_fresh(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="chexviz.training.trainer"):
        history = _trainer(epochs=1, out_dir=tmp_path).fit(TRAIN, VAL, resume=True)
    assert len(history) == 1
    assert "starting from scratch" in caplog.text


def test_compile_is_ignored_on_cpu(caplog):
    with caplog.at_level(logging.WARNING, logger="chexviz.training.trainer"):
        trainer = _trainer(compile=True)
    assert "compile=True is ignored on CPU" in caplog.text
    assert trainer._network is trainer.model


class _TTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal(monkeypatch, capsys):
    _trainer(epochs=1, progress=True).fit(TRAIN)
    assert "epoch 1/1" not in capsys.readouterr().err
    terminal = _TTY()
    monkeypatch.setattr(sys, "stderr", terminal)
    _trainer(epochs=1, progress=True).fit(TRAIN)
    assert "epoch 1/1" in terminal.getvalue()
    assert "img_s" in terminal.getvalue()
    quiet = _TTY()
    monkeypatch.setattr(sys, "stderr", quiet)
    _trainer(epochs=1, progress=False).fit(TRAIN)
    assert quiet.getvalue() == ""


def test_epoch_summary_is_a_progress_line(caplog):
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        _trainer(epochs=2).fit(TRAIN, VAL)
    lines = [r.getMessage() for r in caplog.records if r.name == PROGRESS_LOGGER]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    for line in lines:
        assert "train loss" in line
        assert "val macro-AUROC" in line
        assert "images/s" in line
        assert "time left" in line
    assert lines[-1].endswith("time left 0:00")


def _cpu_mixed_precision(trainer):
    """Stand-in for CUDA bf16 on this CPU-only machine: the trainer's autocast becomes CPU bf16."""
    trainer.amp_dtype = torch.bfloat16
    trainer._autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return trainer


def test_evaluation_is_full_precision_under_mixed_precision():
    trainer = _cpu_mixed_precision(_trainer(epochs=1))
    seen = []
    trainer.model.register_forward_pre_hook(
        lambda _m, _a: seen.append((trainer.model.training, torch.is_autocast_enabled("cpu")))
    )
    trainer.fit(TRAIN, VAL)
    # training ran under bf16 autocast, validation (thresholds, best epoch) did not
    assert (True, True) in seen
    assert all(not autocast for training, autocast in seen if not training)
    images = VAL.tensors[0]
    with torch.no_grad():
        full = torch.sigmoid(trainer.model.eval()(images))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = torch.sigmoid(trainer.model(images).float())
    assert not torch.equal(full, half)  # bf16 would have changed the probabilities
    np.testing.assert_array_equal(trainer.predict(VAL), full.numpy())
    expected = tune_thresholds(full.numpy(), VAL.tensors[1].numpy(), labels=LABELS)
    np.testing.assert_array_equal(trainer.model.thresholds.numpy(), expected)
    metrics = trainer.evaluate(VAL)
    reference = compute_metrics(full.numpy(), VAL.tensors[1].numpy(), expected, LABELS)
    np.testing.assert_array_equal(metrics.auroc, reference.auroc)


POLICIES = ("zeros", "ones", "ignore")


@pytest.fixture
def policy_datasets(make_chexpert):
    from chexviz.data.dataset import CheXpertDataset

    release = make_chexpert(patients=6, studies=2, lateral=False, size=(24, 20), seed=3)
    return {
        policy: CheXpertDataset(release, image_size=16, uncertainty=policy, progress=False)
        for policy in POLICIES
    } | {
        "blank ignored": CheXpertDataset(
            release, image_size=16, uncertainty="ones", blank="ignore", progress=False
        )
    }


def test_evaluation_answers_do_not_depend_on_the_training_policy(policy_datasets):
    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", image_size=16)
    trainer = Trainer(model, progress=False)
    zeros = policy_datasets["zeros"]
    raw = zeros.raw_labels
    assert (raw == -1).any()  # the data has uncertain cells for the policies to disagree on
    assert not np.array_equal(zeros.targets, policy_datasets["ones"].targets, equal_nan=True)
    results = {name: trainer.evaluate(data) for name, data in policy_datasets.items()}
    for metrics in results.values():
        for field in ("auroc", "accuracy", "binary_accuracy", "majority_accuracy"):
            np.testing.assert_array_equal(getattr(metrics, field), getattr(results["zeros"], field))
        np.testing.assert_array_equal(metrics.positives, (raw == 1).sum(axis=0))
        np.testing.assert_array_equal(metrics.support, np.full(14, len(zeros)))
    # uncertain entries excluded: each label's support loses its uncertain cells
    for data in policy_datasets.values():
        excluded = trainer.evaluate(data, uncertain="exclude")
        np.testing.assert_array_equal(excluded.support, (raw != -1).sum(axis=0))
        np.testing.assert_array_equal(excluded.positives, (raw == 1).sum(axis=0))


def test_evaluation_answers_through_subsets(policy_datasets):
    from chexviz.training.metrics import evaluation_targets

    data = policy_datasets["ones"]
    subset = Subset(Subset(data, [5, 1, 3, 0]), [2, 0])  # items 3 and 5 of data
    key = evaluation_targets(subset)
    expected = np.where(data.raw_labels[[3, 5]] == 1, 1.0, 0.0)
    np.testing.assert_array_equal(key, expected)
    excluded = evaluation_targets(subset, uncertain="exclude")
    assert np.isnan(excluded[data.raw_labels[[3, 5]] == -1]).all()
    with pytest.raises(ValueError, match="uncertain must be 'negative' or 'exclude'"):
        evaluation_targets(subset, uncertain="ones")


def test_datasets_without_raw_labels_are_scored_on_their_targets():
    trainer = _trainer()
    metrics = trainer.evaluate(VAL)
    np.testing.assert_array_equal(metrics.support, [12, 12, 9])  # its nan targets are ignored
    with pytest.raises(ValueError, match="uncertain='exclude' needs the raw label cells"):
        trainer.evaluate(VAL, uncertain="exclude")


def _sgd_run_after_a_skipped_first_step(optimizer_of, steps=4):
    """Parameters after each of ``steps`` scaler steps, the first of which sees inf gradients."""
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = optimizer_of([weight])
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    after = []
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = (weight * torch.tensor([1.0, -2.0, 0.5])).sum()
        if step == 0:
            loss = loss * math.inf  # the overflow that makes the scaler skip the step
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        after.append(weight.detach().clone())
    assert torch.equal(after[0], torch.ones(3))  # skipped
    return torch.stack(after)


def test_fused_sgd_starts_with_zero_momentum_so_a_skipped_first_step_leaves_no_garbage():
    trainer = _trainer(optimizer="sgd")
    # What Trainer sees on a GPU with amp="fp16" (or amp="auto" before Ampere); the same holds
    # without a scaler, where a non-finite loss is skipped on the device too.
    trainer._cuda, trainer.amp_dtype = True, torch.float16
    built = trainer._build_optimizer("sgd", 0.0)
    assert built.defaults["fused"]
    for param in trainer.model.parameters():
        assert torch.equal(built.state[param]["momentum_buffer"], torch.zeros_like(param))

    def as_built(params):  # the trainer's recipe: fused, momentum buffers zero from the start
        sgd = torch.optim.SGD(params, lr=0.1, momentum=0.9, fused=True)
        for param in params:
            sgd.state[param]["momentum_buffer"] = torch.zeros_like(param)
        return sgd

    def plain(params):
        return torch.optim.SGD(params, lr=0.1, momentum=0.9)

    assert torch.equal(
        _sgd_run_after_a_skipped_first_step(as_built), _sgd_run_after_a_skipped_first_step(plain)
    )
