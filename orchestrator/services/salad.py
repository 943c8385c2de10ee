"""SaladCloud's Queue API over our queues and jobs: our rows in its shapes (``schemas/salad.py``),
and the few reads the adapter needs (a queue's jobs a batch at a time, a queue's waiting count).

No second job model: a Salad queue is our queue, a Salad job our job (marked ``api="salad"``).
Nothing here changes a job; it only maps. Optional Salad fields with no value are left unset
(the routes and webhooks drop unset fields), never sent as ``null``.
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import load_only
from sqlmodel import Session, col, select

from orchestrator.errors import NotFound
from orchestrator.rules.definition_spec import READINESS_HEADERS
from orchestrator.rules.states import WAITING, EventType, JobStatus
from orchestrator.schemas.salad import (
    Container,
    ContainerGroup,
    ContainerGroupState,
    ContainerResources,
    GroupStatus,
    HttpProbe,
    InstanceStatusCount,
    QueueConnection,
    QueueJob,
    QueueJobEvent,
    ReadinessProbe,
    SaladQueue,
)
from orchestrator.services import definitions, worker_containers
from orchestrator.services.worker_containers import WorkerCounts
from orchestrator.storage.models import Definition, Job, JobEvent, Queue

SALAD = "salad"  # ``Job.api`` and ``WebhookDelivery.signing_key`` of SaladCloud's jobs
MAX_EVENTS = 1000  # a QueueJob carries at most this many events
MAX_PAGE_SIZE = 100
# Salad's ids are UUIDs; a queue's is derived from its row, so it needs no column.
_QUEUE_IDS = uuid.UUID("6a2f0c3e-4c1b-4f7e-9a59-7b3f0e0d5a11")
_DISPLAY_NAME = re.compile(r"^[ ,-.0-9A-Za-z]{2,63}$")
_MEBIBYTE = 1024 * 1024
# What SaladCloud's schema allows a container's command: elements of one line, 1 to 2048
# characters each (its pattern is ``^.*$``), at most 100 of them.
_COMMAND_ITEMS = 100
_COMMAND_CHARS = 2048
_LINE_BREAKS = str.maketrans({"\r": "\\r", "\n": "\\n", "\u2028": "\\u2028", "\u2029": "\\u2029"})

STATUS: dict[JobStatus, str] = {
    JobStatus.PENDING: "pending",
    JobStatus.SCHEDULED: "pending",
    JobStatus.QUEUED: "pending",
    JobStatus.STARTING: "running",
    JobStatus.RUNNING: "running",
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.CANCELLED: "cancelled",
    JobStatus.FAILED: "failed",
}
# Our events that are Salad's actions; every other event is not shown.
ACTIONS: dict[str, str] = {
    EventType.CREATED: "created",
    EventType.STARTED: "started",
    EventType.SUCCEEDED: "succeeded",
    EventType.CANCELLED: "cancelled",
    EventType.FAILED: "failed",
}

# --- our rows as Salad's shapes --------------------------------------------------------------


def queue_id(queue: Queue) -> str:
    """The queue's Salad id: a UUID derived from its row (a re-made queue gets a new one)."""
    return str(uuid.uuid5(_QUEUE_IDS, f"{queue.project}::{queue.name}::{queue.id}"))


def _fields(**values: Any) -> dict[str, Any]:
    """Only the values that are set, so an unset optional field is left out of the JSON."""
    return {name: value for name, value in values.items() if value is not None}


def job(session: Session, row: Job) -> QueueJob:
    """The job as Salad shows it: status mapped, events of Salad's actions, output when done."""
    statement = (
        select(JobEvent.type, JobEvent.time)
        .where(JobEvent.job_id == row.id, col(JobEvent.type).in_(list(ACTIONS)))
        .order_by(col(JobEvent.id))
        .limit(MAX_EVENTS)
    )
    events = [QueueJobEvent(action=ACTIONS[t], time=time) for t, time in session.exec(statement)]  # type: ignore[arg-type]
    done = row.status.terminal and row.output is not None
    return QueueJob(
        id=row.id,
        input=row.input,
        status=STATUS[row.status],  # type: ignore[arg-type]
        events=events,
        create_time=row.create_time,
        update_time=row.update_time,
        # Always an object, ``{}`` included: SaladCloud's clients read back what they sent.
        metadata=row.job_metadata,
        **_fields(output=row.output if done else None),
    )


def job_json(session: Session, row: Job) -> dict[str, Any]:
    """The job's Salad JSON, as the API answers it (for its webhook)."""
    return job(session, row).model_dump(mode="json", exclude_unset=True)


def shown_command(command: list[str] | None) -> list[str] | None:
    """Pure: a worker's command as SaladCloud's schema can hold it (one line per element, 1 to
    2048 characters, 100 elements at most). A line break is shown as its escape (``\\n``), so a
    multi-line script reads as one line; an empty element as ``''``, the shell's empty word; an
    element over the length is cut, ending with ``…``; elements past the 100th are left out."""
    if command is None:
        return None
    shown = []
    for element in command[:_COMMAND_ITEMS]:
        text = element.translate(_LINE_BREAKS) or "''"
        if len(text) > _COMMAND_CHARS:
            text = text[: _COMMAND_CHARS - 1] + "…"
        shown.append(text)
    return shown


def _group_state(
    queue: Queue, definition: Definition, workers: WorkerCounts
) -> ContainerGroupState:
    """The group's state from the worker containers that exist: ``running`` while one is ready,
    ``deploying`` while one is starting and none is ready; with none, ``stopped`` when the
    queue is paused, else ``pending`` (workers start when jobs wait)."""
    status: GroupStatus
    if workers.running:
        status = "running"
    elif workers.creating:
        status = "deploying"
    else:
        status = "stopped" if queue.paused else "pending"
    since = workers.since or definition.create_time
    return ContainerGroupState(
        status=status,
        start_time=since,
        finish_time=since,
        instance_status_counts=InstanceStatusCount(
            creating_count=workers.creating,
            running_count=workers.running,
            stopping_count=workers.stopping,
        ),
    )


def _container_group(
    queue: Queue, organization: str, session: Session, lease: float
) -> ContainerGroup | None:
    """The queue's default definition as a container group, when it is an HTTP worker, with
    the worker containers of live runners serving the queue's jobs of it."""
    if queue.default_definition is None:
        return None
    name, version = definitions.parse_reference(queue.default_definition)
    try:
        definition = definitions.get(session, queue.project, name, version)
    except NotFound:
        return None
    spec = definitions.current_spec(definition)
    worker = spec.get("worker")
    if not worker:
        return None
    resources = spec.get("resources") or {}
    memory = resources.get("memory")
    readiness = worker.get("readiness_path")
    port = int(worker["port"])
    workers = worker_containers.counts(
        session, queue.project, queue.name, definition.name, definition.version, lease
    )
    headers = [{"name": name, "value": value} for name, value in READINESS_HEADERS.items()]
    return ContainerGroup(
        id=str(uuid.uuid5(_QUEUE_IDS, f"{queue_id(queue)}::{definition.id}")),
        name=definition.name,
        display_name=definition.name,
        organization_name=organization,
        project_name=queue.project,
        container=Container(
            image=spec["image"],
            command=shown_command(spec.get("command")),
            resources=ContainerResources(
                cpu=max(1, math.ceil(resources.get("cpus") or 1)),
                memory=max(1024, (memory or 0) // _MEBIBYTE),
            ),
        ),
        current_state=_group_state(queue, definition, workers),
        replicas=int(worker.get("replicas") or 1),
        version=definition.version,
        create_time=definition.create_time,
        update_time=definition.create_time,
        queue_connection=QueueConnection(path=worker["path"], port=port, queue_name=queue.name),
        **_fields(
            readiness_probe=ReadinessProbe(
                http=HttpProbe(path=readiness, port=port, headers=headers)
            )
            if readiness
            else None
        ),
    )


def waiting_count(session: Session, queue: Queue) -> int:
    """How many of the queue's jobs wait to start (queued, scheduled, or unbound)."""
    statement = (
        select(sa.func.count())
        .select_from(Job)
        .where(Job.project == queue.project, Job.queue == queue.name)
        .where(col(Job.status).in_(list(WAITING)), col(Job.unfinished_children).is_(None))
    )
    return int(session.exec(statement).one())


def queue(session: Session, row: Queue, organization: str, lease: float) -> SaladQueue:
    """The queue as Salad shows it, with its worker container groups and waiting count
    (``lease``: the runners' lease, after which a runner's containers no longer count)."""
    group = _container_group(row, organization, session, lease)
    description = " ".join(row.description.splitlines())[:500]
    display = row.display_name if _DISPLAY_NAME.match(row.display_name) else row.name
    return SaladQueue(
        id=queue_id(row),
        name=row.name,
        display_name=display,
        container_groups=[group] if group is not None else [],
        create_time=row.create_time,
        update_time=row.update_time,
        current_queue_length=waiting_count(session, row),
        **_fields(description=description or None),
    )


# The columns of a job its Salad shape shows (``seq`` orders a page).
SHOWN_COLUMNS: tuple[Any, ...] = (
    Job.seq, Job.id, Job.status, Job.input, Job.job_metadata, Job.output, Job.create_time,
    Job.update_time,
)  # fmt: skip


def jobs_of(
    session: Session, row: Queue, *, limit: int, offset: int = 0, before: int | None = None
) -> list[Job]:
    """Up to ``limit`` of the queue's jobs, newest first, past the first ``offset``; or, to go
    on reading a page a batch at a time, those below the job ``seq`` ``before``."""
    # Only what ``job`` shows: a job's other columns (env, parameters...) are not read.
    shown = load_only(*SHOWN_COLUMNS, raiseload=True)
    statement = select(Job).options(shown).where(Job.project == row.project, Job.queue == row.name)
    if before is not None:
        statement = statement.where(col(Job.seq) < before)
    statement = statement.order_by(sa.desc(col(Job.seq))).offset(offset).limit(limit)
    return list(session.exec(statement).all())


def job_item(session: Session, row: Job) -> bytes:
    """The job as Salad shows it, as JSON, as the API answers it (unset fields left out)."""
    return job(session, row).model_dump_json(exclude_unset=True).encode()
