"""Retention: what is old enough to go, and its deletion in small batches.

A finished job older than its project's retention (``Project.retention``, else the server's
``retention`` setting; 0 keeps everything) goes with its events, logs and webhook deliveries;
so does a finished schedule run. Audit entries have their own, longer ``audit_retention``.
Each call of ``collect`` is one transaction of at most ``limit`` jobs, ``limit`` schedule runs
and ``limit`` audit entries, so a long backlog never holds the writer for long; it says
whether more is left. Unfinished jobs and runs are never touched, whatever their age.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, delete, select
from sqlmodel.sql.expression import SelectOfScalar

from orchestrator.config import Settings
from orchestrator.errors import Conflict
from orchestrator.rules.schedule_states import HTTP_UNFINISHED
from orchestrator.rules.states import TERMINAL
from orchestrator.services import audit, job_queries
from orchestrator.services.audit import Actor
from orchestrator.storage.models import (
    AuditEvent,
    Job,
    JobEvent,
    JobLog,
    Project,
    Schedule,
    ScheduleRun,
    WebhookDelivery,
)


@dataclass
class Removed:
    """What a collection deleted (or, in a dry run, would delete)."""

    jobs: int = 0
    events: int = 0
    logs: int = 0
    deliveries: int = 0
    schedule_runs: int = 0
    audit_events: int = 0
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
    """How long finished work is kept: the server's defaults (seconds; 0 keeps it)."""

    jobs: float
    audit: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        """The server's ``retention`` and ``audit_retention`` settings."""
        return cls(jobs=settings.retention, audit=settings.audit_retention)

    def of(self, project: Project) -> float:
        """The project's own retention, else the server's."""
        return self.jobs if project.retention is None else project.retention


def _cutoffs(session: Session, retention: Retention, now: datetime) -> dict[str, datetime]:
    """Per project that keeps finished work for a limited time, the time before which it goes."""
    projects = session.exec(select(Project)).all()
    return {
        project.name: now - timedelta(seconds=retention.of(project))
        for project in projects
        if retention.of(project) > 0
    }


def _expired_jobs(project: str, cutoff: datetime) -> SelectOfScalar[str]:
    return (
        select(Job.id)
        .where(
            Job.project == project,
            col(Job.finish_time) < cutoff,
            col(Job.status).in_(TERMINAL),
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


def delete_jobs(session: Session, job_ids: Sequence[str]) -> Removed:
    """Delete the jobs with everything that hangs off them; how many rows went."""
    if not job_ids:
        return Removed()

    def gone(statement: sa.Delete) -> int:
        return int(session.exec(statement).rowcount)  # type: ignore[call-overload]

    return Removed(
        events=gone(delete(JobEvent).where(col(JobEvent.job_id).in_(job_ids))),
        logs=gone(delete(JobLog).where(col(JobLog.job_id).in_(job_ids))),
        deliveries=gone(delete(WebhookDelivery).where(col(WebhookDelivery.job_id).in_(job_ids))),
        jobs=gone(delete(Job).where(col(Job.id).in_(job_ids))),
    )


def delete_job(session: Session, project: str, job_id: str, actor: Actor) -> Removed:
    """Delete one finished job of ``project`` now, whatever its age (Conflict while it is not
    finished: cancel it first); recorded in the audit trail."""
    job = job_queries.get(session, project, job_id)
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
    cutoffs = _cutoffs(session, retention, now)
    job_ids: list[str] = []
    for project, cutoff in cutoffs.items():
        room = limit - len(job_ids)
        if room <= 0:
            break
        # SKIP LOCKED: servers collecting at once on PostgreSQL take different jobs.
        statement = _expired_jobs(project, cutoff).limit(room)
        job_ids.extend(session.exec(statement.with_for_update(skip_locked=True)).all())
    removed = delete_jobs(session, job_ids)
    run_ids: list[int] = []
    if cutoffs:
        run_ids = list(session.exec(_expired_runs(cutoffs).limit(limit)).all())
        if run_ids:
            session.exec(delete(ScheduleRun).where(col(ScheduleRun.id).in_(run_ids)))
    audit_ids: list[int] = []
    if retention.audit > 0:
        audit_ids = list(session.exec(_expired_audit(retention, now).limit(limit)).all())
        if audit_ids:
            session.exec(delete(AuditEvent).where(col(AuditEvent.id).in_(audit_ids)))
    removed.schedule_runs, removed.audit_events = len(run_ids), len(audit_ids)
    removed.more = limit in (len(job_ids), len(run_ids), len(audit_ids))
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


def expired(session: Session, retention: Retention, now: datetime) -> Removed:
    """What ``collect`` would delete, counted without deleting anything (a dry run)."""
    cutoffs = _cutoffs(session, retention, now)
    jobs = [_expired_jobs(project, cutoff) for project, cutoff in cutoffs.items()]
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
    return counted
