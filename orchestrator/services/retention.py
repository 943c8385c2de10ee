"""Retention: what is old enough to go, and its deletion in small batches.

A finished job older than its project's retention (``Project.retention``, else the server's
``retention`` setting; 0 keeps everything) goes with its events, logs and webhook deliveries;
so does a finished schedule run. Audit entries have their own, longer ``audit_retention``, and
idempotency keys their ``idempotency_ttl``. A runner's row goes once it has not been heard from
for the server's ``retention`` (at least a day) and runs nothing (hosts come and go: a stopped
or lost runner would otherwise stay in every list and metric for good). Each call of
``collect`` is one transaction of at most ``limit`` rows of each kind, so a long backlog never
holds the writer for long; it says whether more is left. Unfinished jobs and runs are never
touched, whatever their age.

``Collection`` runs those batches for the background collector and ``orchestrator gc``: it
sizes each batch by the time the last one held the database (SQLite has one writer: a submit
that arrives meanwhile waits for the batch), and pauses as long between two batches.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from orchestrator.config import Settings
from orchestrator.errors import Conflict
from orchestrator.rules.idempotency import DEFAULT_TTL_SECONDS
from orchestrator.rules.schedule_states import HTTP_UNFINISHED
from orchestrator.rules.states import ACTIVE, TERMINAL
from orchestrator.services import audit, idempotency, job_queries
from orchestrator.services.audit import Actor
from orchestrator.storage.db import FREE_PAGES_PER_RELEASE, Database
from orchestrator.storage.models import (
    AuditEvent,
    IdempotencyKey,
    Job,
    JobDependency,
    JobEvent,
    JobLog,
    Project,
    RunnerRecord,
    Schedule,
    ScheduleRun,
    TesAttemptLog,
    TesTask,
    TesTaskTag,
    WebhookDelivery,
    WorkerContainer,
)

# A collection's first batch, and the smallest: the time a batch takes decides the next size.
FIRST_BATCH = 50
# Free pages given back to the file system per batch once a backlog is gone (SQLite). Not
# during one: the vacuum moves pages (more to write, and to checkpoint) and the driver steps it
# one page per call, all while holding the writer (a backlog went at 3,207 jobs/s with a
# release after each batch, 5,240 without, on the same machine within minutes).
RELEASE_PAGES = 512
# A runner not heard from for this long at least may go, whatever the retention: one that comes
# back finds its row gone and stops, as when another process has taken its name.
RUNNER_MIN_SILENCE = 86_400.0


@dataclass
class Removed:
    """What a collection deleted (or, in a dry run, would delete)."""

    jobs: int = 0
    events: int = 0
    logs: int = 0
    deliveries: int = 0
    schedule_runs: int = 0
    audit_events: int = 0
    idempotency_keys: int = 0
    runners: int = 0
    # A batch limit was reached: another call has more to do.
    more: bool = False

    def add(self, other: Removed) -> None:
        """Add ``other``'s counts to these (``more`` as the latest batch said)."""
        for counted in fields(self):
            if counted.name != "more":
                setattr(
                    self, counted.name, getattr(self, counted.name) + getattr(other, counted.name)
                )
        self.more = other.more

    @property
    def total(self) -> int:
        """Rows of every kind."""
        return sum(int(getattr(self, f.name)) for f in fields(self) if f.name != "more")


@dataclass(frozen=True)
class Retention:
    """How long finished work is kept: the server's defaults (seconds; 0 keeps it); and how
    long an idempotency key's answer is (seconds)."""

    jobs: float
    audit: float
    idempotency_keys: float = DEFAULT_TTL_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        """The server's ``retention``, ``audit_retention`` and ``idempotency_ttl`` settings."""
        return cls(
            jobs=settings.retention,
            audit=settings.audit_retention,
            idempotency_keys=settings.idempotency_ttl,
        )


def _cutoffs(session: Session, retention: Retention, now: datetime) -> dict[str, datetime]:
    """Per project that keeps finished work for a limited time, the time before which it goes."""
    rows = session.connection().execute(sa.select(col(Project.name), col(Project.retention))).all()
    kept = {name: retention.jobs if own is None else own for name, own in rows}
    return {name: now - timedelta(seconds=keep) for name, keep in kept.items() if keep > 0}


def _expired_jobs(project: str, cutoff: datetime) -> SelectOfScalar[str]:
    return (
        select(Job.id)
        .where(
            Job.project == project,
            col(Job.finish_time) < cutoff,
            col(Job.status).in_(TERMINAL),
            # An array's children go with their parent (``delete_jobs``), never before it.
            col(Job.parent_id).is_(None),
        )
        .order_by(col(Job.finish_time))
    )


def _expired_runs(cutoffs: dict[str, datetime]) -> SelectOfScalar[Any]:
    # A run that still sends (an HTTP target's pending or running attempt) is never expired.
    by_project = [
        sa.and_(col(Schedule.project) == project, col(ScheduleRun.fire_time) < cutoff)
        for project, cutoff in cutoffs.items()
    ]
    return (
        select(ScheduleRun.id)
        .join(Schedule, col(Schedule.id) == col(ScheduleRun.schedule_id))
        .where(sa.or_(*by_project), col(ScheduleRun.status).not_in(HTTP_UNFINISHED))
        .order_by(col(ScheduleRun.id))
    )


def _expired_audit(retention: Retention, now: datetime) -> SelectOfScalar[Any]:
    cutoff = now - timedelta(seconds=retention.audit)
    return select(AuditEvent.id).where(col(AuditEvent.time) < cutoff).order_by(col(AuditEvent.id))


def _expired_keys(retention: Retention, now: datetime) -> SelectOfScalar[Any]:
    expired = idempotency.expired(now, retention.idempotency_keys)
    return select(IdempotencyKey.id).where(expired).order_by(col(IdempotencyKey.id))


def _gone_runners(retention: Retention, now: datetime) -> SelectOfScalar[str]:
    """Runners silent past retention (a day at least) with no job running and no worker
    container recorded."""
    cutoff = now - timedelta(seconds=max(retention.jobs, RUNNER_MIN_SILENCE))
    running = select(Job.runner).where(col(Job.status).in_(ACTIVE), col(Job.runner).is_not(None))
    return (
        select(RunnerRecord.name)
        .where(
            col(RunnerRecord.heartbeat_time) < cutoff,
            col(RunnerRecord.name).not_in(running),
            col(RunnerRecord.name).not_in(select(WorkerContainer.runner)),
        )
        .order_by(col(RunnerRecord.name))
    )


def _among(dialect: str, column: Any) -> sa.ColumnElement[bool]:
    """``column`` is one of the ids bound as ``job_ids`` (``_ids_value``), however many there
    are (an array on PostgreSQL, a JSON array read by ``json_each`` on SQLite): each table is
    searched by its index on the job's id (not scanned)."""
    if dialect == "postgresql":
        ids = sa.bindparam("job_ids", type_=postgresql.ARRAY(sa.String))
        return col(column) == sa.any_(ids)
    values = sa.func.json_each(sa.bindparam("job_ids", type_=sa.String)).table_valued("value")
    return col(column).in_(select(values.c.value))


def _ids_value(dialect: str, job_ids: Sequence[str]) -> object:
    """``job_ids`` as ``_among``'s parameter binds them."""
    return list(job_ids) if dialect == "postgresql" else json.dumps(list(job_ids))


@dataclass(frozen=True)
class _JobDeletes:
    """A dialect's statements of ``delete_jobs``, built once: building a statement cost more
    CPU than running it, and a batch of retention holds SQLite's one writer meanwhile."""

    # The children of the jobs (an array parent's).
    children: sa.Executable
    # What goes with the jobs, then the jobs themselves: the links of the jobs to those they
    # depended on (the links of jobs that depended on them stay with those, released as they
    # ended), a TES task's rows, events, logs, deliveries.
    dependencies: sa.Executable
    tes: tuple[sa.Executable, ...]
    events: sa.Executable
    logs: sa.Executable
    deliveries: sa.Executable
    jobs: sa.Executable


def _build_deletes(dialect: str) -> _JobDeletes:
    def delete(model: Any, column: Any) -> sa.Executable:
        # On a Connection the statement runs as plain SQL, whatever model names the table.
        return sa.delete(model).where(_among(dialect, column))

    return _JobDeletes(
        children=select(Job.id).where(_among(dialect, Job.parent_id)),
        dependencies=delete(JobDependency, JobDependency.job_id),
        tes=tuple(
            delete(model, column)
            for model, column in (
                (TesTaskTag, TesTaskTag.job_id),
                (TesAttemptLog, TesAttemptLog.job_id),
                (TesTask, TesTask.job_id),
            )
        ),
        events=delete(JobEvent, JobEvent.job_id),
        logs=delete(JobLog, JobLog.job_id),
        deliveries=delete(WebhookDelivery, WebhookDelivery.job_id),
        jobs=delete(Job, Job.id),
    )


_DELETES: dict[str, _JobDeletes] = {}


def delete_jobs(session: Session, job_ids: Sequence[str]) -> Removed:
    """Delete the jobs with everything that hangs off them, in the caller's transaction (all
    of it or, if anything fails, none: no event or log outlives its job); how many rows went.

    Core statements on the transaction's connection: the ORM's bulk delete would look for the
    deleted rows among the session's objects (there are none) at a cost per statement that was
    most of a batch's time."""
    if not job_ids:
        return Removed()
    # What the session holds goes first (a task's attempt log added in this transaction).
    session.flush()
    connection = session.connection()
    dialect = connection.dialect.name
    built = _DELETES.get(dialect)
    if built is None:
        # Two threads may both build them: the same statements, one of them kept.
        built = _DELETES.setdefault(dialect, _build_deletes(dialect))
    # An array parent's children go with it (there are none while it is unfinished).
    children = connection.scalars(built.children, {"job_ids": _ids_value(dialect, job_ids)})
    bound = {"job_ids": _ids_value(dialect, [*job_ids, *children.all()])}

    def gone(statement: sa.Executable) -> int:
        return int(connection.execute(statement, bound).rowcount)

    gone(built.dependencies)
    for statement in built.tes:
        gone(statement)
    return Removed(
        events=gone(built.events),
        logs=gone(built.logs),
        deliveries=gone(built.deliveries),
        jobs=gone(built.jobs),
    )


def delete_job(session: Session, project: str, job_id: str, actor: Actor) -> Removed:
    """Delete one finished job of ``project`` now, whatever its age (Conflict while it is not
    finished: cancel it first); recorded in the audit trail."""
    job = job_queries.get(session, project, job_id)
    if job.parent_id is not None:
        raise Conflict(
            f"job {job.id} is a child of array job {job.parent_id}: delete the parent, "
            "which deletes its children",
            field="job",
        )
    if job.status not in TERMINAL:
        raise Conflict(
            f"job {job.id} is {job.status}: only a finished job can be deleted (cancel it first)",
            field="status",
        )
    removed = delete_jobs(session, [job.id])
    audit.record(session, actor, "job_deleted", f"job/{job.id}", project)
    return removed


def collect(session: Session, retention: Retention, now: datetime, limit: int) -> Removed:
    """Delete one batch of what is past retention (up to ``limit`` of each kind)."""
    # Core statements on the transaction's connection throughout: a batch holds SQLite's
    # writer, and the ORM's handling of each statement was a good part of its fixed cost.
    connection = session.connection()
    cutoffs = _cutoffs(session, retention, now)
    job_ids: list[str] = []
    for project, cutoff in cutoffs.items():
        room = limit - len(job_ids)
        if room <= 0:
            break
        # SKIP LOCKED: servers collecting at once on PostgreSQL take different jobs.
        statement = _expired_jobs(project, cutoff).limit(room)
        job_ids.extend(connection.scalars(statement.with_for_update(skip_locked=True)).all())
    removed = delete_jobs(session, job_ids)
    run_ids: list[int] = []
    if cutoffs:
        run_ids = list(connection.scalars(_expired_runs(cutoffs).limit(limit)).all())
        if run_ids:
            connection.execute(sa.delete(ScheduleRun).where(col(ScheduleRun.id).in_(run_ids)))
    audit_ids: list[int] = []
    if retention.audit > 0:
        audit_ids = list(connection.scalars(_expired_audit(retention, now).limit(limit)).all())
        if audit_ids:
            connection.execute(sa.delete(AuditEvent).where(col(AuditEvent.id).in_(audit_ids)))
    key_ids = list(connection.scalars(_expired_keys(retention, now).limit(limit)).all())
    if key_ids:
        connection.execute(sa.delete(IdempotencyKey).where(col(IdempotencyKey.id).in_(key_ids)))
    runner_names: list[str] = []
    if retention.jobs > 0:
        runner_names = list(connection.scalars(_gone_runners(retention, now).limit(limit)).all())
        if runner_names:
            connection.execute(
                sa.delete(RunnerRecord).where(col(RunnerRecord.name).in_(runner_names))
            )
    removed.schedule_runs, removed.audit_events = len(run_ids), len(audit_ids)
    removed.idempotency_keys, removed.runners = len(key_ids), len(runner_names)
    counts = (len(job_ids), len(run_ids), len(audit_ids), len(key_ids), len(runner_names))
    removed.more = limit in counts
    return removed


def _count(session: Session, rows: SelectOfScalar[Any]) -> int:
    """How many rows ``rows`` selects."""
    subquery = rows.order_by(None).subquery()
    return int(session.exec(select(sa.func.count()).select_from(subquery)).one())


def _count_of_jobs(
    session: Session,
    table: type[JobEvent | JobLog | WebhookDelivery],
    jobs: list[SelectOfScalar[str]],
) -> int:
    """The rows of ``table`` that belong to the jobs ``jobs`` select."""
    return sum(
        _count(session, select(table.id).where(col(table.job_id).in_(ids.order_by(None))))
        for ids in jobs
    )


def _with_children(ids: SelectOfScalar[str]) -> SelectOfScalar[str]:
    """The jobs ``ids`` selects and their children (an array goes whole, as ``delete_jobs``)."""
    chosen = ids.order_by(None)
    return select(Job.id).where(sa.or_(col(Job.id).in_(chosen), col(Job.parent_id).in_(chosen)))


def expired(session: Session, retention: Retention, now: datetime) -> Removed:
    """What ``collect`` would delete, counted without deleting anything (a dry run)."""
    cutoffs = _cutoffs(session, retention, now)
    jobs = [_with_children(_expired_jobs(project, cutoff)) for project, cutoff in cutoffs.items()]
    counted = Removed(
        jobs=sum(_count(session, ids) for ids in jobs),
        events=_count_of_jobs(session, JobEvent, jobs),
        logs=_count_of_jobs(session, JobLog, jobs),
        deliveries=_count_of_jobs(session, WebhookDelivery, jobs),
    )
    if cutoffs:
        counted.schedule_runs = _count(session, _expired_runs(cutoffs))
    if retention.audit > 0:
        counted.audit_events = _count(session, _expired_audit(retention, now))
    counted.idempotency_keys = _count(session, _expired_keys(retention, now))
    if retention.jobs > 0:
        counted.runners = _count(session, _gone_runners(retention, now))
    return counted


class Collection:
    """Batches of ``collect``, each its own transaction, and a pause as long as a batch took
    before the next: the collector takes at most half of the database's time.

    On SQLite, which has one writer, a batch is sized to hold it for about ``batch_time``
    seconds (at most ``max_batch`` jobs): however long the backlog, a submit or a claim waits
    for one short batch at most. On PostgreSQL nothing waits for a batch (it locks the rows of
    finished jobs only), so each is of ``max_batch`` jobs, which spends fewer round trips and
    commits per job.

    On SQLite the pages a backlog freed are given back to the file system once it is gone, in
    steps of ``RELEASE_PAGES`` (``Database.release_free_pages``; new rows reuse them meanwhile),
    and a batch's commit leaves the checkpoint (the copy of its pages from the WAL into the
    database file, about as long again as the batch) to after the writer is released: that
    time counts towards the pause.
    """

    def __init__(
        self,
        db: Database,
        keep: Retention,
        clock: Callable[[], datetime],
        *,
        max_batch: int,
        batch_time: float,
    ) -> None:
        self.db = db
        self.keep = keep
        self.clock = clock
        self.max_batch = max_batch
        self.batch_time = batch_time
        # PostgreSQL has no single writer: a batch locks only the rows of finished jobs, which
        # nothing else writes, so no submit waits for it; its batches are of ``max_batch``.
        self.sized_by_time = not db.is_postgres
        self.size = min(FIRST_BATCH, max_batch) if self.sized_by_time else max_batch
        # Seconds to wait before the next batch (the last one's time).
        self.pause = 0.0

    def batch(self) -> Removed:
        """Delete one batch, or once a backlog is gone give back some of the pages it freed;
        what went (``more``: call again after ``pause``)."""
        # The writer turn is held from the batch's BEGIN to the end of its vacuum, then the
        # checkpoint starts at once: a submit that waited for the turn finds the checkpoint
        # under way and leaves it (its own commit would otherwise make it, on its time).
        with self.db.writer_turn():
            with self.db.transaction(bulk=True) as session:
                session.connection()  # BEGIN: from here the writer is ours
                began = time.monotonic()
                removed = collect(session, self.keep, self.clock(), self.size)
            if not removed.more and self.db.release_free_pages(RELEASE_PAGES) == RELEASE_PAGES:
                # Free pages are given back once a backlog is gone, a few at a time.
                removed.more = True
            held = time.monotonic() - began
        self.db.checkpoint()
        if removed.jobs == self.size and self.sized_by_time:
            # Only a full batch says how many fit in the time; at most double or halve.
            wanted = self.size * self.batch_time / max(held, 1e-4)
            wanted = min(max(wanted, self.size / 2), self.size * 2)
            self.size = int(min(max(wanted, min(FIRST_BATCH, self.max_batch)), self.max_batch))
        # The checkpoint leaves the writer free: the pause only makes up the difference.
        self.pause = max(held - (time.monotonic() - began - held), 0.0)
        return removed

    def until_done(self) -> Removed:
        """Batches until nothing past retention is left, then every free page given back;
        what went in all."""
        total = Removed(more=True)
        while total.more:
            total.add(self.batch())
            if total.more:
                time.sleep(self.pause)
        while self.db.release_free_pages() == FREE_PAGES_PER_RELEASE:
            pass
        self.db.checkpoint()
        return total
