"""The scheduler: fires each tick of each schedule exactly once, also with several servers on
one database.

A tick is claimed in the database, never in memory: the schedule row is locked (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL; SQLite has one writer), its run is recorded and ``next_run_at``
moves past now, all in one transaction; ``(schedule_id, tick)`` is unique as well. After
downtime a schedule fires at most once for everything it missed: the latest missed tick runs
if ``on_missed`` is ``run_once`` and it is within ``missed_window``, and the rest is one
``missed`` record, never a burst. The clock is a dependency, so tests drive time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.config import Settings
from orchestrator.errors import DatabaseUnavailable, OrchestratorError
from orchestrator.rules import cron
from orchestrator.rules.roles import Role
from orchestrator.rules.schedule_states import HTTP_UNFINISHED, ScheduleRunStatus, ScheduleStatus
from orchestrator.rules.states import UNFINISHED
from orchestrator.services import jobs
from orchestrator.services.audit import Actor
from orchestrator.services.schedules import (
    JOB,
    Checks,
    job_request,
    set_run_status,
    set_status,
    zone_of,
)
from orchestrator.storage.db import Database, after_commit
from orchestrator.storage.models import Job, Schedule, ScheduleRun, utcnow
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.loop import Loop
from orchestrator.wakeups.topics import HTTP_RUNS, SCHEDULES

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
BATCH = 100  # schedules fired per pass at most; the next pass follows at once


def _actor(schedule: Schedule) -> Actor:
    """Who submits a schedule's jobs, as their events say."""
    return Actor(
        token_id=f"schedule:{schedule.id}",
        name=f"schedule {schedule.name}",
        role=Role.WRITE,
        project=schedule.project,
    )


def _unfinished_jobs(session: Session, schedule: Schedule) -> list[Job]:
    statement = (
        select(Job)
        .join(ScheduleRun, col(ScheduleRun.job_id) == col(Job.id))
        .where(
            ScheduleRun.schedule_id == schedule.id,
            col(Job.status).in_(UNFINISHED),
        )
        .order_by(col(ScheduleRun.id))
    )
    return list(session.exec(statement).all())


def _unfinished_http_runs(session: Session, schedule: Schedule) -> list[ScheduleRun]:
    statement = (
        select(ScheduleRun)
        .where(
            ScheduleRun.schedule_id == schedule.id,
            col(ScheduleRun.status).in_(HTTP_UNFINISHED),
        )
        .order_by(col(ScheduleRun.id))
        .with_for_update()
    )
    return list(session.exec(statement).all())


def _still_going(session: Session, schedule: Schedule) -> tuple[list[Job], list[ScheduleRun]]:
    if schedule.target_kind == JOB:
        return _unfinished_jobs(session, schedule), []
    return [], _unfinished_http_runs(session, schedule)


def fire(
    session: Session,
    hub: Hub | None,
    schedule: Schedule,
    checks: Checks,
    *,
    tick: datetime,
    trigger: str,
    now: datetime,
) -> ScheduleRun:
    """Run ``schedule`` once for ``tick``, honouring ``overlap``; the run is recorded (as
    ``skipped`` when the previous run is still going and overlap is ``skip``)."""
    run = ScheduleRun(
        schedule_id=schedule.id,
        tick=tick,
        trigger=trigger,
        fire_time=now,
        status=ScheduleRunStatus.FIRING,
    )
    going_jobs, going_runs = _still_going(session, schedule)
    previous = [job.id for job in going_jobs] + [f"run {r.id}" for r in going_runs]
    if previous and schedule.overlap == "skip":
        set_run_status(session, run, ScheduleRunStatus.SKIPPED)
        run.finish_time = now
        run.detail = {"still_going": previous}
        schedule.last_outcome = f"skipped: the previous run is still going ({previous[-1]})"
    else:
        if previous and schedule.overlap == "replace":
            _replace(session, hub, going_jobs, going_runs, now)
            run.detail = {"replaced": previous}
        _start(session, hub, schedule, checks, run, now)
    assert run.status != ScheduleRunStatus.FIRING  # every branch above gave it its status
    schedule.last_run_at = now
    schedule.update_time = now
    session.add(schedule)
    session.add(run)
    session.flush()
    return run


def _replace(
    session: Session,
    hub: Hub | None,
    going_jobs: list[Job],
    going_runs: list[ScheduleRun],
    now: datetime,
) -> None:
    for job in going_jobs:
        if not job.cancel_requested:
            jobs.cancel(session, hub, job.project, job.id)
    for previous in going_runs:
        set_run_status(session, previous, ScheduleRunStatus.REPLACED)
        previous.finish_time, previous.next_attempt_at = now, None


def _start(
    session: Session,
    hub: Hub | None,
    schedule: Schedule,
    checks: Checks,
    run: ScheduleRun,
    now: datetime,
) -> None:
    if schedule.target_kind == JOB:
        nested = session.begin_nested()
        try:
            job = jobs.submit(
                session,
                checks.box,
                hub,
                schedule.project,
                job_request(schedule, checks.box),
                policy=checks.policy,
                limits=checks.limits,
                actor=_actor(schedule),
            )
        except OrchestratorError as exc:
            # The definition or the queue went away, the policy changed, a named job still
            # runs...: this run fails, the schedule goes on.
            nested.rollback()
            set_run_status(session, run, ScheduleRunStatus.FAILED)
            run.error, run.finish_time = exc.message, now
            schedule.last_outcome = f"failed: {exc.message}"
            return
        nested.commit()
        set_run_status(session, run, ScheduleRunStatus.SUBMITTED)
        run.job_id = job.id
        schedule.last_outcome = f"job {job.id} submitted"
        return
    set_run_status(session, run, ScheduleRunStatus.PENDING)
    run.next_attempt_at = now
    schedule.last_outcome = "HTTP request pending"
    if hub is not None:
        after_commit(session, lambda: hub.publish(HTTP_RUNS))


def _missed_record(
    schedule: Schedule, span: cron.Span, now: datetime, *, until: datetime | None
) -> ScheduleRun:
    assert span.first is not None
    detail: dict[str, Any] = {
        "count": span.count,
        "count_is_exact": span.complete,
        "first": span.first.isoformat(),
        "last": (until or span.last or span.first).isoformat(),
        "on_missed": schedule.on_missed,
    }
    return ScheduleRun(
        schedule_id=schedule.id,
        tick=span.first,
        trigger="cron" if schedule.cron else "run_at",
        fire_time=now,
        status=ScheduleRunStatus.MISSED,
        finish_time=now,
        detail=detail,
    )


def fire_tick(
    session: Session,
    hub: Hub | None,
    schedule: Schedule,
    checks: Checks,
    now: datetime,
    grace: float,
) -> ScheduleRun | None:
    """Fire the claimed, due ``schedule`` for what came due up to ``now`` and plan its next
    tick: at most one run, and at most one ``missed`` record."""
    assert schedule.next_run_at is not None
    due = schedule.next_run_at
    if schedule.cron is not None:
        span = cron.fires_between(schedule.cron, zone_of(schedule), due, now)
        latest = span.last or due
        upcoming = cron.next_fire(schedule.cron, zone_of(schedule), now)
    else:
        span = cron.Span(count=1, complete=True, first=due, last=due)
        latest, upcoming = due, None
    lateness = (now - latest).total_seconds()
    kind = "cron" if schedule.cron else "run_at"
    if lateness <= grace:
        runs_it, trigger = True, kind
    elif schedule.on_missed == "run_once" and lateness <= schedule.missed_window:
        runs_it, trigger = True, "catch_up"
    else:
        runs_it, trigger = False, kind
    run = None
    if runs_it:
        earlier = cron.Span(
            count=span.count - 1, complete=span.complete, first=span.first, last=None
        )
        if earlier.count > 0:
            session.add(_missed_record(schedule, earlier, now, until=None))
            session.flush()
        run = fire(session, hub, schedule, checks, tick=latest, trigger=trigger, now=now)
    else:
        session.add(_missed_record(schedule, span, now, until=latest))
        schedule.last_outcome = (
            f"missed {span.count if span.complete else f'{span.count}+'} tick(s) up to "
            f"{latest.isoformat()} (on_missed {schedule.on_missed}, "
            f"missed_window {schedule.missed_window:g} s)"
        )
    schedule.next_run_at = upcoming
    if upcoming is None:
        # A one-shot has had its turn: done once its run is (an HTTP run finishes later).
        http_pending = run is not None and run.status == ScheduleRunStatus.PENDING
        if not http_pending:
            failed = run is None or run.status == ScheduleRunStatus.FAILED
            set_status(
                session, schedule, ScheduleStatus.FAILED if failed else ScheduleStatus.COMPLETED
            )
    schedule.update_time = now
    session.add(schedule)
    return run


class Scheduler:
    """Fires due schedules in a background thread; ``fire_due`` is one pass."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        hub: Hub,
        checks: Checks,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.hub = hub
        self.checks = checks
        self.clock = clock
        self.loop = Loop(
            name="scheduler",
            hub=hub,
            run_once=self.fire_due,
            next_wait=self.seconds_to_next,
            failure_wait=lambda: self.settings.poll_interval,
            failed="scheduler pass failed",
            action="scheduler_failed",
            topics=lambda: (SCHEDULES,),
        )

    def fire_due(self) -> int:
        """Fire every schedule due now, each in its own transaction; how many were fired."""
        fired = 0
        while fired < BATCH:
            now = self.clock()
            schedule_id = None
            try:
                with self.db.transaction() as session:
                    schedule = session.exec(
                        select(Schedule)
                        .where(
                            Schedule.status == ScheduleStatus.ACTIVE,
                            col(Schedule.next_run_at) <= now,
                        )
                        .order_by(col(Schedule.next_run_at))
                        .limit(1)
                        .with_for_update(skip_locked=True)
                    ).first()
                    if schedule is None:
                        return fired
                    schedule_id = schedule.id
                    grace = self.settings.schedule_grace
                    fire_tick(session, self.hub, schedule, self.checks, now, grace)
            except (sa.exc.SQLAlchemyError, DatabaseUnavailable):
                # The database's trouble, not the schedule's: it stays due for the next pass.
                raise
            except Exception as exc:  # rolled back; set the schedule aside, go on with others
                if schedule_id is None:
                    raise
                self._set_aside(schedule_id, exc)
            fired += 1
        return fired

    def _set_aside(self, schedule_id: str, failure: Exception) -> None:
        # A schedule that cannot be fired must not hold up the others behind it forever.
        logger.error(
            "schedule %s could not be fired: %s",
            schedule_id,
            failure,
            exc_info=failure,
            extra={"action": "schedule_failed"},
        )
        with self.db.transaction() as session:
            schedule = session.get(Schedule, schedule_id)
            if schedule is not None:
                set_status(session, schedule, ScheduleStatus.FAILED)
                schedule.last_outcome = f"failed: internal error ({type(failure).__name__})"
                schedule.update_time = self.clock()
                session.add(schedule)

    def seconds_to_next(self) -> float:
        """Seconds until the earliest active schedule is due (the poll interval at most)."""
        with self.db.read() as session:
            earliest = session.exec(
                select(sa.func.min(Schedule.next_run_at)).where(
                    Schedule.status == ScheduleStatus.ACTIVE
                )
            ).one()
        limit = self.settings.poll_interval
        if earliest is None:
            return limit
        return max(0.0, min(limit, (earliest - self.clock()).total_seconds()))

    def start(self) -> None:
        """Start the loop thread."""
        self.loop.start()

    def stop(self) -> None:
        """Stop the loop (a pass under way finishes its transaction)."""
        self.loop.stop(timeout=30)


def trigger(
    session: Session, hub: Hub | None, schedule: Schedule, checks: Checks, now: datetime
) -> ScheduleRun:
    """Run ``schedule`` now (whatever its status), honouring ``overlap``."""
    return fire(session, hub, schedule, checks, tick=now, trigger="manual", now=now)
