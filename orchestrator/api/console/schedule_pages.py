"""The console's schedules: each with its next fire times and last outcome, a schedule's
recent runs, and pause, resume and trigger (as the API's ``.../schedules/{name}/pause``,
``/resume`` and ``/trigger``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from orchestrator.api.console.jobs import chosen_project
from orchestrator.api.console.pages import render, see_other
from orchestrator.api.console.session import ConsoleActorDep, FormDep
from orchestrator.api.deps import ServicesDep
from orchestrator.background import scheduler
from orchestrator.services import projects, schedule_queries, schedules
from orchestrator.services.schedules import Checks
from orchestrator.storage.models import utcnow

router = APIRouter(prefix="/ui", include_in_schema=False)

# Fire times shown per schedule in the list, and on a schedule's page; runs on its page.
LIST_PREVIEW = 3
PAGE_PREVIEW = 10
PAGE_RUNS = 25


@router.get("/schedules", response_class=HTMLResponse)
def schedules_page(
    request: Request,
    services: ServicesDep,
    actor: ConsoleActorDep,
    project: Annotated[str, Query(max_length=300)] = "",
) -> Response:
    """A project's schedules with their next fire times."""
    with services.db.read() as session:
        project, seen = chosen_project(session, actor, project)
        rows = [
            (schedule_queries.public(session, row), schedule_queries.preview(row, LIST_PREVIEW))
            for row in schedules.list_all(session, project)
        ]
    context = {"project": project, "projects": seen, "schedules": rows}
    return render(request, "schedules.html", context, actor=actor)


@router.get("/projects/{project}/schedules/{name}", response_class=HTMLResponse)
def schedule_page(
    request: Request, project: str, name: str, services: ServicesDep, actor: ConsoleActorDep
) -> Response:
    """One schedule: its target (secret values as ***), next fire times and recent runs."""
    actor.check(project, write=False)
    with services.db.read() as session:
        projects.get(session, project)
        row = schedules.get(session, project, name)
        context = {
            "project": project,
            "schedule": schedule_queries.public(session, row),
            "preview": schedule_queries.preview(row, PAGE_PREVIEW),
            "runs": schedule_queries.runs(session, row, limit=PAGE_RUNS, before=None),
        }
    return render(request, "schedule.html", context, actor=actor)


def _back(project: str, name: str) -> Response:
    return see_other(f"/ui/projects/{project}/schedules/{name}")


def _set_paused(
    services: ServicesDep, actor: ConsoleActorDep, project: str, name: str, paused: bool
) -> Response:
    actor.check(project, write=True)
    with services.db.transaction() as session:
        projects.get(session, project)
        schedules.set_paused(session, services.hub, project, name, paused, actor)
    return _back(project, name)


@router.post("/projects/{project}/schedules/{name}/pause")
def pause_schedule(
    project: str, name: str, services: ServicesDep, actor: ConsoleActorDep, form: FormDep
) -> Response:
    """Stop firing until resumed."""
    return _set_paused(services, actor, project, name, True)


@router.post("/projects/{project}/schedules/{name}/resume")
def resume_schedule(
    project: str, name: str, services: ServicesDep, actor: ConsoleActorDep, form: FormDep
) -> Response:
    """Fire again from the next tick after now."""
    return _set_paused(services, actor, project, name, False)


@router.post("/projects/{project}/schedules/{name}/trigger")
def trigger_schedule(
    project: str, name: str, services: ServicesDep, actor: ConsoleActorDep, form: FormDep
) -> Response:
    """Run the schedule now, honouring its overlap policy; its page shows the run."""
    actor.check(project, write=True)
    checks = Checks(box=services.box, policy=services.policy, limits=services.limits)
    with services.db.transaction() as session:
        projects.get(session, project)
        schedule = schedules.get(session, project, name, lock=True)
        scheduler.trigger(session, services.hub, schedule, checks, utcnow())
    return _back(project, name)
