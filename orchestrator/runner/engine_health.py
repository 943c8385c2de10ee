"""Whether a runner's Docker engine answers: checked before each claim, lost when a call fails,
checked again with backoff while it is away."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from orchestrator.docker.engine import DockerEngine
from orchestrator.errors import EngineUnavailable
from orchestrator.rules.retry import exponential_backoff
from orchestrator.storage.models import utcnow

# The longest wait between two checks of an engine that does not answer.
ENGINE_RETRY_MAX = 10.0
# How long an answered ping stands for the engine being up, before the next claim asks again.
ENGINE_CHECK_INTERVAL = 1.0

logger = logging.getLogger(__name__)


class EngineHealth:
    """The engine's health as one runner sees it; ``on_change`` is called when the engine is
    lost or comes back (the runner's heartbeat then tells the registry)."""

    def __init__(
        self, engine: DockerEngine, retry_interval: float, on_change: Callable[[], None]
    ) -> None:
        self.engine = engine
        self.retry_interval = retry_interval
        self.on_change = on_change
        self.ok = False
        self.error: str | None = "not checked yet"
        self.down_since: datetime | None = utcnow()
        self.failures = 0
        self._lost_at = -float("inf")
        self._checked_at = -float("inf")

    def check(self) -> tuple[bool, bool]:
        """(whether the engine answers, whether it has just come back)."""
        if not self.ok and time.monotonic() - self._lost_at < self.retry_interval:
            # Just lost: an engine shutting down may still answer a ping between failed calls.
            return False, False
        if self.ok and time.monotonic() - self._checked_at < ENGINE_CHECK_INTERVAL:
            # Answered a moment ago: a wake-up per submitted job need not ask again. A call
            # that fails in between reports the loss itself (``lost``).
            return True, False
        try:
            self.engine.ping()
        except EngineUnavailable as exc:
            if self.ok or self.error != exc.message:
                logger.warning(
                    "Docker engine unavailable: %s",
                    exc.message,
                    extra={"action": "engine_unavailable"},
                )
            self.lost(exc.message)
            self.failures += 1
            return False, False
        came_back = not self.ok
        if came_back:
            logger.info("Docker engine available", extra={"action": "engine_available"})
            self.on_change()
        self.failures = 0
        self._checked_at = time.monotonic()
        self.ok = True
        self.error = None
        self.down_since = None
        return True, came_back

    def lost(self, message: str) -> None:
        """Called when the engine does not answer: no claims until it is back."""
        if self.ok or self.down_since is None:
            self.down_since = utcnow()
            self.on_change()
            # A stopping engine still serves connections it had open: only a new one tells
            # whether it is back.
            self.engine.close()
        self._lost_at = time.monotonic()
        self.ok = False
        self.error = message

    def retry_wait(self) -> float:
        """Seconds until the engine is checked again while it does not answer."""
        failures = min(self.failures, 8) + 1
        interval = self.retry_interval
        return exponential_backoff(failures, interval, max(ENGINE_RETRY_MAX, interval))
