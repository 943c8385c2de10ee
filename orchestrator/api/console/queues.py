"""The console's queues: lengths, concurrency, priority, pause/resume (as ``PATCH
.../queues/{name}`` with ``paused``), and a chart of each one's last hour (its samples)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from orchestrator.api.console.jobs import chosen_project
from orchestrator.api.console.pages import render, see_other
from orchestrator.api.console.session import ConsoleActorDep, FormDep
from orchestrator.api.deps import ServicesDep
from orchestrator.schemas.queues import QueuePublic, QueueUpdate
from orchestrator.services import projects, queue_samples, queues
from orchestrator.storage.models import utcnow
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


@router.get("/queues/samples")
def queue_samples_data(
    services: ServicesDep,
    actor: ConsoleActorDep,
    project: Annotated[str, Query(max_length=300)] = "",
) -> Response:
    """The queues' samples of the last hour as the chart takes them: the hour's bounds and per
    queue the minutes (seconds since the epoch), the jobs waiting at each and ended in each."""
    now = utcnow()
    with services.db.read() as session:
        project, _ = chosen_project(session, actor, project)
        found = queue_samples.last_hour(session, project, now)
    return JSONResponse(
        {
            # The hour shown, in seconds since the epoch: a chart's x axis whatever it holds.
            "start": int((queue_samples.minute_of(now) - queue_samples.SHOWN).timestamp()),
            "end": int(queue_samples.minute_of(now).timestamp()) + 60,
            "queues": {
                name: {
                    "minutes": [int(row.minute.timestamp()) for row in rows],
                    "waiting": [row.waiting for row in rows],
                    "ended": [row.ended for row in rows],
                }
                for name, rows in found.items()
            },
        },
        headers={"Cache-Control": "no-store"},
    )


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
