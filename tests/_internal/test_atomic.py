"""Atomic writes: all or nothing, no temporary file left behind, umask permissions."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chexviz._internal.atomic import atomic_path, write_bytes_atomic


@pytest.fixture
def umask() -> Iterator[None]:
    """Restores the process umask that a test changes."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.binary(max_size=4096), second=st.binary(max_size=4096))
def test_write_bytes_atomic_writes_exactly_the_data(
    tmp_path: Path, first: bytes, second: bytes
) -> None:
    path = tmp_path / "file.bin"
    assert write_bytes_atomic(path, first) == path
    assert path.read_bytes() == first
    write_bytes_atomic(str(path), second)  # overwrites, and takes a str
    assert path.read_bytes() == second
    assert os.listdir(tmp_path) == ["file.bin"]


def test_temporary_file_is_a_hidden_sibling_written_by_name(tmp_path: Path) -> None:
    final = tmp_path / "images.npy"
    with atomic_path(final) as temporary:
        assert temporary.parent == tmp_path
        assert temporary.name.startswith(".images.npy.")
        assert temporary.name.endswith(".tmp")
        assert temporary.stat().st_size == 0
        assert not final.exists()  # nothing at the destination until the block succeeds
        images = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=(2, 3))
        images[:] = 7
        images.flush()
        del images
    assert os.listdir(tmp_path) == ["images.npy"]
    np.testing.assert_array_equal(np.load(final), np.full((2, 3), 7, np.uint8))


def _write_half_then_fail(final: Path) -> None:
    with atomic_path(final) as temporary:
        temporary.write_bytes(b"half of the new")
        raise RuntimeError("interrupted")


def test_exception_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    final = tmp_path / "model.safetensors"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="interrupted"):
        _write_half_then_fail(final)
    assert final.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_failed_rename_keeps_the_old_file_and_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "report.html"
    final.write_bytes(b"old report")

    def full_disk(source: object, target: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(final, b"new report")
    assert final.read_bytes() == b"old report"
    assert os.listdir(tmp_path) == ["report.html"]


def test_missing_folder_is_reported_and_nothing_is_created(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_bytes_atomic(tmp_path / "absent" / "file.bin", b"data")
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_permissions_follow_the_umask(tmp_path: Path, mask: int, mode: int) -> None:
    os.umask(mask)
    path = write_bytes_atomic(tmp_path / "file.bin", b"data")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    # Replacing an existing file gives the new file the same umask-derived mode.
    path.chmod(0o600)
    write_bytes_atomic(path, b"more")
    assert stat.S_IMODE(path.stat().st_mode) == mode
