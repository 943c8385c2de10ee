"""Reading jobs: one job, a page of a project's jobs (bounded in rows and in bytes), a job's
events and its stored logs.

A page's cursor is opaque to clients: the job's sequence number, base64-encoded.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import load_only
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from orchestrator.config import Settings
from orchestrator.errors import InvalidRequest, NotFound
from orchestrator.rules.fields import MAX_INT, storable
from orchestrator.rules.reasons import FailureReason
from orchestrator.rules.states import EventType, JobStatus
from orchestrator.schemas.jobs import (
    DOCUMENTS,
    SUMMARY_COLUMNS,
    ArrayChildren,
    JobAttempt,
    JobCreate,
    JobPublic,
    list_item_json,
)
from orchestrator.services import definitions, dependencies, projects
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


# The largest JSON a summary can take: ids, names, times, a URL and a runner's error message.
SUMMARY_BYTES = 8192
# A row read takes about this many times its JSON while it becomes a list item: the text the
# database sends, the values decoded from it, and the item encoded again.
READ_COPIES = 3


def read_batch(settings: Settings, fields: tuple[str, ...], limit: int) -> int:
    """How many rows of a list to read from the database at once: as many as fit
    ``list_page_max_bytes`` at the largest each named field can be (``READ_COPIES`` times),
    so the memory a read takes stays within the page's bound whatever the jobs hold (at
    least one, at most ``limit + 1``: the one past a full page says whether there is more)."""
    largest = {
        "input": settings.max_input_bytes,
        "metadata": settings.max_metadata_bytes,
        "output": settings.max_output_bytes,
    }
    # The rest come from a request body and a definition (each up to ORCH_MAX_BODY_BYTES).
    row = SUMMARY_BYTES + sum(largest.get(name, 2 * settings.max_body_bytes) for name in fields)
    return max(1, min(limit + 1, settings.list_page_max_bytes // (READ_COPIES * row)))


@dataclass(frozen=True)
class JobFilter:
    """What a job list keeps: each given field must match (``definition``: ``name`` or
    ``name:version``; created in ``[created_after, created_before)``)."""

    queue: str | None = None
    status: JobStatus | None = None
    definition: str | None = None
    name: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    # An array parent's id: its children; None: jobs that are not children (a list shows a
    # parent with its counts, not its children one by one).
    parent_id: str | None = None

    def apply(self, statement: SelectOfScalar[Job]) -> SelectOfScalar[Job]:
        """``statement`` keeping only the matching jobs; a malformed ``definition`` is a 400."""
        if self.parent_id is None:
            statement = statement.where(col(Job.parent_id).is_(None))
        else:
            statement = statement.where(Job.parent_id == self.parent_id)
        if self.queue is not None:
            statement = statement.where(Job.queue == self.queue)
        if self.status is not None:
            statement = statement.where(Job.status == self.status)
        if self.definition is not None:
            name, version = definitions.parse_reference(self.definition)
            statement = statement.where(Job.definition_name == name)
            if version is not None:
                if not 1 <= version <= MAX_INT:
                    raise InvalidRequest(
                        f"definition: version {version} is out of range", field="definition"
                    )
                statement = statement.where(Job.definition_version == version)
        if self.name is not None:
            statement = statement.where(Job.name == self.name)
        if self.created_after is not None:
            statement = statement.where(col(Job.create_time) >= self.created_after)
        if self.created_before is not None:
            statement = statement.where(col(Job.create_time) < self.created_before)
        return statement


def list_jobs(
    session: Session,
    project: str,
    *,
    where: JobFilter = JobFilter(),
    limit: int = 50,
    cursor: str | None = None,
    fields: tuple[str, ...] = (),
    max_bytes: int,
    batch: int,
) -> tuple[list[bytes], str | None]:
    """A page of the project's jobs that match ``where``, newest first, as JSON list items
    (``list_item_json``: the summary and the named ``fields``), and the cursor of the next
    page (the same filter goes with it).

    Only those columns are read, ``batch`` rows at a time. The page ends after ``limit``
    jobs, or before the job that would take its items past ``max_bytes`` (a page always
    holds one job: one job is bounded by the input limits); the cursor goes on from there.
    """
    projects.get(session, project)
    columns = (*SUMMARY_COLUMNS, *(DOCUMENTS[name][0] for name in fields))
    # raiseload: reading a column not loaded is a bug to see, not a query per row.
    statement = select(Job).options(load_only(*columns, raiseload=True))
    statement = where.apply(statement.where(Job.project == project))
    before = _decode_cursor(cursor) if cursor is not None else None
    items: list[bytes] = []
    size = 0
    last: int | None = None
    for row in _newest_first(session, statement, before, batch):
        if len(items) == limit:
            break
        item = list_item_json(row, fields, children_counts(session, row))
        if items and size + len(item) + 1 > max_bytes:
            break
        items.append(item)
        size += len(item) + 1  # and its comma
        last = row.seq
    else:
        return items, None
    assert last is not None
    return items, _encode_cursor(last)


def children_counts(session: Session, job: Job) -> ArrayChildren | None:
    """An array parent's children counted by status (one grouped read of the parent's index);
    None for any other job."""
    if job.array_size is None or job.array_index is not None:
        return None
    statement = (
        select(Job.status, sa.func.count()).where(Job.parent_id == job.id).group_by(col(Job.status))
    )
    counts = {str(status): count for status, count in session.exec(statement).all()}
    return ArrayChildren(size=job.array_size, **counts)


def _newest_first(
    session: Session, statement: SelectOfScalar[Job], before: int | None, batch: int
) -> Iterator[Job]:
    """The statement's jobs by ``seq``, newest first, from below ``before``, read ``batch`` at a
    time (a batch read is released once the next one is read: the session's identity map holds
    its rows weakly)."""
    while True:
        page = statement if before is None else statement.where(col(Job.seq) < before)
        rows = session.exec(page.order_by(sa.desc(col(Job.seq))).limit(batch)).all()
        yield from rows
        if len(rows) < batch:
            return
        before = rows[-1].seq


def last_event_id(session: Session) -> int:
    """The id of the newest job event of any project (0 when there is none): every change of a
    job's status writes one, so an unchanged id means no job moved. Read from the primary key."""
    return int(session.exec(select(sa.func.max(JobEvent.id))).one() or 0)


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


# The events that end an attempt; a later one of the same attempt wins (a timeout is recorded,
# then the failure or retry it led to).
_ATTEMPT_ENDS = frozenset(
    {
        EventType.SUCCEEDED,
        EventType.FAILED,
        EventType.RETRYING,
        EventType.TIMED_OUT,
        EventType.CANCELLED,
        EventType.RUNNER_LOST,
        EventType.INTERRUPTED,
    }
)


def attempts(session: Session, job_id: str) -> list[JobAttempt]:
    """The job's attempts, first to last, from its events: each claim opens one, its
    container's start and its end (outcome, exit code, reason) fill it in."""
    found: dict[int, dict[str, Any]] = {}
    for event in events(session, job_id):
        if not event.attempt:
            continue  # before any claim, or an array parent's own events
        if event.type == EventType.STARTING:
            found[event.attempt] = {
                "attempt": event.attempt,
                "runner": event.detail.get("runner"),
                "container_id": None,
                "claim_time": event.time,
                "start_time": None,
                "end_time": None,
                "outcome": None,
                "exit_code": None,
                "reason": None,
                "error": None,
            }
            continue
        attempt = found.get(event.attempt)
        if attempt is None:
            continue
        if event.type == EventType.STARTED:
            attempt["container_id"] = event.detail.get("container_id")
            attempt["start_time"] = event.time
        elif event.type in _ATTEMPT_ENDS:
            attempt["end_time"] = event.time
            attempt["outcome"] = event.type
            for key in ("exit_code", "reason", "error"):
                if event.detail.get(key) is not None:
                    attempt[key] = event.detail[key]
            if event.type == EventType.CANCELLED:
                attempt["reason"] = FailureReason.CANCELLED
    return [JobAttempt(**attempt) for attempt in found.values()]


def logs(
    session: Session, job_id: str, after: int = 0, attempt: int | None = None, limit: int = 5000
) -> list[JobLog]:
    """Stored log chunks of the job with an id greater than ``after``, oldest first."""
    statement = select(JobLog).where(JobLog.job_id == job_id, col(JobLog.id) > after)
    if attempt is not None:
        statement = statement.where(JobLog.attempt == attempt)
    return list(session.exec(statement.order_by(col(JobLog.id)).limit(limit)).all())


def public(session: Session, job: Job) -> JobPublic:
    """The job as the API and webhooks show it: an array parent with its children's counts,
    any job with its dependencies and how many jobs depend on it."""
    return JobPublic.from_row(
        job, children_counts(session, job), *dependencies.shown(session, job.id)
    )


def submitted(session: Session, job: Job, request: JobCreate) -> JobPublic:
    """``public`` of the job ``request`` has just made (``jobs.submit``), in its transaction.
    A job that names no dependencies and is no array is shown without a read: it has no
    children nor dependencies, and no job can depend on it before its submit commits."""
    if request.links_jobs:
        return public(session, job)
    return JobPublic.from_row(job)


def log_tail(
    session: Session, job_id: str, before: int | None = None, limit: int = 200
) -> list[JobLog]:
    """The job's last ``limit`` stored log chunks (those with an id below ``before``, if given),
    oldest first: a long log's end, read from the ``ix_job_logs_job`` index backwards."""
    statement = select(JobLog).where(JobLog.job_id == job_id)
    if before is not None:
        statement = statement.where(col(JobLog.id) < before)
    rows = session.exec(statement.order_by(sa.desc(col(JobLog.id))).limit(limit)).all()
    return list(reversed(rows))
