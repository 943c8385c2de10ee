"""The collector: deletes what is past retention in the background, in batches sized to hold
the database briefly (``services.retention.Collection``), back to back with a pause as long as
each batch while a backlog lasts, then every ``gc_interval`` seconds.

Several servers on one database may collect at once: each batch takes its jobs with
``SKIP LOCKED`` on PostgreSQL, and deleting a row another server deleted first is no error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from orchestrator.config import Settings
from orchestrator.services.retention import Collection, Removed, Retention
from orchestrator.storage.db import Database
from orchestrator.storage.models import utcnow
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.loop import Loop

logger = logging.getLogger(__name__)


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
        """Delete one batch of what is past retention; what went."""
        removed = self.collection.batch()
        self._more = removed.more
        if removed.total:
            logger.info(
                "retention: deleted %d finished jobs (%d events, %d log batches, %d webhook "
                "deliveries), %d schedule runs, %d audit entries and %d idempotency keys",
                removed.jobs,
                removed.events,
                removed.logs,
                removed.deliveries,
                removed.schedule_runs,
                removed.audit_events,
                removed.idempotency_keys,
                extra={"action": "retention_collected"},
            )
        return removed

    def start(self) -> None:
        """Start the loop thread."""
        self.loop.start()

    def stop(self) -> None:
        """Stop the loop (a batch under way finishes its transaction)."""
        self.loop.stop(timeout=30)
