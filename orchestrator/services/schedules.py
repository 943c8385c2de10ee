"""The schedule service: create, read, change, pause, resume and delete schedules (how the API
shows them, their runs and next fire times: ``schedule_queries``).

A schedule's target is stored without its secret values (their names stay): the ``secret_env``
of a job target and the ``secret_headers`` of an HTTP target are encrypted in
``Schedule.secret_ciphertext``. Firing is the scheduler's (``scheduler.py``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.errors import Conflict, InvalidRequest, NotFound, OrchestratorError
from orchestrator.rules import cron
from orchestrator.rules.fields import storable
from orchestrator.rules.input_limits import InputLimits
from orchestrator.rules.policy import ContainerPolicy
from orchestrator.rules.project_caps import Capped, ProjectCaps
from orchestrator.rules.retry import DEFAULT_RETRY_DELAYS
from orchestrator.rules.schedule_states import (
    FINISHED,
    ScheduleRunStatus,
    ScheduleStatus,
    can_run_transition,
    can_schedule_transition,
)
from orchestrator.schemas.jobs import JobCreate
from orchestrator.schemas.schedules import (
    HttpTarget,
    ScheduleCreate,
    ScheduleTarget,
    ScheduleUpdate,
)
from orchestrator.services import audit, jobs, projects, webhooks
from orchestrator.services.audit import Actor
from orchestrator.storage.db import after_commit, serialize
from orchestrator.storage.models import Schedule, ScheduleRun, utcnow
from orchestrator.storage.secret_box import SecretBox
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.topics import SCHEDULES

JOB, HTTP = "job", "http"


@dataclass(frozen=True)
class Checks:
    """What a job target is validated against, as a submission would be."""

    box: SecretBox
    policy: ContainerPolicy
    limits: InputLimits


def set_status(session: Session, schedule: Schedule, status: ScheduleStatus) -> None:
    """Move ``schedule`` to ``status``: the one writer of ``Schedule.status`` once the schedule
    is stored. Conflict when the schedule's life cycle does not allow the move."""
    if schedule.status != status and not can_schedule_transition(schedule.status, status):
        raise Conflict(
            f"schedule {schedule.id} cannot go from {schedule.status} to {status}", field="status"
        )
    schedule.status = status
    session.add(schedule)


def set_run_status(session: Session, run: ScheduleRun, status: ScheduleRunStatus) -> None:
    """Move ``run`` to ``status``: the one writer of ``ScheduleRun.status`` once the run is
    made. Conflict when a run's life cycle does not allow the move."""
    if run.status != status and not can_run_transition(run.status, status):
        raise Conflict(
            f"schedule run {run.id} cannot go from '{run.status}' to '{status}'", field="status"
        )
    run.status = status
    session.add(run)


def zone_of(schedule: Schedule) -> ZoneInfo:
    """The schedule's time zone (validated when it was stored)."""
    return cron.parse_timezone(schedule.timezone)


def _prefixed(exc: OrchestratorError, prefix: str) -> OrchestratorError:
    field = f"{prefix}.{exc.field}" if exc.field else prefix
    return type(exc)(f"{prefix}: {exc.message}", field=field)


def _store_job_target(
    session: Session, project: str, target: JobCreate, checks: Checks
) -> tuple[dict[str, Any], dict[str, str]]:
    if target.schedule_at is not None:
        raise InvalidRequest(
            "target.job.schedule_at: not allowed in a schedule (the schedule says when)",
            field="target.job.schedule_at",
        )
    # A dry run of the submission, rolled back: the target is refused now, not at every tick.
    nested = session.begin_nested()
    try:
        jobs.submit(
            session, checks.box, None, project, target, policy=checks.policy, limits=checks.limits
        )
    except OrchestratorError as exc:
        raise _prefixed(exc, "target.job") from None
    finally:
        nested.rollback()
    stored = target.model_dump(mode="json", exclude_unset=True, exclude={"secret_env"})
    stored["secret_env"] = sorted(target.secret_env)
    return stored, dict(target.secret_env)


def _store_http_target(
    target: HttpTarget, limits: InputLimits
) -> tuple[dict[str, Any], dict[str, str]]:
    if target.url.username or target.url.password:
        # A URL is shown as it is stored; credentials belong where they are kept secret.
        raise InvalidRequest(
            "target.http.url: must not carry credentials; send them in secret_headers "
            "(e.g. Authorization)",
            field="target.http.url",
        )
    # Secret headers are masked in the responses and errors kept, as secret env is.
    limits.check_secrets("target.http.secret_headers", target.secret_headers)
    headers = dict(target.headers)
    both = {name.lower() for name in headers} & {name.lower() for name in target.secret_headers}
    if both:
        name = sorted(both)[0]
        raise InvalidRequest(
            f"target.http.headers.{name}: also given in secret_headers; give it in one of them",
            field=f"target.http.headers.{name}",
        )
    body = target.body
    if body is not None and not isinstance(body, str):
        body = json.dumps(body, separators=(",", ":"))
        if not any(name.lower() == "content-type" for name in [*headers, *target.secret_headers]):
            headers["Content-Type"] = "application/json"
    stored = {
        "method": target.method,
        "url": str(target.url),
        "headers": headers,
        "secret_headers": sorted(target.secret_headers),
        "body": body,
        "timeout": target.timeout,
    }
    return stored, dict(target.secret_headers)


def _apply_target(
    session: Session, schedule: Schedule, target: ScheduleTarget, checks: Checks
) -> None:
    if (target.job is None) == (target.http is None):
        raise InvalidRequest("target: give exactly one of 'job' and 'http'", field="target")
    if target.job is not None:
        stored, secrets = _store_job_target(session, schedule.project, target.job, checks)
        schedule.target_kind, schedule.retry_delays = JOB, []
    else:
        assert target.http is not None
        stored, secrets = _store_http_target(target.http, checks.limits)
        delays = target.http.retry_delays
        schedule.target_kind = HTTP
        schedule.retry_delays = list(DEFAULT_RETRY_DELAYS if delays is None else delays)
    # A job target's webhook URL is stored with ``***`` for its userinfo, kept apart, encrypted.
    webhook, schedule.webhook_auth_ciphertext = webhooks.seal_url(checks.box, stored.get("webhook"))
    if webhook is not None:
        stored["webhook"] = webhook
    schedule.target = stored
    schedule.secret_ciphertext = checks.box.encrypt(secrets) if secrets else None


def _apply_timing(
    schedule: Schedule, expression: str | None, run_at: datetime | None, timezone: str
) -> None:
    zone = cron.parse_timezone(timezone)
    schedule.timezone = timezone
    if expression is not None:
        # cron wins when both are given
        schedule.cron, schedule.run_at = cron.parse_cron(expression), None
    elif run_at is not None:
        if run_at.tzinfo is None:
            # A wall-clock time in the schedule's zone (a skipped one: the end of the gap).
            run_at = cron.wall_to_utc(run_at, zone)
        schedule.cron, schedule.run_at = None, run_at
    else:
        raise InvalidRequest("cron: give a cron expression or a run_at time", field="cron")


def plan_next(schedule: Schedule, now: datetime) -> None:
    """Set ``next_run_at`` from ``now`` on: the next cron instant, or a one-shot's time (at
    once if it has passed: the schedule was just made, changed or resumed)."""
    if schedule.cron is not None:
        schedule.next_run_at = cron.next_fire(schedule.cron, zone_of(schedule), now)
    else:
        assert schedule.run_at is not None
        schedule.next_run_at = max(schedule.run_at, now)


def create(
    session: Session,
    hub: Hub | None,
    project: str,
    request: ScheduleCreate,
    actor: Actor,
    checks: Checks,
    *,
    caps: ProjectCaps,
    now: datetime | None = None,
) -> Schedule:
    """Validate and store a schedule; the scheduler fires it from ``next_run_at`` on.
    LimitReached when the project holds as many schedules (any status) as ``caps`` allow."""
    projects.get(session, project)
    now = now or utcnow()
    # Checked and counted under the lock, so two creates of one name (or at the cap) cannot
    # both pass: the second sees the first's schedule once it has committed.
    serialize(session, f"cap:schedules:{project}")
    if session.exec(
        select(Schedule.id).where(Schedule.project == project, Schedule.name == request.name)
    ).first():
        raise Conflict(f"a schedule named '{request.name}' already exists", field="name")
    count = session.exec(
        select(sa.func.count()).select_from(Schedule).where(Schedule.project == project)
    ).one()
    caps.check(Capped.SCHEDULES, count, f"project '{project}'")
    schedule = Schedule(
        id=str(uuid.uuid4()),
        project=project,
        name=request.name,
        target_kind=JOB,
        overlap=request.overlap,
        on_missed=request.on_missed,
        missed_window=request.missed_window,
        status=ScheduleStatus.PAUSED if request.paused else ScheduleStatus.ACTIVE,
        create_time=now,
        update_time=now,
    )
    _apply_timing(schedule, request.cron, request.run_at, request.timezone)
    _apply_target(session, schedule, request.target, checks)
    plan_next(schedule, now)
    if schedule.next_run_at is None:
        raise InvalidRequest(f"cron: '{schedule.cron}' never fires", field="cron")
    session.add(schedule)
    audit.record(session, actor, "schedule.create", f"schedule/{schedule.name}", project)
    _wake(session, hub)
    return schedule


def _wake(session: Session, hub: Hub | None) -> None:
    if hub is not None:
        after_commit(session, lambda: hub.publish(SCHEDULES))


def get(session: Session, project: str, name: str, *, lock: bool = False) -> Schedule:
    """The schedule named ``name`` in ``project``; NotFound names it."""
    statement = select(Schedule).where(Schedule.project == project, Schedule.name == name)
    if lock:
        statement = statement.with_for_update()
    schedule = session.exec(statement).first() if storable(name) else None
    if schedule is None:
        raise NotFound(f"schedule '{name}' not found in project '{project}'", field="schedule")
    return schedule


def list_all(session: Session, project: str) -> list[Schedule]:
    """The project's schedules by name."""
    statement = select(Schedule).where(Schedule.project == project).order_by(col(Schedule.name))
    return list(session.exec(statement).all())


def update(
    session: Session,
    hub: Hub | None,
    project: str,
    name: str,
    request: ScheduleUpdate,
    actor: Actor,
    checks: Checks,
    now: datetime | None = None,
) -> Schedule:
    """Change the given fields; a change of timing (or a resume) plans the next tick from now."""
    now = now or utcnow()
    schedule = get(session, project, name, lock=True)
    given = request.model_fields_set
    timing = bool(given & {"cron", "run_at", "timezone"})
    if timing:
        expression = request.cron if "cron" in given else schedule.cron
        run_at = request.run_at if "run_at" in given else schedule.run_at
        timezone = request.timezone if request.timezone is not None else schedule.timezone
        _apply_timing(schedule, expression, run_at, timezone)
    if request.target is not None:
        _apply_target(session, schedule, request.target, checks)
        # HTTP runs still to send belong to the old target: they are not sent any more
        # (pending -> replaced, a move the run's life cycle allows).
        session.execute(
            sa.update(ScheduleRun)
            .where(
                col(ScheduleRun.schedule_id) == schedule.id,
                col(ScheduleRun.status) == ScheduleRunStatus.PENDING,
            )
            .values(status=ScheduleRunStatus.REPLACED, next_attempt_at=None, finish_time=now)
        )
    for field in ("overlap", "on_missed", "missed_window"):
        value = getattr(request, field)
        if value is not None:
            setattr(schedule, field, value)
    resumed = False
    if request.paused is not None:
        resumed = not request.paused and schedule.status == ScheduleStatus.PAUSED
        if request.paused:
            set_status(session, schedule, ScheduleStatus.PAUSED)
        elif schedule.status == ScheduleStatus.PAUSED:
            set_status(session, schedule, ScheduleStatus.ACTIVE)
    if timing and schedule.status in FINISHED:
        # A new time for a finished one-shot makes it live again.
        set_status(session, schedule, ScheduleStatus.ACTIVE)
    if timing or resumed:
        plan_next(schedule, now)
        if schedule.next_run_at is None:
            raise InvalidRequest(f"cron: '{schedule.cron}' never fires", field="cron")
    schedule.update_time = now
    session.add(schedule)
    audit.record(
        session,
        actor,
        "schedule.update",
        f"schedule/{schedule.name}",
        project,
        {"fields": sorted(given)},
    )
    _wake(session, hub)
    return schedule


def set_paused(
    session: Session,
    hub: Hub | None,
    project: str,
    name: str,
    paused: bool,
    actor: Actor,
    now: datetime | None = None,
) -> Schedule:
    """Pause (no ticks fire; none are missed) or resume (the next tick from now on)."""
    now = now or utcnow()
    schedule = get(session, project, name, lock=True)
    if paused and schedule.status == ScheduleStatus.ACTIVE:
        set_status(session, schedule, ScheduleStatus.PAUSED)
    elif not paused and schedule.status == ScheduleStatus.PAUSED:
        set_status(session, schedule, ScheduleStatus.ACTIVE)
        plan_next(schedule, now)
    schedule.update_time = now
    session.add(schedule)
    action = "schedule.pause" if paused else "schedule.resume"
    audit.record(session, actor, action, f"schedule/{schedule.name}", project)
    _wake(session, hub)
    return schedule


def delete(session: Session, project: str, name: str, actor: Actor) -> None:
    """Delete the schedule and its run history; jobs it submitted are left as they are."""
    schedule = get(session, project, name, lock=True)
    session.execute(sa.delete(ScheduleRun).where(col(ScheduleRun.schedule_id) == schedule.id))
    session.delete(schedule)
    audit.record(session, actor, "schedule.delete", f"schedule/{schedule.name}", project)


def secrets_of(schedule: Schedule, box: SecretBox) -> dict[str, str]:
    """The target's secret values (secret env or secret headers), decrypted."""
    return box.decrypt(schedule.secret_ciphertext) if schedule.secret_ciphertext else {}


def job_request(schedule: Schedule, box: SecretBox) -> JobCreate:
    """The job submission a tick of a job target makes, secrets included."""
    stored = {key: value for key, value in schedule.target.items() if key != "secret_env"}
    if stored.get("webhook"):
        stored["webhook"] = webhooks.unseal_url(
            box, stored["webhook"], schedule.webhook_auth_ciphertext
        )
    return JobCreate.model_validate({**stored, "secret_env": secrets_of(schedule, box)})
