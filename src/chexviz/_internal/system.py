"""Facts about the machine the process runs on."""

from __future__ import annotations

import os

__all__ = ["usable_cpus"]


def usable_cpus() -> int:
    """The number of CPUs this process may run on (its affinity mask, not the machine's count).

    Returns:
        At least 1.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not available on macOS and Windows
        return os.cpu_count() or 1
