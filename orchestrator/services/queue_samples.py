"""A queue's depth and throughput over the last hour, for the console's chart: a row per queue
per minute in ``queue_samples``, written by ``background.queue_sampler``, pruned after
``KEEP``.

Why samples rather than a query over the jobs: a queue's depth an hour ago is nowhere in the
jobs (only the changes are, in their events), and rebuilding it would walk every event of the
hour. Throughput alone could be counted from ``ix_jobs_project_finish``, but over an hour that
reads every job that ended in it (60,000 rows at 1,000 jobs a minute) per page load. A sample
costs the queue counts (a range of the claim index per queue, as the queues page reads them)
and the jobs ended in the last two minutes (a range of ``ix_jobs_project_finish``), once a
minute whatever the number of jobs or of browsers; the chart reads at most 60 rows a queue.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from orchestrator.services import arrays, projects, queues
from orchestrator.storage.models import Job, QueueSample

MINUTE = timedelta(minutes=1)
# What the chart shows, and how long a sample is kept (twice that: a late reader still has it).
SHOWN = timedelta(hours=1)
KEEP = 2 * SHOWN


def minute_of(time: datetime) -> datetime:
    """The start of ``time``'s minute."""
    return time.replace(second=0, microsecond=0)


def _ended(session: Session, project: str, start: datetime, end: datetime) -> dict[str, int]:
    """Jobs of the project (array parents aside: their children are counted) that ended in
    ``[start, end)``, by queue: a range of ``ix_jobs_project_finish``."""
    statement = (
        select(Job.queue, sa.func.count())
        .where(
            Job.project == project,
            col(Job.finish_time) >= start,
            col(Job.finish_time) < end,
            arrays.NOT_PARENT,
        )
        .group_by(col(Job.queue))
    )
    return {queue: int(count) for queue, count in session.execute(statement).all()}


def sample(session: Session, now: datetime) -> int:
    """Record every queue's depth now in its row of ``now``'s minute (the minute's last sample
    wins), with the jobs ended so far in that minute; complete the previous minute's count of
    ended jobs (a pass late in a minute misses its last seconds); delete rows older than
    ``KEEP``. Several servers may sample at once: the last write of a row wins, and they agree.
    The rows written."""
    minute = minute_of(now)
    table = QueueSample.__table__  # type: ignore[attr-defined]
    dialect = session.connection().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    rows: list[dict[str, object]] = []
    for project in projects.list_all(session):
        counts = queues.counts(session, project.name)
        current = _ended(session, project.name, minute, now + MINUTE)
        previous = _ended(session, project.name, minute - MINUTE, minute)
        for queue in queues.list_all(session, project.name):
            waiting, running = counts.get(queue.name, (0, 0))
            rows.append(
                {
                    "project": project.name,
                    "queue": queue.name,
                    "minute": minute,
                    "waiting": waiting,
                    "running": running,
                    "ended": current.get(queue.name, 0),
                }
            )
            if queue.name in previous:
                session.execute(
                    sa.update(table)
                    .where(
                        table.c.project == project.name,
                        table.c.queue == queue.name,
                        table.c.minute == minute - MINUTE,
                    )
                    .values(ended=previous[queue.name])
                )
    if rows:
        statement = insert.values(rows)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["project", "queue", "minute"],
                set_={
                    name: getattr(statement.excluded, name)
                    for name in ("waiting", "running", "ended")
                },
            )
        )
    session.execute(sa.delete(table).where(table.c.minute < minute - KEEP))
    return len(rows)


def last_hour(session: Session, project: str, now: datetime) -> dict[str, list[QueueSample]]:
    """The project's samples of the last hour, by queue, oldest first."""
    statement = (
        select(QueueSample)
        .where(QueueSample.project == project, col(QueueSample.minute) > minute_of(now) - SHOWN)
        .order_by(col(QueueSample.queue), col(QueueSample.minute))
    )
    found: dict[str, list[QueueSample]] = defaultdict(list)
    for row in session.exec(statement).all():
        found[row.queue].append(row)
    return dict(found)
