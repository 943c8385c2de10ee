"""The collector: deletes what is past retention in the background, one small batch per
transaction, back to back while a backlog lasts (with a short pause between batches, so
submits and claims get the writer in turn), then every ``gc_interval`` seconds.

Several servers on one database may collect at once: each batch takes its jobs with
``SKIP LOCKED`` on PostgreSQL, and deleting a row another server deleted first is no error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from orchestrator.config import Settings
from orchestrator.services import retention
from orchestrator.services.retention import Removed, Retention
from orchestrator.storage.db import Database
from orchestrator.storage.models import utcnow
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.loop import Loop

logger = logging.getLogger(__name__)

# Between two batches of a backlog: long enough for a waiting writer to take its turn.
BATCH_PAUSE_SECONDS = 0.05


class Collector:
    """Collects in a background thread; ``collect_batch`` is one pass."""

    def __init__(
        self, settings: Settings, db: Database, hub: Hub, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self._more = False
        self.loop = Loop(
            name="retention",
            hub=hub,
            run_once=self.collect_batch,
            next_wait=lambda: BATCH_PAUSE_SECONDS if self._more else settings.gc_interval,
            failure_wait=lambda: settings.gc_interval,
            failed="retention pass failed",
            action="retention_failed",
        )

    def collect_batch(self) -> Removed:
        """Delete one batch of what is past retention; what went."""
        with self.db.transaction() as session:
            removed = retention.collect(
                session,
                Retention.from_settings(self.settings),
                self.clock(),
                self.settings.gc_batch,
            )
        self._more = removed.more
        if removed.total:
            self.db.release_free_pages()
        if removed.total:
            logger.info(
                "retention: deleted %d finished jobs (%d events, %d log batches, %d webhook "
                "deliveries), %d schedule runs and %d audit entries",
                removed.jobs,
                removed.events,
                removed.logs,
                removed.deliveries,
                removed.schedule_runs,
                removed.audit_events,
                extra={"action": "retention_collected"},
            )
        return removed

    def start(self) -> None:
        """Start the loop thread."""
        self.loop.start()

    def stop(self) -> None:
        """Stop the loop (a batch under way finishes its transaction)."""
        self.loop.stop(timeout=30)
