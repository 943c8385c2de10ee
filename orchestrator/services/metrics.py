"""What the database holds at a moment, for ``/metrics``: jobs waiting and running per queue,
queues' settings, runners and their engines, webhook messages due.

Every query reads only unfinished rows through an index on their status (jobs, webhook
deliveries) or small tables (queues, runners), so a scrape costs the same with a million
finished jobs as with none. Finished jobs are counted as they end, by each process
(``telemetry.JOBS_ENDED``), never by a scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.rules.delivery_states import DeliveryStatus
from orchestrator.rules.runner_states import RunnerState
from orchestrator.rules.states import UNFINISHED, JobStatus
from orchestrator.schemas.common import utc
from orchestrator.services import arrays, runners
from orchestrator.storage.models import Job, Queue, WebhookDelivery, utcnow


@dataclass(frozen=True)
class QueueSnapshot:
    """A queue's settings and its unfinished jobs by status (every unfinished status listed,
    zero included)."""

    project: str
    name: str
    priority: int
    max_concurrency: int | None
    paused: bool
    jobs: dict[JobStatus, int]


@dataclass(frozen=True)
class RunnerSnapshot:
    """A registered runner as the registry sees it now."""

    name: str
    state: RunnerState
    capacity: int
    running: int
    engine_up: bool


@dataclass(frozen=True)
class Snapshot:
    """Everything ``/metrics`` reads from the database, read in one transaction."""

    queues: list[QueueSnapshot]
    runners: list[RunnerSnapshot]
    webhooks_due: int
    oldest_webhook_due_seconds: float


def snapshot(session: Session, lease: float) -> Snapshot:
    """Read the queues, their unfinished jobs, the runners and the webhook backlog."""
    counted = session.exec(
        select(Job.project, Job.queue, Job.status, sa.func.count())
        # An array's parent runs nothing itself: its children are counted.
        .where(col(Job.status).in_(UNFINISHED), arrays.NOT_PARENT)
        .group_by(col(Job.project), col(Job.queue), col(Job.status))
    ).all()
    by_queue: dict[tuple[str, str], dict[JobStatus, int]] = {}
    for project, queue, status, count in counted:
        by_queue.setdefault((project, queue), {})[JobStatus(status)] = int(count)
    queues = [
        QueueSnapshot(
            project=queue.project,
            name=queue.name,
            priority=queue.priority,
            max_concurrency=queue.max_concurrency,
            paused=queue.paused,
            jobs={
                status: by_queue.get((queue.project, queue.name), {}).get(status, 0)
                for status in sorted(UNFINISHED)
            },
        )
        for queue in session.exec(select(Queue).order_by(col(Queue.project), col(Queue.name))).all()
    ]
    registered = [
        RunnerSnapshot(
            name=view.record.name,
            state=view.state,
            capacity=view.record.capacity,
            running=view.running,
            engine_up=view.record.docker == "ok",
        )
        for view in runners.list_runners(session, lease)
    ]
    due, oldest = session.exec(
        select(sa.func.count(), sa.func.min(col(WebhookDelivery.create_time))).where(
            col(WebhookDelivery.status).in_([DeliveryStatus.PENDING, DeliveryStatus.SENDING])
        )
    ).one()
    # An aggregate's time skips the column type's conversion: ``utc`` makes it aware.
    since = utc(oldest)
    waited = (utcnow() - since).total_seconds() if since is not None else 0.0
    return Snapshot(
        queues=queues,
        runners=registered,
        webhooks_due=int(due),
        oldest_webhook_due_seconds=max(waited, 0.0),
    )
