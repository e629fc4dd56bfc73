"""Faults while training: a failed checkpoint write keeps the previous one; Ctrl-C is resumable.

tests/test_trainer.py covers a crash inside the data (resume matches an uninterrupted run) and
``kill -9`` of a real process; these tests cover the file system failing under the writer
(disk full mid-write, a read-only folder) and SIGINT delivered to a real process.
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from chexviz.models.classifier import MultiLabelClassifier
from chexviz.models.serialization import read_extra, read_weights
from chexviz.training.checkpoint import BEST_NAME, LAST_NAME, STATE_KEY, load_training_state
from chexviz.training.trainer import Trainer

LABELS = ("a", "b", "c")


def _data(count: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, 16, 16, generator=generator)
    targets = (images.mean(dim=(1, 2, 3))[:, None] + 0.2 * torch.rand(count, 3) > 0.6).float()
    return TensorDataset(images, targets)


TRAIN, VAL = _data(24, 1), _data(12, 2)


def _trainer(out_dir: Path, epochs: int) -> Trainer:
    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", labels=LABELS, image_size=16)
    return Trainer(
        model, batch_size=8, epochs=epochs, lr=1e-2, out_dir=out_dir, seed=1, progress=False
    )


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class _FullDisk(io.FileIO):
    """A file whose writes stop with ENOSPC after ``room`` bytes, like a disk filling up."""

    room = 4096  # part of the header and tensors reach the disk

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if len(view) > self.room:
            super().write(view[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)
        self.room -= len(view)
        return super().write(view)


class _Arming(Dataset[Any]):
    """Arms the fault once training has started (the trainer's start-up checks passed)."""

    def __init__(self, base: TensorDataset, armed: list[bool]) -> None:
        self.base, self.armed, self.fetches = base, armed, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Any:
        self.fetches += 1
        if self.fetches > 1:  # the first fetch is the trainer's data check
            self.armed[0] = True
        return self.base[index]


def _fail_writes(
    monkeypatch: pytest.MonkeyPatch, folder: Path, fault: str, armed: list[bool]
) -> list[str]:
    """Makes writing files in ``folder`` fail with ``fault`` once armed; returns the files hit.

    Whatever the writer (``open``, ``Path.write_bytes``, ``os.open``), creating a file in a
    read-only folder fails with EROFS, and on a full disk each file takes 4 kB and then fails.
    """
    hit: list[str] = []
    real_io_open, real_os_open = io.open, os.open

    def inside(path: Any) -> bool:
        return armed[0] and isinstance(path, (str, os.PathLike)) and Path(path).parent == folder

    def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            hit.append(str(path))
            if fault == "read-only":
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_os_open(path, flags, *args, **kwargs)

    def io_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if inside(path) and any(flag in mode for flag in "wax+"):
            hit.append(str(path))
            if fault == "read-only":
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return io.BufferedWriter(_FullDisk(path, mode.replace("b", "")), 1024)
        return real_io_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(io, "open", io_open)
    return hit


@pytest.mark.parametrize("fault", ["disk-full", "read-only"])
def test_failed_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    out = tmp_path / "run"
    _trainer(out, epochs=1).fit(TRAIN, VAL)
    before = {name: (out / name).read_bytes() for name in (LAST_NAME, BEST_NAME)}
    armed = [False]
    tried = _fail_writes(monkeypatch, out, fault, armed)
    expected = errno.ENOSPC if fault == "disk-full" else errno.EROFS
    with pytest.raises(OSError, match=os.strerror(expected)) as info:
        _trainer(out, epochs=2).fit(_Arming(TRAIN, armed), VAL, resume=True)
    assert info.value.errno == expected
    assert tried  # the fault really hit a checkpoint write
    monkeypatch.undo()
    # Nothing torn, nothing left behind: the files are the epoch-1 ones, byte for byte.
    assert sorted(p.name for p in out.iterdir()) == sorted(before)
    for name, data in before.items():
        assert (out / name).read_bytes() == data
    probe = _trainer(tmp_path / "probe", epochs=1)
    assert load_training_state(out / LAST_NAME, probe.model).epoch == 1
    MultiLabelClassifier.load(out / BEST_NAME)
    # Once the disk has room again the run resumes and ends where an unbroken run ends.
    resumed = _trainer(out, epochs=2)
    resumed.fit(TRAIN, VAL, resume=True)
    unbroken = _trainer(tmp_path / "unbroken", epochs=2)
    unbroken.fit(TRAIN, VAL)
    _same_weights(unbroken.model.state_dict(), resumed.model.state_dict())
    _same_weights(
        read_weights(tmp_path / "unbroken" / LAST_NAME)[1], read_weights(out / LAST_NAME)[1]
    )


_SCRIPT = """
import logging, multiprocessing, os, signal, sys
import torch
from torch.utils.data import Dataset
from chexviz.models.classifier import MultiLabelClassifier
from chexviz.training.trainer import Trainer


class Data(Dataset):
    def __init__(self, count, seed, out_dir="", interrupt=""):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.rand(count, 1, 16, 16, generator=generator)
        self.targets = (torch.rand(count, 3, generator=generator) > 0.5).float()
        self.out_dir, self.interrupt, self.fetches = out_dir, interrupt, 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        self.fetches += 1
        if self.interrupt == "self" and self.fetches == 1 + 32 + 2 * 8 + 3:
            # Ctrl-C to this process while the third batch of epoch 2 is being read (fetches:
            # 1 by the data check, then 4 batches of 8 per epoch).
            os.kill(os.getpid(), signal.SIGINT)
        started = os.path.exists(os.path.join(self.out_dir, "last.safetensors"))
        if self.interrupt == "group" and started:
            try:
                os.close(os.open(os.path.join(self.out_dir, "sent"), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                # Ctrl-C in a terminal, sent from a worker: the whole process group gets it.
                os.killpg(os.getpgrp(), signal.SIGINT)
        return self.images[index], self.targets[index]


def train(out_dir, workers, interrupt="", resume=False):
    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", labels=("a", "b", "c"), image_size=16, dropout=0.2)
    trainer = Trainer(model, batch_size=8, epochs=3, lr=1e-3, out_dir=out_dir, seed=3,
                      scheduler="cosine", progress=False, num_workers=workers)
    trainer.fit(Data(32, 1, out_dir, interrupt), Data(12, 2), resume=resume)
    model.save(os.path.join(out_dir, "final.safetensors"))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    command, start_method, *folders = sys.argv[1:]
    multiprocessing.set_start_method(start_method, force=True)
    if command in ("self", "group"):
        train(folders[0], 0 if command == "self" else 2, interrupt=command)
    else:  # finish the interrupted runs, then an uninterrupted reference run
        for folder in folders[1:]:
            train(folder, 0, resume=True)
        train(folders[0], 0)
"""


def _run(tmp_path: Path, *arguments: str | Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "train_script.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    src = str(Path(__file__).parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, str(script), *map(str, arguments)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,  # its own process group, as a terminal job has
    )


def _interrupted_cleanly(run: subprocess.CompletedProcess[str], out: Path) -> dict[str, int]:
    assert run.returncode in (-signal.SIGINT, 130, 1), run.stderr[-3000:]
    assert "KeyboardInterrupt: training interrupted at epoch" in run.stderr, run.stderr[-3000:]
    assert f"checkpoint {out / LAST_NAME} written" in run.stderr
    assert not (out / "final.safetensors").exists()
    return _state_of(out / LAST_NAME)


def _finish_and_compare(tmp_path: Path, start_method: str, *runs: Path) -> None:
    reference = tmp_path / "reference"
    finished = _run(tmp_path, "finish", start_method, reference, *runs)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stderr.count("resumed from") == len(runs)
    for run in runs:
        for name in ("final.safetensors", LAST_NAME, BEST_NAME):
            _same_weights(read_weights(reference / name)[1], read_weights(run / name)[1])


def test_ctrl_c_in_a_real_process_writes_a_checkpoint_that_resumes_exactly(
    tmp_path: Path,
) -> None:
    # Ctrl-C to the process alone, while a batch is read: that step finishes and is saved.
    alone = _run(tmp_path, "self", "fork", tmp_path / "alone")
    assert _interrupted_cleanly(alone, tmp_path / "alone") == {"epoch": 1, "step": 3}
    # Ctrl-C to the process group, DataLoader workers included: they must not die first.
    group = _run(tmp_path, "group", "fork", tmp_path / "group")
    state = _interrupted_cleanly(group, tmp_path / "group")
    assert state["epoch"] == 1
    assert state["step"] >= 1
    assert "exited unexpectedly" not in group.stderr
    # Resumed in a new process, both end exactly where an uninterrupted run ends.
    _finish_and_compare(tmp_path, "fork", tmp_path / "alone", tmp_path / "group")


@pytest.mark.slow
def test_ctrl_c_while_spawned_workers_start(tmp_path: Path) -> None:
    # With "spawn" (macOS) or "forkserver" (Linux from Python 3.14) a worker still importing
    # torch dies of Ctrl-C; the last completed step is saved all the same.
    group = _run(tmp_path, "group", "spawn", tmp_path / "group")
    state = _interrupted_cleanly(group, tmp_path / "group")
    assert state["epoch"] >= 1
    _finish_and_compare(tmp_path, "spawn", tmp_path / "group")


def _state_of(path: Path) -> dict[str, int]:
    _, metadata = read_extra(path)
    payload = json.loads(metadata[STATE_KEY])
    return {"epoch": payload["epoch"], "step": payload["step"]}
