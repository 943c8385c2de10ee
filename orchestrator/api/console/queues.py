"""The console's queues: lengths, concurrency, priority, and pause/resume (as ``PATCH
.../queues/{name}`` with ``paused``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from orchestrator.api.console.jobs import chosen_project
from orchestrator.api.console.pages import render, see_other
from orchestrator.api.console.session import ConsoleActorDep, FormDep
from orchestrator.api.deps import ServicesDep
from orchestrator.schemas.queues import QueuePublic, QueueUpdate
from orchestrator.services import projects, queues
from orchestrator.wakeups.topics import WORK

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("/queues", response_class=HTMLResponse)
def queues_page(
    request: Request,
    services: ServicesDep,
    actor: ConsoleActorDep,
    project: Annotated[str, Query(max_length=300)] = "",
) -> Response:
    """A project's queues, highest priority first, with what waits and runs in each."""
    with services.db.read() as session:
        project, seen = chosen_project(session, actor, project)
        counts = queues.counts(session, project)
        rows = [
            QueuePublic.from_row(
                queue,
                waiting=counts.get(queue.name, (0, 0))[0],
                running=counts.get(queue.name, (0, 0))[1],
            )
            for queue in queues.list_all(session, project)
        ]
    context = {"project": project, "projects": seen, "queues": rows}
    return render(request, "queues.html", context, actor=actor)


def _set_paused(
    services: ServicesDep, actor: ConsoleActorDep, project: str, name: str, paused: bool
) -> Response:
    actor.check(project, write=True)
    with services.db.transaction() as session:
        projects.get(session, project)
        queues.update(session, project, name, QueueUpdate(paused=paused), actor)
    # As the API's PATCH does: a resumed queue's jobs may start now.
    services.hub.publish(WORK)
    return see_other(f"/ui/queues?project={project}")


@router.post("/projects/{project}/queues/{name}/pause")
def pause_queue(
    project: str, name: str, services: ServicesDep, actor: ConsoleActorDep, form: FormDep
) -> Response:
    """Pause the queue: its jobs wait until it is resumed (running ones go on)."""
    return _set_paused(services, actor, project, name, True)


@router.post("/projects/{project}/queues/{name}/resume")
def resume_queue(
    project: str, name: str, services: ServicesDep, actor: ConsoleActorDep, form: FormDep
) -> Response:
    """Resume the queue: its waiting jobs may start."""
    return _set_paused(services, actor, project, name, False)
