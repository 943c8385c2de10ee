"""What ``/metrics`` reads from the database (``services.metrics.snapshot``), SQLite and
PostgreSQL: the webhook backlog and the age of its oldest message."""

from __future__ import annotations

from datetime import timedelta

from orchestrator.rules.delivery_states import DeliveryStatus
from orchestrator.services import metrics
from orchestrator.storage.db import Database
from orchestrator.storage.models import WebhookDelivery, utcnow


def test_the_webhook_backlog_counts_messages_not_yet_settled_and_ages_the_oldest(
    database_url: str,
) -> None:
    db = Database(database_url)
    try:
        db.upgrade_schema()
        with db.read() as session:
            empty = metrics.snapshot(session, 30)
        assert (empty.webhooks_due, empty.oldest_webhook_due_seconds) == (0, 0.0)
        made = utcnow() - timedelta(minutes=10)
        with db.transaction() as session:
            for number, status in enumerate(
                (DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.DELIVERED), 1
            ):
                session.add(
                    WebhookDelivery(
                        job_id="j",
                        number=number,
                        project="default",
                        message_id=f"msg_{number}",
                        event_type="job.succeeded",
                        url="http://example.com/",
                        body="{}",
                        status=status,
                        create_time=made + timedelta(minutes=number),
                    )
                )
        with db.read() as session:
            found = metrics.snapshot(session, 30)
        # The delivered one is settled; the oldest of the others was made 9 minutes ago.
        assert found.webhooks_due == 2
        assert 9 * 60 <= found.oldest_webhook_due_seconds < 10 * 60
    finally:
        db.dispose()
