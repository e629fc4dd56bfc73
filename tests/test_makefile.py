"""The Makefile's install step: ``TORCH_INDEX_URL`` picks PyTorch's wheel index, or nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU = "https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _install_commands(*variables: str) -> list[str]:
    """The pip lines ``make demo`` would run from scratch (``-n``: printed, not run)."""
    done = subprocess.run(
        ["make", "-n", "-B", "demo", *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [line for line in done.stdout.splitlines() if " pip install" in line]


def test_the_torch_index_reaches_pip_before_the_project() -> None:
    lines = _install_commands(f"TORCH_INDEX_URL={CPU}")
    torch_line = next(i for i, line in enumerate(lines) if f"--index-url {CPU}" in line)
    assert lines[torch_line].split()[-2:] == ["torch", "torchvision"]
    project_line = next(i for i, line in enumerate(lines) if "-e .[" in line.replace('"', ""))
    assert torch_line < project_line


def test_by_default_pip_picks_the_wheels() -> None:
    lines = _install_commands()
    assert lines
    assert not any("--index-url" in line or "torchvision" in line for line in lines)
