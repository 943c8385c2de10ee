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

import json
import re
from typing import Any, Protocol

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.errors import Conflict, NotFound
from orchestrator.rules import arrays as rules
from orchestrator.rules import states
from orchestrator.rules.ids import time_ordered_id
from orchestrator.rules.input_limits import InputLimits, json_size
from orchestrator.rules.states import ACTIVE, UNFINISHED, WAITING, EventType, JobStatus
from orchestrator.rules.templating import (
    PLACEHOLDER,
    ParameterValue,
    placeholders,
    render_value,
)
from orchestrator.schemas.jobs import JobCreate
from orchestrator.services import definitions, job_queries
from orchestrator.storage.models import Definition, Job, UTCDateTime, utcnow
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


# The columns a child takes from its own values, not its parent's.
_OWN = {
    "id": "c.id",
    "parent_id": "p.id",
    "array_index": "c.array_index",
    "command": "c.command",
    "name": "NULL",
    "webhook": "NULL",
    "webhook_auth_ciphertext": "NULL",
    "unfinished_children": "NULL",
    # A child waits on its parent's dependencies through its parent, with no links of its own.
    "open_dependencies": "0",
    "input_from": "NULL",
}
# Each child's (id, command) as one JSON array bound as one value, read back as rows.
_SOURCES = {
    "sqlite": "(SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS "
    "command, CAST(key AS INTEGER) AS array_index FROM json_each(:children))",
    "postgresql": "(SELECT e.value->>0 AS id, e.value->1 AS command, "
    "(e.n - 1)::integer AS array_index "
    "FROM json_array_elements(CAST(:children AS json)) WITH ORDINALITY AS e(value, n))",
}
_OBJECT = {"sqlite": "json_object", "postgresql": "json_build_object"}


def _commands(
    parent: Job, template: list[str] | None, count: int | None = None
) -> list[list[str] | None]:
    """Each child's command (the first ``count`` children's, else all): the parent's, with the
    elements that use ``Param::array_index`` or ``Param::array_size`` filled in from
    ``template`` (an element is never split, so the parent's element k is the template's
    element k with the other parameters filled in)."""
    size = parent.array_size
    assert size is not None
    if template is None or parent.command is None:
        return [parent.command] * (count or size)
    indexed = [
        k
        for k, element in enumerate(template)
        if set(placeholders([element])) & set(rules.ARRAY_PARAMETERS)
    ]
    if not indexed:
        return [parent.command] * (count or size)
    commands: list[list[str] | None] = []
    for index in range(count or size):
        values = {**parent.parameters, **rules.child_values(index, size)}

        def value(match: re.Match[str], values: dict[str, Any] = values) -> str:
            # Checked by the parent's binding: every name the template uses has a value.
            return render_value(values[match.group(1)])

        command = list(parent.command)
        for k in indexed:
            command[k] = PLACEHOLDER.sub(value, template[k])
        commands.append(command)
    return commands


def as_first_child(parent: Job, template: list[str] | None) -> None:
    """Make the unstored ``parent`` look like its child 0 (its index and command), for a dry
    run to show the container a child runs."""
    [parent.command] = _commands(parent, template, count=1)
    parent.array_index = 0


def insert_children(session: Session, parent: Job, template: list[str] | None) -> None:
    """Insert the stored ``parent``'s children, indexed 0..size-1, in the caller's transaction
    (their events come after, from ``record_children``, once their statuses are settled).

    Each child is the parent's copy with its own id, no name (names are unique among a queue's
    unfinished jobs) and no webhook (the parent's fires once, for the whole array); its command
    is ``template`` with ``Param::array_index`` and ``Param::array_size`` filled in. The
    database copies the parent's row: one ``INSERT ... SELECT`` for the children (their ids
    and commands bound as one JSON array), so no value of the parent's is encoded once per
    child (10,000 children in well under a second: ``bench/array_submit``).
    """
    # The database copies the parent's row as it is now (released already, or pending).
    session.flush()
    connection = session.connection()
    dialect = connection.dialect.name
    children = [[time_ordered_id(), command] for command in _commands(parent, template)]
    columns = [column.name for column in Job.__table__.columns if column.name != "seq"]  # type: ignore[attr-defined]
    names = ", ".join(f'"{name}"' for name in columns)
    values = ", ".join(_OWN.get(name, f'p."{name}"') for name in columns)
    connection.execute(
        sa.text(
            f"INSERT INTO jobs ({names}) SELECT {values} "
            f"FROM jobs AS p, {_SOURCES[dialect]} AS c WHERE p.id = :parent ORDER BY c.array_index"
        ),
        {"children": json.dumps(children), "parent": parent.id},
    )


def record_children(session: Session, parent: Job) -> None:
    """Append each new child's ``created`` event, then the one of the status it waits in:
    ``queued``, ``scheduled`` (the parent's time) or ``pending`` (with its open dependencies:
    its parent's, its own or both). One statement per event type."""
    connection = session.connection()
    dialect = connection.dialect.name
    time = sa.bindparam("time", utcnow(), type_=UTCDateTime)
    obj = _OBJECT[dialect]
    schedule_at = parent.schedule_at.isoformat() if parent.schedule_at is not None else None
    events = (
        (EventType.CREATED, None, f"{obj}('parent', parent_id, 'array_index', array_index)"),
        (EventType.QUEUED, JobStatus.QUEUED, f"{obj}()"),
        (
            EventType.SCHEDULED,
            JobStatus.SCHEDULED,
            f"{obj}('schedule_at', CAST(:schedule_at AS TEXT))",
        ),
        (EventType.PENDING, JobStatus.PENDING, f"{obj}('open_dependencies', open_dependencies)"),
    )
    for event, status, detail in events:
        where = "parent_id = :parent" + ("" if status is None else " AND status = :status")
        params: dict[str, Any] = {"type": str(event), "parent": parent.id}
        if status is not None:
            params["status"] = str(status)
        if status is JobStatus.SCHEDULED:
            params["schedule_at"] = schedule_at
        connection.execute(
            sa.text(
                "INSERT INTO job_events (job_id, time, type, attempt, status, detail) "
                f"SELECT id, :time, :type, 0, status, {detail} FROM jobs WHERE {where} "
                "ORDER BY seq"
            ).bindparams(time),
            params,
        )
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
    ends the parent. A parent its dependencies release takes its children along; one they
    fail fails its children."""
    if is_parent(job) and previous is JobStatus.PENDING and job.status is not previous:
        _parent_left_pending(session, job, hub, transition)
        return
    if job.parent_id is None:
        return
    if job.status.terminal and not previous.terminal:
        _child_ended(session, job, hub, transition)
    elif job.status in ACTIVE and previous not in ACTIVE:
        _child_started(session, job, hub, transition)


# Where a session keeps the parents it has locked: {id: parent}.
_LOCKED = "orchestrator.arrays.locked"


def _locked_parent(session: Session, parent_id: str) -> Job:
    """The parent, locked until the transaction ends and read afresh; read once per
    transaction (the lock keeps every other writer off it, so the object stays current), as
    cancelling 10,000 children ends that many of them in one."""
    locked: dict[str, Job] = session.info.setdefault(_LOCKED, {})
    if parent_id in locked:
        return locked[parent_id]
    parent = session.exec(
        select(Job)
        .where(Job.id == parent_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if parent is None:
        raise NotFound(f"job '{parent_id}' not found", field="job")
    locked[parent_id] = parent
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


def _parent_left_pending(
    session: Session, parent: Job, hub: Hub | None, transition: Transition
) -> None:
    """The parent's dependencies released it (queued or scheduled): its children, pending
    with it, move the same way at once, with the input its dependencies' outputs made. They
    failed it (or it was cancelled): each child still pending fails the same way, one by one,
    so that a job waiting on one child is settled too."""
    if parent.status.terminal:
        pending = session.exec(
            select(Job)
            .where(Job.parent_id == parent.id, Job.status == JobStatus.PENDING)
            .order_by(col(Job.seq))
            .with_for_update()
        ).all()
        detail = {"parent": parent.id, "parent_status": parent.status, "reason": parent.reason}
        for child in pending:
            transition(
                session,
                child,
                parent.status,
                _END_EVENTS[parent.status],
                detail,
                hub,
                reason=parent.reason,
                error=f"its array job {parent.id} {parent.status}: {parent.error}",
            )
        return
    now = utcnow()
    time = sa.bindparam("time", now, type_=UTCDateTime)
    connection = session.connection()
    waiting = sa.and_(col(Job.parent_id) == parent.id, col(Job.status) == JobStatus.PENDING)
    # The parent's dependencies were one of each child's open ones; a child still waiting for
    # its own (``N_TO_N``, ``SEQUENTIAL``) stays pending for them.
    connection.execute(
        sa.update(Job)
        .where(waiting)
        .values(open_dependencies=Job.open_dependencies - 1, input=parent.input)
    )
    released = json.dumps({"released_by": parent.id})
    value = "CAST(:detail AS json)" if connection.dialect.name == "postgresql" else ":detail"
    connection.execute(
        sa.text(
            "INSERT INTO job_events (job_id, time, type, attempt, status, detail) "
            f"SELECT id, :time, :type, 0, :status, {value} FROM jobs "
            "WHERE parent_id = :parent AND status = 'pending' AND open_dependencies = 0 "
            "ORDER BY seq"
        ).bindparams(time),
        {
            "type": str(EventType(parent.status)),
            "status": str(parent.status),
            "parent": parent.id,
            "detail": released,
        },
    )
    connection.execute(
        sa.update(Job)
        .where(waiting, col(Job.open_dependencies) == 0)
        .values(status=parent.status, update_time=now)
    )


def _gathered_output(session: Session, parent: Job) -> Any:
    """The children's outputs in index order, when they are at most
    ``MAX_GATHERED_OUTPUT_BYTES`` of JSON together (sized by the database first, so a large
    array's outputs are never all read); else None."""
    size = session.exec(
        select(sa.func.sum(sa.func.length(sa.cast(col(Job.output), sa.Text)))).where(
            Job.parent_id == parent.id
        )
    ).one()
    if size is None or size > rules.MAX_GATHERED_OUTPUT_BYTES:
        return None
    return list(
        session.exec(
            select(Job.output).where(Job.parent_id == parent.id).order_by(col(Job.array_index))
        ).all()
    )


def _child_ended(session: Session, child: Job, hub: Hub | None, transition: Transition) -> None:
    assert child.parent_id is not None
    parent = _locked_parent(session, child.parent_id)
    assert parent.unfinished_children is not None
    parent.unfinished_children -= 1
    session.add(parent)
    if parent.unfinished_children > 0 or parent.status.terminal:
        # A parent its dependencies failed ended first, its children after it.
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
    output = _gathered_output(session, parent)
    transition(session, parent, final, _END_EVENTS[final], detail, hub, error=error, output=output)


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
