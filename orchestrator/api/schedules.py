"""``/v1/projects/{project}/schedules``: cron and one-shot schedules of jobs and HTTP requests,
their runs and their next fire times."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlmodel import Session

from orchestrator.api.deps import ProjectActorDep, ServicesDep, authorize_project
from orchestrator.api.errors import responses
from orchestrator.api.idempotency import IdempotencyKeyDep, answer_of, create_once
from orchestrator.background import scheduler
from orchestrator.process import Services
from orchestrator.schemas.common import Page
from orchestrator.schemas.schedules import (
    ScheduleCreate,
    SchedulePreview,
    SchedulePublic,
    ScheduleRunPublic,
    ScheduleUpdate,
)
from orchestrator.services import outbound, projects, schedule_queries, schedules
from orchestrator.services.idempotency import Answer, Scope
from orchestrator.services.schedules import Checks
from orchestrator.storage.models import utcnow

router = APIRouter(
    prefix="/v1/projects/{project}/schedules",
    tags=["schedules"],
    dependencies=[Depends(authorize_project)],
    responses=responses(401, 403, 404),
)


def _checks(services: Services) -> Checks:
    return Checks(box=services.box, policy=services.policy, limits=services.limits)


@router.post(
    "", status_code=201, response_model=SchedulePublic, responses=responses(400, 409, 413, 422)
)
def create_schedule(
    project: str,
    body: ScheduleCreate,
    services: ServicesDep,
    actor: ProjectActorDep,
    request: Request,
    idempotency_key: IdempotencyKeyDep,
) -> Response:
    """Create a schedule: a ``cron`` expression (in ``timezone``) or a one-shot ``run_at``,
    whose target is a job submission or an HTTP request. With an ``Idempotency-Key``, the same
    request sent again gets the first answer again."""
    outbound.check_schedule_target(services.outbound, body.target)

    def create(session: Session) -> Answer:
        schedule = schedules.create(
            session, services.hub, project, body, actor, _checks(services), caps=services.caps
        )
        location = f"/v1/projects/{project}/schedules/{schedule.name}"
        return answer_of(201, schedule_queries.public(session, schedule), location=location)

    scope = Scope(project, "schedules")
    return create_once(services, request, idempotency_key, scope, body, create)


@router.get("", response_model=Page[SchedulePublic])
def list_schedules(project: str, services: ServicesDep) -> Page[SchedulePublic]:
    """The project's schedules by name."""
    with services.db.read() as session:
        projects.get(session, project)
        rows = schedules.list_all(session, project)
        return Page(items=[schedule_queries.public(session, row) for row in rows])


@router.get("/{name}", response_model=SchedulePublic)
def get_schedule(project: str, name: str, services: ServicesDep) -> SchedulePublic:
    """One schedule, with its next run and its last outcome."""
    with services.db.read() as session:
        projects.get(session, project)
        return schedule_queries.public(session, schedules.get(session, project, name))


@router.patch("/{name}", response_model=SchedulePublic, responses=responses(400, 413, 422))
def update_schedule(
    project: str, name: str, body: ScheduleUpdate, services: ServicesDep, actor: ProjectActorDep
) -> SchedulePublic:
    """Change the given fields (a new ``target`` replaces the old one whole)."""
    outbound.check_schedule_target(services.outbound, body.target)
    with services.db.transaction() as session:
        projects.get(session, project)
        schedule = schedules.update(
            session, services.hub, project, name, body, actor, _checks(services)
        )
        return schedule_queries.public(session, schedule)


@router.delete("/{name}", status_code=204)
def delete_schedule(
    project: str, name: str, services: ServicesDep, actor: ProjectActorDep
) -> Response:
    """Delete a schedule and its run history (jobs it submitted stay)."""
    with services.db.transaction() as session:
        projects.get(session, project)
        schedules.delete(session, project, name, actor)
    return Response(status_code=204)


def _set_paused(
    project: str, name: str, paused: bool, services: Services, actor: ProjectActorDep
) -> SchedulePublic:
    with services.db.transaction() as session:
        projects.get(session, project)
        schedule = schedules.set_paused(session, services.hub, project, name, paused, actor)
        return schedule_queries.public(session, schedule)


@router.post("/{name}/pause", response_model=SchedulePublic)
def pause_schedule(
    project: str, name: str, services: ServicesDep, actor: ProjectActorDep
) -> SchedulePublic:
    """Stop firing; ticks while paused are not missed, they do not exist."""
    return _set_paused(project, name, True, services, actor)


@router.post("/{name}/resume", response_model=SchedulePublic)
def resume_schedule(
    project: str, name: str, services: ServicesDep, actor: ProjectActorDep
) -> SchedulePublic:
    """Fire again from the next tick after now."""
    return _set_paused(project, name, False, services, actor)


@router.post("/{name}/trigger", status_code=202, response_model=ScheduleRunPublic)
def trigger_schedule(
    project: str, name: str, services: ServicesDep, actor: ProjectActorDep
) -> ScheduleRunPublic:
    """Run the schedule now, honouring its ``overlap``; the run is returned (``skipped`` when
    the previous run is still going and overlap is ``skip``)."""
    with services.db.transaction() as session:
        projects.get(session, project)
        schedule = schedules.get(session, project, name, lock=True)
        run = scheduler.trigger(session, services.hub, schedule, _checks(services), utcnow())
        assert run.id is not None
        (public,) = schedule_queries.runs(session, schedule, limit=1, before=run.id + 1)
        return public


@router.get("/{name}/runs", response_model=Page[ScheduleRunPublic], responses=responses(400))
def list_schedule_runs(
    project: str,
    name: str,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> Page[ScheduleRunPublic]:
    """The schedule's history, newest first: each run's time and trigger, its job (and the
    job's status) or its HTTP outcome, and missed or skipped ticks."""
    with services.db.read() as session:
        projects.get(session, project)
        schedule = schedules.get(session, project, name)
        before = int(cursor) if cursor is not None else None
        items = schedule_queries.runs(session, schedule, limit=limit, before=before)
    next_cursor = str(items[-1].id) if len(items) == limit else None
    return Page(items=items, next_cursor=next_cursor)


@router.get("/{name}/preview", response_model=SchedulePreview, responses=responses(400))
def preview_schedule(
    project: str,
    name: str,
    services: ServicesDep,
    count: Annotated[int, Query(ge=1, le=100)] = 10,
) -> SchedulePreview:
    """The next ``count`` fire times, in the schedule's time zone and in UTC."""
    with services.db.read() as session:
        projects.get(session, project)
        schedule = schedules.get(session, project, name)
    return SchedulePreview(
        schedule=schedule.name,
        timezone=schedule.timezone,
        items=schedule_queries.preview(schedule, count),
    )
