"""The collector: deletes what is past retention in the background, in batches sized to hold
the database briefly (``services.retention.Collection``), back to back with a pause as long as
each batch while a backlog lasts, then every ``gc_interval`` seconds.

Several servers on one database may collect at once: each batch takes its jobs with
``SKIP LOCKED`` on PostgreSQL, and deleting a row another server deleted first is no error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from orchestrator.config import Settings
from orchestrator.services.retention import Collection, Removed, Retention
from orchestrator.storage.db import Database
from orchestrator.storage.models import utcnow
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.loop import Loop

logger = logging.getLogger(__name__)

# Seconds between two log lines while a backlog is being deleted.
REPORT_SECONDS = 10.0


class Collector:
    """Collects in a background thread; ``collect_batch`` is one pass."""

    def __init__(
        self, settings: Settings, db: Database, hub: Hub, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.settings = settings
        self.collection = Collection(
            db,
            Retention.from_settings(settings),
            clock,
            max_batch=settings.gc_batch,
            batch_time=settings.gc_batch_time,
        )
        self._more = False
        self._unreported = Removed()
        self._report_at = 0.0
        self.loop = Loop(
            name="retention",
            hub=hub,
            run_once=self.collect_batch,
            next_wait=lambda: self.collection.pause if self._more else settings.gc_interval,
            failure_wait=lambda: settings.gc_interval,
            failed="retention pass failed",
            action="retention_failed",
        )

    def collect_batch(self) -> Removed:
        """Delete one batch of what is past retention; what went. What a backlog removed is
        logged once it is gone, and every ``REPORT_SECONDS`` while it lasts (a backlog of a
        million jobs is thousands of batches: a line each would bury the server's log)."""
        removed = self.collection.batch()
        self._more = removed.more
        self._unreported.add(removed)
        now = time.monotonic()
        if self._unreported.total and (not removed.more or now >= self._report_at):
            self._report(self._unreported)
            self._unreported = Removed()
            self._report_at = now + REPORT_SECONDS
        return removed

    @staticmethod
    def _report(removed: Removed) -> None:
        logger.info(
            "retention: deleted %d finished jobs (%d events, %d log batches, %d webhook "
            "deliveries), %d schedule runs, %d audit entries, %d idempotency keys and %d "
            "runners long gone%s",
            removed.jobs,
            removed.events,
            removed.logs,
            removed.deliveries,
            removed.schedule_runs,
            removed.audit_events,
            removed.idempotency_keys,
            removed.runners,
            "; more to go" if removed.more else "",
            extra={"action": "retention_collected"},
        )

    def start(self) -> None:
        """Start the loop thread."""
        self.loop.start()

    def stop(self) -> None:
        """Stop the loop (a batch under way finishes its transaction)."""
        self.loop.stop(timeout=30)
