"""The queue sampler: every ``queue_sample_interval`` seconds (a minute by default), each
queue's depth and the jobs it ended, for the console's chart (``services.queue_samples``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from orchestrator.config import Settings
from orchestrator.services import queue_samples
from orchestrator.storage.db import Database
from orchestrator.storage.models import utcnow
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.loop import Loop


class QueueSampler:
    """Samples in a background thread; ``sample`` is one pass."""

    def __init__(
        self, settings: Settings, db: Database, hub: Hub, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.db = db
        self.clock = clock
        self.loop = Loop(
            name="queue-sampler",
            hub=hub,
            run_once=self.sample,
            next_wait=lambda: settings.queue_sample_interval,
            failure_wait=lambda: settings.queue_sample_interval,
            failed="queue sample failed",
            action="queue_sample_failed",
        )

    def sample(self) -> int:
        """Write this minute's samples; how many rows."""
        with self.db.transaction() as session:
            return queue_samples.sample(session, self.clock())

    def start(self) -> None:
        """Start sampling."""
        self.loop.start()

    def stop(self) -> None:
        """Stop sampling."""
        self.loop.stop()
