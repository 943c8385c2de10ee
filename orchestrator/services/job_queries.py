"""Reading jobs: one job, a page of a project's jobs, a job's events and its stored logs.

A page's cursor is opaque to clients: the job's sequence number, base64-encoded.
"""

from __future__ import annotations

import base64

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.errors import InvalidRequest, NotFound
from orchestrator.rules.fields import storable
from orchestrator.rules.states import JobStatus
from orchestrator.services import projects
from orchestrator.storage.models import Job, JobEvent, JobLog


def get(session: Session, project: str, job_id: str) -> Job:
    """The job; NotFound names it."""
    job = None
    if storable(job_id):
        job = session.exec(select(Job).where(Job.id == job_id, Job.project == project)).first()
    if job is None:
        raise NotFound(f"job '{job_id}' not found in project '{project}'", field="job")
    return job


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(str(seq).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        seq = int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except ValueError:
        seq = -1
    if not 0 < seq < 2**62:
        raise InvalidRequest("cursor: not a cursor returned by this API", field="cursor")
    return seq


def list_jobs(
    session: Session,
    project: str,
    *,
    queue: str | None = None,
    status: JobStatus | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    """A page of the project's jobs, newest first, and the cursor of the next page."""
    projects.get(session, project)
    statement = select(Job).where(Job.project == project)
    if queue is not None:
        statement = statement.where(Job.queue == queue)
    if status is not None:
        statement = statement.where(Job.status == status)
    if cursor is not None:
        statement = statement.where(col(Job.seq) < _decode_cursor(cursor))
    rows = list(session.exec(statement.order_by(sa.desc(col(Job.seq))).limit(limit + 1)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor(rows[-1].seq) if more and rows[-1].seq is not None else None
    return rows, next_cursor


def events(
    session: Session, job_id: str, after: int = 0, limit: int | None = None
) -> list[JobEvent]:
    """The job's events with an id greater than ``after``, oldest first (the first ``limit``)."""
    statement = (
        select(JobEvent)
        .where(JobEvent.job_id == job_id, col(JobEvent.id) > after)
        .order_by(col(JobEvent.id))
        .limit(limit)
    )
    return list(session.exec(statement).all())


def logs(
    session: Session, job_id: str, after: int = 0, attempt: int | None = None, limit: int = 5000
) -> list[JobLog]:
    """Stored log chunks of the job with an id greater than ``after``, oldest first."""
    statement = select(JobLog).where(JobLog.job_id == job_id, col(JobLog.id) > after)
    if attempt is not None:
        statement = statement.where(JobLog.attempt == attempt)
    return list(session.exec(statement.order_by(col(JobLog.id)).limit(limit)).all())
