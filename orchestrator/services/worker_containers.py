"""The HTTP worker containers runners keep, as they record them (SaladCloud's container-group
instances): each runner writes its own rows as a container is created, gets ready, stops and
goes; readers count the containers of live runners. The one writer of
``WorkerContainer.state``; it never touches a container.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, delete, select

from orchestrator.errors import Conflict
from orchestrator.rules.worker_states import WorkerState, can_worker_transition
from orchestrator.storage.models import RunnerRecord, WorkerContainer, utcnow


@dataclass(frozen=True)
class WorkerOwner:
    """Whose worker containers are: the runner process, and the queue and definition version
    whose jobs they serve."""

    runner: str
    session: str
    project: str
    queue: str
    definition: str
    version: int


def record(session: Session, owner: WorkerOwner, container_id: str, state: WorkerState) -> None:
    """Record that the container is in ``state`` (its row is made at its first state).
    Conflict when the table of worker states does not allow the move."""
    row = session.get(WorkerContainer, container_id)
    if row is None:
        row = WorkerContainer(
            container_id=container_id,
            runner=owner.runner,
            session=owner.session,
            project=owner.project,
            queue=owner.queue,
            definition=owner.definition,
            definition_version=owner.version,
            state=state,
        )
    elif row.state != state:
        if not can_worker_transition(row.state, state):
            raise Conflict(
                f"worker container {container_id[:12]} cannot go from {row.state} to {state}",
                field="state",
            )
        row.state = state
        row.update_time = utcnow()
    session.add(row)


def forget(session: Session, container_id: str) -> None:
    """The container is gone: delete its row."""
    session.exec(delete(WorkerContainer).where(col(WorkerContainer.container_id) == container_id))


def forget_earlier_processes(session: Session, runner: str, runner_session: str) -> None:
    """Delete the rows an earlier process of ``runner`` left (this one removes their
    containers)."""
    session.exec(
        delete(WorkerContainer).where(
            col(WorkerContainer.runner) == runner,
            col(WorkerContainer.session) != runner_session,
        )
    )


@dataclass(frozen=True)
class WorkerCounts:
    """How many worker containers are in each state, and since when the oldest one exists."""

    creating: int = 0
    running: int = 0
    stopping: int = 0
    since: datetime | None = None


def counts(
    session: Session, project: str, queue: str, definition: str, version: int, lease: float
) -> WorkerCounts:
    """The worker containers of the queue's jobs of this definition version, by state. Only
    those of a live runner process count: a runner whose lease ran out, or a process that has
    been replaced, is no longer serving from its containers."""
    cutoff = utcnow() - timedelta(seconds=lease)
    statement = (
        select(
            WorkerContainer.state,
            sa.func.count(),
            sa.func.min(col(WorkerContainer.create_time)),
        )
        .join(
            RunnerRecord,
            sa.and_(
                col(RunnerRecord.name) == col(WorkerContainer.runner),
                col(RunnerRecord.session) == col(WorkerContainer.session),
            ),
        )
        .where(
            WorkerContainer.project == project,
            WorkerContainer.queue == queue,
            WorkerContainer.definition == definition,
            WorkerContainer.definition_version == version,
            col(RunnerRecord.heartbeat_time) >= cutoff,
        )
        .group_by(col(WorkerContainer.state))
    )
    found = {state: (count, since) for state, count, since in session.exec(statement).all()}
    times = [since for _, since in found.values() if since is not None]
    return WorkerCounts(
        creating=found.get(WorkerState.CREATING, (0, None))[0],
        running=found.get(WorkerState.RUNNING, (0, None))[0],
        stopping=found.get(WorkerState.STOPPING, (0, None))[0],
        since=min(times) if times else None,
    )
