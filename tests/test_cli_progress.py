"""What ``chexviz demo`` and ``train`` show while they work, when no terminal is attached.

One timestamped line on standard error per stage and per epoch (loss, validation AUROC,
images per second, time left), the first before torch is imported; ``--quiet`` shows none.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from chexviz.cli import main

_STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
_TINY = ["--images", "60", "--epochs", "2", "--image-size", "32"]


def _demo(tmp_path: Path, *extra: str) -> None:
    argv = ["demo", *_TINY, "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data")]
    assert main([*argv, *extra]) == 0


def test_demo_prints_a_timestamped_line_per_stage_and_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _demo(tmp_path)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if re.match(rf"{_STAMP} chexviz demo ", line)]
    assert lines[0].endswith("chexviz demo starting (importing torch and the models)")
    for number in range(1, 9):
        assert sum(f"chexviz demo [{number}/8] " in line for line in lines) == 1, number
    epochs = [line for line in lines if re.search(r"chexviz demo epoch \d/2: ", line)]
    assert [line.split("epoch ")[1][:3] for line in epochs] == ["1/2", "2/2"]
    for line in epochs:
        assert re.search(r"train loss \d+\.\d{4}", line), line
        assert re.search(r"val macro-AUROC (\d\.\d{4}|nan)", line), line
        assert re.search(r"\d+\.\d images/s", line), line
        assert re.search(r"time left \d+:\d\d", line), line
    assert epochs[-1].endswith("time left 0:00")
    assert any("synthetic CheXpert: patients" in line for line in lines)
    assert err.index("[1/8]") < err.index("epoch 1/2") < err.index("[3/8]")


def test_quiet_prints_no_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _demo(tmp_path, "--quiet")
    captured = capsys.readouterr()
    assert not re.search(_STAMP, captured.err)
    assert "chexviz demo" not in captured.err
    assert "epoch" not in captured.err
    assert "pointing game" in captured.out  # the results still print


def test_quiet_stays_quiet_with_verbose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _demo(tmp_path, "--quiet", "--verbose")
    err = capsys.readouterr().err
    assert "[1/8]" not in err
    assert "epoch 1/2:" not in err


def test_the_first_line_comes_before_torch_is_imported(tmp_path: Path) -> None:
    # The first write to stderr records whether torch was imported by then. The command then
    # fails (no data there), which is beside the point.
    script = f"""
import sys

class Stream:
    def __init__(self, stream):
        self.stream, self.torch_at_first = stream, None
    def write(self, text):
        if self.torch_at_first is None and text.strip():
            self.torch_at_first = "torch" in sys.modules
        return self.stream.write(text)
    def flush(self):
        self.stream.flush()
    def isatty(self):
        return False

sys.stderr = stream = Stream(sys.stderr)
from chexviz.cli import main
main(["train", "--data", {str(tmp_path / "none")!r}, "--backbone", "simple_cnn",
      "--out", {str(tmp_path / "out")!r}])
print("torch imported before the first line:", stream.torch_at_first)
assert "torch" in sys.modules  # the command itself did import it
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    assert "torch imported before the first line: False" in done.stdout, done.stderr
    assert re.match(rf"{_STAMP} chexviz train starting", done.stderr), done.stderr
