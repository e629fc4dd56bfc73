"""Progress lines: durations, and a counted job's periodic line with its rate and time left."""

from __future__ import annotations

import logging
import math

import pytest

from chexviz._internal.progress import PROGRESS_LOGGER, CountProgress, format_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0:00"), (59.6, "1:00"), (125, "2:05"), (3725, "1:02:05"), (math.nan, "?"), (-3, "0:00")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_count_progress_logs_every_interval_with_rate_and_time_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    job = CountProgress("patients", 100, interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        for done, at in ((5, 4.0), (20, 10.0), (30, 15.0), (40, 20.0), (100, 21.0)):
            now[0] = at
            job.update(done)
    lines = [record.getMessage() for record in caplog.records]
    # at 10 s (due), at 20 s (due again), and the last item (always)
    assert lines == [
        "patients 20/100 (2.0/s), time left 0:40",
        "patients 40/100 (2.0/s), time left 0:30",
        "patients 100/100 (4.8/s), time left 0:00",
    ]
