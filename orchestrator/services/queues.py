"""Queues: where jobs wait, with a priority, a concurrency limit and a pause switch."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.errors import Conflict, InvalidRequest, NotFound
from orchestrator.rules.fields import storable
from orchestrator.rules.project_caps import Capped, ProjectCaps
from orchestrator.rules.states import ACTIVE, UNFINISHED, JobStatus
from orchestrator.schemas.queues import QueueCreate, QueueUpdate
from orchestrator.services import arrays, audit, definitions, jobs, projects
from orchestrator.services.audit import Actor
from orchestrator.storage.db import serialize
from orchestrator.storage.models import Job, Queue, utcnow


def get(session: Session, project: str, name: str) -> Queue:
    """The queue; NotFound names it."""
    if not storable(name):
        raise NotFound(f"queue '{name}' not found in project '{project}'", field="queue")
    queue = session.exec(select(Queue).where(Queue.project == project, Queue.name == name)).first()
    if queue is None:
        raise NotFound(f"queue '{name}' not found in project '{project}'", field="queue")
    return queue


def list_all(session: Session, project: str) -> list[Queue]:
    """The project's queues, highest priority first."""
    statement = (
        select(Queue)
        .where(Queue.project == project)
        .order_by(sa.desc(col(Queue.priority)), col(Queue.name))
    )
    return list(session.exec(statement).all())


def counts(session: Session, project: str) -> dict[str, tuple[int, int]]:
    """Queue name -> (jobs waiting to start, jobs starting or running).

    Driven from the project's queues, so each count is a range of the claim index (project,
    queue, status): what it costs follows the unfinished jobs, not the project's history. Read
    from the jobs alone, the count walked every job of the project in that index (80 ms at 1M
    finished jobs on SQLite, against 2 ms this way)."""
    statement = (
        select(Queue.name, Job.status, sa.func.count())
        .select_from(Queue)
        .join(
            Job, sa.and_(col(Job.project) == col(Queue.project), col(Job.queue) == col(Queue.name))
        )
        .where(Queue.project == project)
        .where(col(Job.status).in_([JobStatus.QUEUED, *ACTIVE]), arrays.NOT_PARENT)
        .group_by(Queue.name, Job.status)
    )
    result: dict[str, tuple[int, int]] = {}
    for queue, status, count in session.execute(statement).all():
        waiting, running = result.get(queue, (0, 0))
        if status == JobStatus.QUEUED:
            waiting += count
        else:
            running += count
        result[queue] = (waiting, running)
    return result


def _check_default_definition(session: Session, project: str, reference: str | None) -> None:
    if reference is not None:
        try:
            name, version = definitions.parse_reference(reference)
            definitions.get(session, project, name, version)
        except NotFound as exc:
            raise NotFound(
                f"default_definition: {exc.message}", field="default_definition"
            ) from None
        except InvalidRequest as exc:
            raise InvalidRequest(
                f"default_definition: {exc.message}", field="default_definition"
            ) from None


def create(
    session: Session, project: str, request: QueueCreate, actor: Actor, *, caps: ProjectCaps
) -> Queue:
    """A new queue; Conflict when the name is taken, LimitReached when the project holds as
    many queues as ``caps`` allow."""
    projects.get(session, project)
    # Checked and counted under the lock, so two creates of one name (or at the cap) cannot
    # both pass: the second sees the first's queue once it has committed.
    serialize(session, f"cap:queues:{project}")
    exists = session.exec(
        select(Queue).where(Queue.project == project, Queue.name == request.name)
    ).first()
    if exists is not None:
        raise Conflict(
            f"queue '{request.name}' already exists in project '{project}'", field="name"
        )
    count = session.exec(
        select(sa.func.count()).select_from(Queue).where(Queue.project == project)
    ).one()
    caps.check(Capped.QUEUES, count, f"project '{project}'")
    _check_default_definition(session, project, request.default_definition)
    queue = Queue(project=project, **request.model_dump())
    session.add(queue)
    session.flush()
    audit.record(session, actor, "queue_created", f"queue/{queue.name}", project)
    return queue


def update(session: Session, project: str, name: str, request: QueueUpdate, actor: Actor) -> Queue:
    """Apply the fields present in ``request`` (``max_concurrency: null`` lifts the limit).

    A new default definition is given at once to the jobs that waited for one; the caller
    wakes the runners after commit.
    """
    queue = get(session, project, name)
    changes = request.model_dump(exclude_unset=True)
    for field in ("display_name", "description", "priority", "paused"):
        if field in changes and changes[field] is None:
            changes.pop(field)
    if "default_definition" in changes:
        _check_default_definition(session, project, changes["default_definition"])
    for field, value in changes.items():
        setattr(queue, field, value)
    queue.update_time = utcnow()
    session.add(queue)
    session.flush()
    audit.record(session, actor, "queue_updated", f"queue/{name}", project, changes)
    if changes.get("default_definition") is not None:
        jobs.bind_waiting(session, None, queue)
    return queue


def delete(session: Session, project: str, name: str, actor: Actor) -> None:
    """Delete an idle queue; Conflict if jobs wait or run in it, or it is ``default``."""
    queue = get(session, project, name)
    if name == projects.DEFAULT:
        raise Conflict("the default queue cannot be deleted", field="queue")
    unfinished = session.exec(
        select(sa.func.count())
        .select_from(Job)
        .where(Job.project == project, Job.queue == name)
        .where(col(Job.status).in_(UNFINISHED))
    ).one()
    if unfinished:
        raise Conflict(
            f"queue '{name}' has {unfinished} waiting or running job(s): cancel them first",
            field="queue",
        )
    session.delete(queue)
    session.flush()
    audit.record(session, actor, "queue_deleted", f"queue/{name}", project)
