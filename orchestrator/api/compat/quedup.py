"""Quedup's drop-in API under ``/jobs``: HTTP jobs (one-shot or cron) as schedules with HTTP
targets in the ``default`` project, in Quedup's fields and its ``{"error": ...}`` error shape.

A Quedup job is a schedule named ``q-<hex>`` (its id is ``job_<hex>``) whose target keeps the
Quedup name under ``quedup_name`` (the HTTP executor reads only the request's keys). Retries
follow the schedules' default ladder, which is Quedup's.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError as PydanticValidationError
from sqlmodel import Session

from orchestrator.api.compat.errors import CompatRoute
from orchestrator.api.deps import ActorDep, ServicesDep
from orchestrator.api.error_shapes import QUEDUP
from orchestrator.api.errors import ERROR_DESCRIPTIONS, status_for
from orchestrator.api.idempotency import IdempotencyKeyDep, answer_of, create_once
from orchestrator.errors import Conflict, InvalidRequest, NotFound, OrchestratorError
from orchestrator.process import Services
from orchestrator.rules.masking import MASK
from orchestrator.rules.schedule_states import ScheduleStatus
from orchestrator.schemas.quedup import (
    QuedupError,
    QuedupJob,
    QuedupJobCreate,
    QuedupJobUpdate,
    QuedupRun,
)
from orchestrator.schemas.schedules import (
    HttpTarget,
    ScheduleCreate,
    ScheduleTarget,
    ScheduleUpdate,
)
from orchestrator.services import outbound, projects, schedule_queries, schedules
from orchestrator.services.idempotency import Answer, Scope
from orchestrator.services.schedules import Checks
from orchestrator.storage.models import Schedule

PROJECT = "default"  # the project Quedup jobs live in
NAME_KEY = "quedup_name"  # where a schedule's target keeps the job's Quedup name
# Headers that carry credentials: stored encrypted (as secret headers) and shown as ***.
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_ID = re.compile(r"^job_([0-9a-f]{32})$")
# Words of the native errors, as Quedup's fields name them.
_FIELD_WORDS = (
    ("target.http.", ""),
    ("cron:", "schedule:"),
    ("in secret_headers", "in headers"),
    ("secret_headers.", "headers."),
    ("Value error, ", ""),
)


def _quedup_words(message: str) -> str:
    for native, quedup in _FIELD_WORDS:
        message = message.replace(native, quedup)
    return message


class QuedupRoute(CompatRoute):
    """A route answering errors in Quedup's shape, ``{"error": "..."}``, bad input with 400."""

    shape = QUEDUP

    def refusal_text(self, exc: PydanticValidationError) -> str:
        """The native refusal, in Quedup's field names."""
        return _quedup_words(super().refusal_text(exc))

    def domain_error(self, exc: OrchestratorError) -> tuple[int, str]:
        """The native refusal, in Quedup's field names."""
        return status_for(exc), _quedup_words(exc.message)


def _quedup_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": QuedupError, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


router = APIRouter(
    prefix=QUEDUP.prefix,
    tags=["compat: Quedup"],
    route_class=QuedupRoute,
    responses=_quedup_responses(401, 403, 404, 413),
)


def _checks(services: Services) -> Checks:
    return Checks(box=services.box, policy=services.policy, limits=services.limits)


def _schedule_name(job_id: str) -> str:
    match = _ID.match(job_id)
    if match is None:
        raise NotFound(f"job '{job_id[:80]}' not found")
    return f"q-{match.group(1)}"


def _is_quedup(schedule: Schedule) -> bool:
    return schedule.target_kind == schedules.HTTP and NAME_KEY in schedule.target


def _get(session: Session, job_id: str, *, lock: bool = False) -> Schedule:
    missing = NotFound(f"job '{job_id[:80]}' not found")
    try:
        schedule = schedules.get(session, PROJECT, _schedule_name(job_id), lock=lock)
    except NotFound:
        raise missing from None
    if not _is_quedup(schedule):
        raise missing
    return schedule


def _jobs(session: Session) -> list[Schedule]:
    rows = [row for row in schedules.list_all(session, PROJECT) if _is_quedup(row)]
    return sorted(rows, key=lambda row: (row.create_time, row.id))


def _check_unique(session: Session, name: str, own_id: str | None = None) -> None:
    if any(row.target[NAME_KEY] == name and row.id != own_id for row in _jobs(session)):
        raise Conflict(f"name: a job named '{name}' already exists")


def _target(method: str, url: str, body: str | None, headers: dict[str, str]) -> ScheduleTarget:
    """The native HTTP target; credential headers go to the encrypted secret headers."""
    plain = {k: v for k, v in headers.items() if k.lower() not in SECRET_HEADERS}
    secret = {k: v for k, v in headers.items() if k.lower() in SECRET_HEADERS}
    http = HttpTarget.model_validate(
        {"method": method, "url": url, "body": body, "headers": plain, "secret_headers": secret}
    )
    return ScheduleTarget(http=http)


def _keep_name(schedule: Schedule, name: str) -> None:
    # A new dict, so the JSON column sees the change.
    schedule.target = {**schedule.target, NAME_KEY: name}


def public(schedule: Schedule) -> QuedupJob:
    """The schedule as Quedup shows a job."""
    target = schedule.target
    headers = {**target.get("headers", {}), **dict.fromkeys(target.get("secret_headers", []), MASK)}
    return QuedupJob(
        id=f"job_{schedule.name.removeprefix('q-')}",
        name=target[NAME_KEY],
        method=target["method"],
        url=target["url"],
        body=target.get("body") or "",
        headers=headers,
        schedule=schedule.cron,
        next_run_at=schedule.next_run_at if schedule.status == ScheduleStatus.ACTIVE else None,
        status=schedule.status,  # type: ignore[arg-type]
    )


@router.post("", response_model=QuedupJob, responses=_quedup_responses(400, 409, 415, 422))
def create_job(
    body: QuedupJobCreate,
    services: ServicesDep,
    actor: ActorDep,
    request: Request,
    idempotency_key: IdempotencyKeyDep,
) -> Response:
    """Create a job: an HTTP request sent at ``run_at``, or at each tick of the cron
    ``schedule`` (UTC; it wins over ``run_at``). With an ``Idempotency-Key``, the same request
    sent again gets the first answer again."""
    actor.check(PROJECT, write=True)
    if body.schedule is None and body.run_at is None:
        raise InvalidRequest("schedule: give a cron expression or a run_at time")
    native = ScheduleCreate(
        name=f"q-{uuid.uuid4().hex}",
        cron=body.schedule,
        run_at=None if body.schedule is not None else body.run_at,
        target=_target(body.method, str(body.url), body.body, body.headers or {}),
    )
    outbound.check_url(services.outbound, str(body.url), "url")

    def create(session: Session) -> Answer:
        projects.get(session, PROJECT)
        _check_unique(session, body.name)
        schedule = schedules.create(
            session, services.hub, PROJECT, native, actor, _checks(services), caps=services.caps
        )
        _keep_name(schedule, body.name)
        # Its secret headers are shown as ***: the kept answer holds no secret either.
        return answer_of(200, public(schedule))

    return create_once(
        services, request, idempotency_key, Scope(PROJECT, "quedup.jobs"), body, create
    )


@router.get("", response_model=list[QuedupJob])
def list_jobs(services: ServicesDep, actor: ActorDep) -> list[QuedupJob]:
    """Every job, oldest first (a JSON array)."""
    actor.check(PROJECT, write=False)
    with services.db.read() as session:
        return [public(row) for row in _jobs(session)]


@router.get("/{job_id}", response_model=QuedupJob)
def get_job(job_id: str, services: ServicesDep, actor: ActorDep) -> QuedupJob:
    """One job."""
    actor.check(PROJECT, write=False)
    with services.db.read() as session:
        return public(_get(session, job_id))


def _update_request(
    schedule: Schedule, body: QuedupJobUpdate, services: Services
) -> ScheduleUpdate:
    given = body.model_fields_set
    fields: dict[str, Any] = {}
    if "schedule" in given:
        fields["cron"] = body.schedule
    if "run_at" in given:
        fields["run_at"] = body.run_at
    if given & {"method", "url", "body", "headers"}:
        # A target is replaced whole: what is not given is kept, secret headers included.
        target = schedule.target
        headers = {**target.get("headers", {}), **schedules.secrets_of(schedule, services.box)}
        fields["target"] = _target(
            body.method if "method" in given and body.method else target["method"],
            str(body.url) if "url" in given and body.url else target["url"],
            body.body if "body" in given else target.get("body"),
            (body.headers or {}) if "headers" in given else headers,
        )
    if body.status is not None:
        fields["paused"] = body.status == ScheduleStatus.PAUSED
    return ScheduleUpdate(**fields)


@router.patch("/{job_id}", response_model=QuedupJob, responses=_quedup_responses(400, 409, 415))
def update_job(
    job_id: str, body: QuedupJobUpdate, services: ServicesDep, actor: ActorDep
) -> QuedupJob:
    """Change the given fields; ``status: "paused"`` pauses the job, ``"active"`` resumes it."""
    actor.check(PROJECT, write=True)
    if "method" in body.model_fields_set and body.method is None:
        raise InvalidRequest("method: must not be null")
    if "url" in body.model_fields_set and body.url is None:
        raise InvalidRequest("url: must not be null")
    if body.url is not None:
        outbound.check_url(services.outbound, str(body.url), "url")
    with services.db.transaction() as session:
        schedule = _get(session, job_id, lock=True)
        name = body.name if body.name is not None else schedule.target[NAME_KEY]
        _check_unique(session, name, own_id=schedule.id)
        request = _update_request(schedule, body, services)
        schedule = schedules.update(
            session, services.hub, PROJECT, schedule.name, request, actor, _checks(services)
        )
        _keep_name(schedule, name)
        return public(schedule)


@router.delete("/{job_id}", response_model=QuedupJob)
def delete_job(job_id: str, services: ServicesDep, actor: ActorDep) -> QuedupJob:
    """Delete a job and its runs; the deleted job is returned."""
    actor.check(PROJECT, write=True)
    with services.db.transaction() as session:
        schedule = _get(session, job_id, lock=True)
        gone = public(schedule)
        schedules.delete(session, PROJECT, schedule.name, actor)
        return gone


@router.get("/{job_id}/runs", response_model=list[QuedupRun])
def list_runs(job_id: str, services: ServicesDep, actor: ActorDep) -> list[QuedupRun]:
    """The job's attempts, newest first (a JSON array): each one's time, response status,
    duration and attempt number (the latest 100 runs)."""
    actor.check(PROJECT, write=False)
    with services.db.read() as session:
        schedule = _get(session, job_id)
        history = schedule_queries.runs(session, schedule, limit=100)
    return [
        QuedupRun(
            time=entry["time"],
            status=entry.get("status_code"),
            duration_ms=entry.get("duration_ms"),
            attempt=entry["attempt"],
            error=entry.get("error"),
        )
        for run in history
        for entry in reversed(run.attempt_log)
    ]
