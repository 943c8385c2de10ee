"""Array jobs: a parent and its ``size`` children, made in the submit's transaction; the
parent's status, derived from its children's as they move; cancelling a whole array.

A parent is a job row no runner claims (``NOT_PARENT`` keeps it out of every claim and count
of runnable work); each child is an ordinary job with ``parent_id`` and ``array_index``. The
parent moves only through ``jobs.transition``, by ``PARENT_TRANSITIONS``: running when a child
first starts, and its end (one webhook) when its last child ends, which ``child_moved`` learns
from an O(1) counter on the parent (``unfinished_children``), never a scan of the children.
Locks go child before parent everywhere (a child's end, a claim, ``cancel``), so two of them
never wait on each other.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.errors import Conflict, NotFound
from orchestrator.rules import arrays as rules
from orchestrator.rules import states
from orchestrator.rules.input_limits import InputLimits, json_size
from orchestrator.rules.states import ACTIVE, UNFINISHED, WAITING, EventType, JobStatus
from orchestrator.rules.templating import ParameterValue, placeholders, substitute
from orchestrator.schemas.jobs import JobCreate
from orchestrator.services import definitions, job_queries
from orchestrator.storage.models import Definition, Job, JobEvent, utcnow
from orchestrator.wakeups.hub import Hub

# Kept in the parent's command for its children to fill in (a parent never runs).
KEPT: dict[str, ParameterValue] = {name: f"Param::{name}" for name in rules.ARRAY_PARAMETERS}

# Jobs that are not array parents: what a claim may take and what counts as queued or running.
NOT_PARENT = col(Job.unfinished_children).is_(None)

# The event a parent's end is recorded with.
_END_EVENTS = {
    JobStatus.SUCCEEDED: EventType.SUCCEEDED,
    JobStatus.FAILED: EventType.FAILED,
    JobStatus.CANCELLED: EventType.CANCELLED,
}


def is_parent(job: Job) -> bool:
    """Whether ``job`` is an array parent (read from the columns a job list loads too)."""
    return job.array_size is not None and job.array_index is None


def can_transition(job: Job, status: JobStatus) -> bool:
    """Whether ``job`` may move to ``status``: a parent by its own table, else the life cycle."""
    if is_parent(job):
        return rules.parent_can_transition(job.status, status)
    return states.can_transition(job.status, status)


def check(request: JobCreate, limits: InputLimits) -> None:
    """Refuse an array submission whose size is out of range (``rules.arrays.check_size``)."""
    assert request.array is not None
    copied = json_size(request.input) + json_size(request.metadata)
    rules.check_size(request.array.size, limits.max_array_size, copied)


def template(definition: Definition, request: JobCreate) -> list[str] | None:
    """The command the children fill in: the submission's own, else the definition's."""
    if request.command is not None:
        return request.command
    command: list[str] | None = definitions.current_spec(definition)["command"]
    return command


def _column_names() -> list[tuple[str, str]]:
    """(attribute, column) of every column of a job but ``seq`` (the database numbers it)."""
    mapper = sa.inspect(Job)
    return [
        (attribute.key, attribute.columns[0].name)
        for attribute in mapper.column_attrs
        if attribute.key != "seq"
    ]


def add_children(
    session: Session, parent: Job, template: list[str] | None, hub: Hub | None
) -> None:
    """Insert the stored ``parent``'s children, indexed 0..size-1, and their ``created`` and
    ``queued`` (or ``scheduled``) events, in the caller's transaction.

    Each child is the parent's copy with its own id, no name (names are unique among a queue's
    unfinished jobs) and no webhook (the parent's fires once, for the whole array); its command
    is ``template`` with ``Param::array_index`` and ``Param::array_size`` filled in. One
    multi-row insert per table (Core, no ORM object per child): 10,000 children take well
    under a second.
    """
    size = parent.array_size
    assert size is not None
    shared = {column: getattr(parent, attribute) for attribute, column in _column_names()}
    shared.update(
        parent_id=parent.id,
        name=None,
        webhook=None,
        webhook_auth_ciphertext=None,
        unfinished_children=None,
    )
    indexed = template is not None and bool(
        set(placeholders(template)) & set(rules.ARRAY_PARAMETERS)
    )
    children: list[dict[str, Any]] = []
    for index in range(size):
        command = parent.command
        if indexed:
            assert template is not None
            values = {**parent.parameters, **rules.child_values(index, size)}
            command = substitute(template, values)
        children.append(
            {**shared, "id": str(uuid.uuid4()), "array_index": index, "command": command}
        )
    now = utcnow()
    if parent.status is JobStatus.SCHEDULED:
        assert parent.schedule_at is not None
        waiting = (EventType.SCHEDULED, {"schedule_at": parent.schedule_at.isoformat()})
    else:
        waiting = (EventType.QUEUED, {})
    events = [
        {
            "job_id": child["id"],
            "time": now,
            "type": event,
            "attempt": 0,
            "status": parent.status,
            "detail": detail,
        }
        for child in children
        for event, detail in (
            (EventType.CREATED, {"parent": parent.id, "array_index": child["array_index"]}),
            waiting,
        )
    ]
    connection = session.connection()
    connection.execute(sa.insert(Job.__table__), children)  # type: ignore[attr-defined]
    connection.execute(sa.insert(JobEvent.__table__), events)  # type: ignore[attr-defined]
    # The parent's own ``queued`` event woke the runners (``jobs.record``).


class Transition(Protocol):
    """``jobs.transition``, which moves the parent (this module sits below the job service)."""

    def __call__(
        self,
        session: Session,
        job: Job,
        status: JobStatus,
        event: EventType,
        detail: dict[str, Any] | None = None,
        hub: Hub | None = None,
        **changes: Any,
    ) -> None: ...


def child_moved(
    session: Session, job: Job, previous: JobStatus, hub: Hub | None, transition: Transition
) -> None:
    """Called by ``jobs.transition`` for every job that moved (``transition`` is that
    function): when an array child first becomes active its waiting parent starts running;
    when a child ends its parent's count of unfinished children goes down, and the last one
    ends the parent."""
    if job.parent_id is None:
        return
    if job.status.terminal and not previous.terminal:
        _child_ended(session, job, hub, transition)
    elif job.status in ACTIVE and previous not in ACTIVE:
        _child_started(session, job, hub, transition)


def _locked_parent(session: Session, parent_id: str) -> Job:
    """The parent, locked until the transaction ends and read afresh."""
    parent = session.exec(
        select(Job)
        .where(Job.id == parent_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if parent is None:
        raise NotFound(f"job '{parent_id}' not found", field="job")
    return parent


def _child_started(session: Session, child: Job, hub: Hub | None, transition: Transition) -> None:
    # Read unlocked first: once the parent runs (the usual case) a claim takes no lock on it.
    status = session.exec(select(Job.status).where(Job.id == child.parent_id)).first()
    if status not in WAITING:
        return
    assert child.parent_id is not None
    parent = _locked_parent(session, child.parent_id)
    if parent.status in WAITING:
        detail = {"child": child.id, "array_index": child.array_index}
        transition(
            session, parent, JobStatus.RUNNING, EventType.STARTED, detail, hub, start_time=utcnow()
        )


def _child_ended(session: Session, child: Job, hub: Hub | None, transition: Transition) -> None:
    assert child.parent_id is not None
    parent = _locked_parent(session, child.parent_id)
    assert parent.unfinished_children is not None
    parent.unfinished_children -= 1
    session.add(parent)
    if parent.unfinished_children > 0:
        return
    # The last child: one grouped read of the children, once per array.
    rows = session.exec(
        select(Job.status, sa.func.count())
        .where(Job.parent_id == parent.id)
        .group_by(col(Job.status))
    ).all()
    counts = {JobStatus(status): count for status, count in rows}
    final = rules.final_status(counts, parent.cancel_requested)
    detail = {"children": {str(status): count for status, count in sorted(counts.items())}}
    error = None
    if final is JobStatus.FAILED:
        failed = counts.get(JobStatus.FAILED, 0)
        cancelled = counts.get(JobStatus.CANCELLED, 0)
        error = f"{failed} of {parent.array_size} children failed and {cancelled} were cancelled"
    transition(session, parent, final, _END_EVENTS[final], detail, hub, error=error)


def lock_for_cancel(session: Session, parent: Job) -> tuple[Job, list[Job]]:
    """The array ``parent`` and its unfinished children, locked (children first, as a child's
    end locks them), for ``jobs.cancel``; Conflict when the array has ended."""
    children = session.exec(
        select(Job)
        .where(Job.parent_id == parent.id, col(Job.status).in_(sorted(UNFINISHED)))
        .order_by(col(Job.seq))
        .with_for_update()
    ).all()
    parent = _locked_parent(session, parent.id)
    if parent.status.terminal:
        raise Conflict(f"job {parent.id} is already {parent.status}", field="status")
    return parent, list(children)


def children_of(session: Session, project: str, job_id: str) -> Job:
    """The array parent ``job_id`` of ``project``; NotFound when there is no such job or it is
    not an array parent."""
    job = job_queries.get(session, project, job_id)
    if not is_parent(job):
        raise NotFound(f"job '{job_id}' is not an array job", field="job")
    return job
