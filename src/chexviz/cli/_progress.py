"""The command's progress lines on standard error: the library's, as the command's own."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator

from chexviz._internal.progress import PROGRESS_LOGGER


def progress_prefix(command: str) -> str:
    """The start of a progress line: the command, after a timestamp unless on a terminal."""
    stamp = "" if sys.stderr.isatty() else time.strftime("%Y-%m-%d %H:%M:%S ")
    return f"{stamp}chexviz {command} "


class ProgressLines(logging.Handler):
    """Prints the library's progress lines on standard error, as the command's own lines.

    On a terminal through ``tqdm.write``, so that they land above the bars and stay after each
    bar closes; elsewhere one timestamped line each, flushed at once (a pipe or a log shows it
    when it happens).
    """

    def __init__(self, command: str) -> None:
        super().__init__(logging.INFO)
        self.command = command

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = progress_prefix(self.command) + record.getMessage()
            if sys.stderr.isatty():
                from tqdm.auto import tqdm

                tqdm.write(text, file=sys.stderr)
            else:
                print(text, file=sys.stderr, flush=True)
        except Exception:  # a logging handler must not raise (logging's own rule)
            self.handleError(record)


@contextlib.contextmanager
def progress_lines(command: str, *, shown: bool) -> Iterator[None]:
    """Prints the ``chexviz.progress`` lines on standard error while the command runs.

    Hidden (``shown=False``, for ``--quiet``) they are dropped, even with ``--verbose``. The
    logger is left as it was found, for the next caller in this process.
    """
    progress = logging.getLogger(PROGRESS_LOGGER)
    before = progress.level, progress.propagate
    handler = ProgressLines(command)
    if shown:
        progress.addHandler(handler)
    # Not passed on to the root logger: with --verbose its handler would print each line twice.
    progress.propagate = False
    progress.setLevel(logging.INFO if shown else logging.WARNING)
    try:
        yield
    finally:
        progress.removeHandler(handler)
        progress.setLevel(before[0])
        progress.propagate = before[1]
