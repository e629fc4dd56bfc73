"""Atomic file writes: a temporary sibling renamed over the destination when complete.

Readers of the destination see either the old file or the complete new one, never a torn
write, and a failed write leaves the old file untouched and no temporary file behind. A
process killed outright can leave a hidden ``.<name>.<random>.tmp`` sibling, which nothing
reads and which may be deleted.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_bytes_atomic"]

# O_EXCL refuses an existing name, symlinks included, so the temporary file is always our own.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new empty temporary file next to ``final`` that replaces ``final`` on success.

    The caller writes the yielded path by name (any writer that opens it for writing works, a
    memory map included). When the ``with`` block exits normally the file is flushed to disk
    and renamed over ``final``, and the rename itself is flushed where the platform allows it.
    When the block raises, the temporary file is removed and ``final`` is left as it was.

    The file gets the permissions of any newly created file, ``0o666`` less the umask, rather
    than the owner-only ones of ``tempfile.mkstemp``.

    Args:
        final: The destination; its parent folder must exist.

    Yields:
        The temporary file's path, in the same folder as ``final``.

    Raises:
        FileNotFoundError: If the parent folder of ``final`` does not exist.
    """
    final = Path(final)
    temporary = final.with_name(f".{final.name}.{secrets.token_hex(8)}.tmp")
    # Creating the file with mode 0o666 lets the kernel apply the umask, which reading the
    # umask (os.umask sets it) could not do without a race against other threads.
    os.close(os.open(temporary, _CREATE_FLAGS, 0o666))
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_folder(final.parent)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see `atomic_path`).

    Args:
        path: The destination; its parent folder must exist.
        data: The complete new content.

    Returns:
        ``path`` as a `Path`.

    Raises:
        FileNotFoundError: If the parent folder of ``path`` does not exist.
    """
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return path


def _fsync_folder(folder: Path) -> None:
    """Makes a rename in ``folder`` durable, where the platform can."""
    if os.name != "posix":
        return  # folders cannot be opened on Windows; NTFS journals the rename itself
    # The new file is already in place and complete; a file system that cannot sync a folder
    # (some network mounts) must not turn that success into an error.
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
