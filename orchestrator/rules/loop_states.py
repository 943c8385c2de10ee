"""Where a background loop's thread is, as ``/healthz`` reports it."""

from __future__ import annotations

from enum import StrEnum


class LoopState(StrEnum):
    """Where a loop's thread is: ``died`` means it ended without being stopped, and nothing
    restarts it before the process does."""

    NOT_STARTED = "not_started"
    RUNNING = "running"
    STOPPED = "stopped"
    DIED = "died"
