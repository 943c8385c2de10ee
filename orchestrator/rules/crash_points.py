"""Named points on an attempt's start and finish paths where a test may crash the runner.

Each point lies between a side effect and the record of it, the places where a crash leaves
the engine and the database disagreeing. With ``ORCH_TEST_CRASH_POINT`` set, the runner exits
at once (``os._exit``: no clean-up, no flushing, as kill -9) the first time it reaches that
point, and a restarted runner must put things right. Unset (always, outside tests), ``reach``
costs one comparison.
"""

from __future__ import annotations

import os
import sys
from typing import Literal

CrashPoint = Literal[
    "claimed",  # the claim is committed; no container yet
    "created",  # the container exists; not started
    "started",  # the container runs; its id is not recorded
    "running_recorded",  # the container id and `running` are committed
    "exit_seen",  # the container has exited; nothing read yet
    "output_read",  # the exit code and the output are read; the outcome is not recorded
    "outcome_recorded",  # the outcome is committed; the container is not removed
    "removed",  # the container and its run directory are removed
]
POINTS: tuple[str, ...] = CrashPoint.__args__  # type: ignore[attr-defined]
# The exit status of a deliberate crash, so a test tells it from any other exit.
CRASH_EXIT_CODE = 86


def reach(configured: str | None, point: CrashPoint) -> None:
    """Exit the process at once if ``point`` is the configured crash point."""
    if configured == point:
        sys.stderr.write(f"crash point {point} reached: exiting\n")
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)
