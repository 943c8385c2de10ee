"""``/v1/projects/{project}/queues``: create, list, read, change and delete queues."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from sqlmodel import Session

from orchestrator.api.deps import ProjectActorDep, ServicesDep, authorize_project
from orchestrator.api.errors import responses
from orchestrator.schemas.common import Page
from orchestrator.schemas.queues import QueueCreate, QueuePublic, QueueUpdate
from orchestrator.services import projects, queues
from orchestrator.storage.models import Queue
from orchestrator.wakeups.topics import WORK

router = APIRouter(
    prefix="/v1/projects/{project}/queues",
    tags=["queues"],
    dependencies=[Depends(authorize_project)],
    responses=responses(401, 403, 404),
)


def _public(session: Session, queue: Queue) -> QueuePublic:
    waiting, running = queues.counts(session, queue.project).get(queue.name, (0, 0))
    return QueuePublic.from_row(queue, waiting=waiting, running=running)


@router.post("", status_code=201, response_model=QueuePublic, responses=responses(400, 409, 413))
def create_queue(
    project: str,
    body: QueueCreate,
    services: ServicesDep,
    actor: ProjectActorDep,
    response: Response,
) -> QueuePublic:
    """Create a queue."""
    with services.db.transaction() as session:
        queue = queues.create(session, project, body, actor, caps=services.caps)
        public = _public(session, queue)
    response.headers["Location"] = f"/v1/projects/{project}/queues/{queue.name}"
    return public


@router.get("", response_model=Page[QueuePublic])
def list_queues(project: str, services: ServicesDep) -> Page[QueuePublic]:
    """The project's queues, highest priority first, with their lengths."""
    with services.db.read() as session:
        projects.get(session, project)
        counts = queues.counts(session, project)
        rows = queues.list_all(session, project)
    items = [
        QueuePublic.from_row(
            q, waiting=counts.get(q.name, (0, 0))[0], running=counts.get(q.name, (0, 0))[1]
        )
        for q in rows
    ]
    return Page(items=items)


@router.get("/{name}", response_model=QueuePublic)
def get_queue(project: str, name: str, services: ServicesDep) -> QueuePublic:
    """One queue with its length."""
    with services.db.read() as session:
        projects.get(session, project)
        return _public(session, queues.get(session, project, name))


@router.patch("/{name}", response_model=QueuePublic, responses=responses(400, 413))
def update_queue(
    project: str, name: str, body: QueueUpdate, services: ServicesDep, actor: ProjectActorDep
) -> QueuePublic:
    """Change the given fields; resuming a paused queue wakes the runners."""
    with services.db.transaction() as session:
        projects.get(session, project)
        queue = queues.update(session, project, name, body, actor)
        public = _public(session, queue)
    services.hub.publish(WORK)
    return public


@router.delete("/{name}", status_code=204, responses=responses(409))
def delete_queue(
    project: str, name: str, services: ServicesDep, actor: ProjectActorDep
) -> Response:
    """Delete a queue with no waiting or running jobs."""
    with services.db.transaction() as session:
        projects.get(session, project)
        queues.delete(session, project, name, actor)
    return Response(status_code=204)
