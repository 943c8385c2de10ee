"""Schedules as the API shows them: secret values masked, a job target's outcome read from its
last job, the runs of a schedule (newest first) and its next fire times."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.rules import cron
from orchestrator.rules.masking import MASK
from orchestrator.rules.schedule_states import ScheduleStatus
from orchestrator.schemas.schedules import FireTime, SchedulePublic, ScheduleRunPublic
from orchestrator.services.schedules import JOB, zone_of
from orchestrator.storage.models import Job, Schedule, ScheduleRun, utcnow


def public_target(schedule: Schedule) -> dict[str, Any]:
    """The target as the API shows it: secret values masked, names kept."""
    target = dict(schedule.target)
    if schedule.target_kind == JOB:
        target["secret_env"] = dict.fromkeys(target.get("secret_env", []), MASK)
        return {"job": target}
    target["secret_headers"] = dict.fromkeys(target.get("secret_headers", []), MASK)
    target["retry_delays"] = schedule.retry_delays
    return {"http": target}


def _last_job_outcome(session: Session, schedule: Schedule) -> str | None:
    run = session.exec(
        select(ScheduleRun)
        .where(ScheduleRun.schedule_id == schedule.id)
        .order_by(sa.desc(col(ScheduleRun.id)))
        .limit(1)
    ).first()
    if run is None or run.job_id is None:
        return schedule.last_outcome
    job = session.exec(select(Job).where(Job.id == run.job_id)).first()
    if job is None:
        return schedule.last_outcome
    outcome = f"job {job.id} {job.status}"
    return f"{outcome}: {job.error}" if job.error else outcome


def public(session: Session, schedule: Schedule) -> SchedulePublic:
    """The schedule as the API shows it (a job target's outcome is its last job's status)."""
    outcome = schedule.last_outcome
    if schedule.target_kind == JOB:
        outcome = _last_job_outcome(session, schedule)
    return SchedulePublic(
        id=schedule.id,
        project=schedule.project,
        name=schedule.name,
        cron=schedule.cron,
        run_at=schedule.run_at,
        timezone=schedule.timezone,
        target=public_target(schedule),
        overlap=schedule.overlap,  # type: ignore[arg-type]
        on_missed=schedule.on_missed,  # type: ignore[arg-type]
        missed_window=schedule.missed_window,
        paused=schedule.status == ScheduleStatus.PAUSED,
        status=schedule.status,  # type: ignore[arg-type]
        next_run_at=schedule.next_run_at if schedule.status == ScheduleStatus.ACTIVE else None,
        last_run_at=schedule.last_run_at,
        last_outcome=outcome,
        create_time=schedule.create_time,
        update_time=schedule.update_time,
    )


def runs(
    session: Session, schedule: Schedule, limit: int = 100, before: int | None = None
) -> list[ScheduleRunPublic]:
    """The schedule's runs, newest first; a job run's status is its job's."""
    statement = select(ScheduleRun).where(ScheduleRun.schedule_id == schedule.id)
    if before is not None:
        statement = statement.where(col(ScheduleRun.id) < before)
    rows = session.exec(statement.order_by(sa.desc(col(ScheduleRun.id))).limit(limit)).all()
    job_ids = [row.job_id for row in rows if row.job_id]
    statuses = {}
    if job_ids:
        found = session.exec(select(Job.id, Job.status).where(col(Job.id).in_(job_ids))).all()
        statuses = {job_id: str(status) for job_id, status in found}
    return [
        ScheduleRunPublic(
            id=row.id or 0,
            schedule=schedule.name,
            tick=row.tick,
            trigger=row.trigger,
            fire_time=row.fire_time,
            status=statuses.get(row.job_id, row.status) if row.job_id else row.status,
            job_id=row.job_id,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            status_code=row.status_code,
            duration_ms=row.duration_ms,
            response_body=row.response_body,
            error=row.error,
            attempt_log=row.attempt_log,
            detail=row.detail,
            finish_time=row.finish_time,
        )
        for row in rows
    ]


def preview(schedule: Schedule, count: int, now: datetime | None = None) -> list[FireTime]:
    """The next ``count`` fire times from now (a one-shot: its time, if still to come)."""
    now = now or utcnow()
    zone = zone_of(schedule)
    if schedule.cron is not None:
        times = cron.upcoming(schedule.cron, zone, now, count)
    elif (
        schedule.status in (ScheduleStatus.ACTIVE, ScheduleStatus.PAUSED)
        and schedule.next_run_at is not None
    ):
        times = [schedule.next_run_at]
    else:
        times = []
    return [FireTime(local=t.astimezone(zone), utc=t) for t in times]
