"""The lines a long run shows while it works: its stages, its epochs, its generated patients.

The library logs them at INFO on one logger, ``chexviz.progress``; whoever runs it decides how
they look. The command line shows them timestamped on standard error when that is a pipe or a
log, between the progress bars on a terminal, and not at all with ``--quiet``; a script that
calls ``logging.basicConfig(level=logging.INFO)`` sees them like any other INFO line.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

PROGRESS_LOGGER = "chexviz.progress"
"""The name of the logger that carries the progress lines."""

progress_logger = logging.getLogger(PROGRESS_LOGGER)


def format_duration(seconds: float) -> str:
    """A duration as ``H:MM:SS`` or ``M:SS`` (``?`` when unknown).

    Args:
        seconds: The duration; ``nan`` or infinite when it cannot be estimated.

    Returns:
        The text, rounded to the second.
    """
    if not math.isfinite(seconds):
        return "?"
    minutes, second = divmod(round(max(seconds, 0.0)), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}" if hours else f"{minute}:{second:02d}"


class CountProgress:
    """Logs ``done of total`` with its rate and time left, at most once per ``interval`` seconds.

    For a job that counts items (patients, images) and may run for minutes without a stage
    change: the line says it is alive and when it will end.

    Args:
        what: What is counted, e.g. ``"synthetic CheXpert: patients"``.
        total: How many items the job has.
        interval: Fewest seconds between two lines; the last item always gets its line.
        clock: The clock, in seconds (``time.monotonic``; a test passes its own).
    """

    def __init__(
        self,
        what: str,
        total: int,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = total
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.last = self.started

    def update(self, done: int) -> None:
        """Notes that ``done`` items are finished; logs a line when one is due.

        Args:
            done: Items finished so far, out of ``total``.
        """
        now = self.clock()
        if now - self.last < self.interval and done < self.total:
            return
        self.last = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else math.nan
        left = (self.total - done) / rate if rate > 0 else math.nan
        progress_logger.info(
            "%s %d/%d (%.1f/s), time left %s",
            self.what,
            done,
            self.total,
            rate,
            format_duration(left),
        )
