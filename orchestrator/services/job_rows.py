"""A new job's row and its first events, stored by statements built once: ``jobs.submit``'s
path for a job that links to no other (no dependencies, no array). There the ORM's unit of work
(a flush, the ``RETURNING`` of each event's id) cost the server more CPU than the database's
work. What the job and its events hold, and the wake-ups, stay ``jobs``'s to decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session

from orchestrator.rules.states import EventType
from orchestrator.storage.models import Job, JobEvent, utcnow

_JOBS: sa.Table = Job.__table__  # type: ignore[attr-defined]
_EVENTS: sa.Table = JobEvent.__table__  # type: ignore[attr-defined]
# Built once: building a statement costs more than running it.
_INSERT_JOB = _JOBS.insert().returning(_JOBS.c.seq)
_INSERT_EVENTS = _EVENTS.insert()
# Each column of a job's row with the attribute that holds it (``metadata``: ``job_metadata``),
# but ``seq``, which the database numbers.
_JOB_COLUMNS = tuple(
    (prop.key, prop.columns[0].key) for prop in sa.inspect(Job).column_attrs if prop.key != "seq"
)


def insert_job(session: Session, job: Job) -> None:
    """Store the new ``job`` (in no session) in the session's transaction and give it its
    ``seq``. It is left detached, as a job read by a session that has closed: ``session.add``
    takes it in without inserting it again. ``IntegrityError`` as a flush would raise it."""
    # What the session holds goes first, as in the flush this replaces (a job this transaction
    # cancelled leaves its name free for this one only once its row says so).
    session.flush()
    values = {column: getattr(job, attribute) for attribute, column in _JOB_COLUMNS}
    job.seq = session.connection().execute(_INSERT_JOB, values).scalar_one()
    make_transient_to_detached(job)


def insert_events(
    session: Session, job: Job, events: Sequence[tuple[EventType, dict[str, Any] | None]]
) -> None:
    """Append ``events`` (type and detail) to the new ``job`` in one statement, in their order,
    each as ``jobs.record`` writes one."""
    rows = [
        {
            "job_id": job.id,
            "time": utcnow(),
            "type": event,
            "attempt": job.attempt,
            "status": job.status,
            "detail": detail or {},
        }
        for event, detail in events
    ]
    session.connection().execute(_INSERT_EVENTS, rows)
