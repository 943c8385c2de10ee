"""SaladCloud's Queue API shapes over our queues and jobs: the mapping both ways, and the few
reads the adapter needs (a page of a queue's jobs, a queue's waiting count).

No second job model: a Salad queue is our queue, a Salad job our job (marked ``api="salad"``).
Nothing here changes a job; it only maps. Optional Salad fields with no value are left unset
(the routes and webhooks drop unset fields), never sent as ``null``.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import AnyUrl, BaseModel, ConfigDict, Field, StringConstraints
from sqlmodel import Session, col, select

from orchestrator.errors import NotFound
from orchestrator.rules.states import WAITING, EventType, JobStatus
from orchestrator.services import definitions
from orchestrator.storage.models import Job, JobEvent, Queue

SALAD = "salad"  # ``Job.api`` and ``WebhookDelivery.signing_key`` of SaladCloud's jobs
MAX_EVENTS = 1000  # a QueueJob carries at most this many events
MAX_PAGE_SIZE = 100
# Salad's ids are UUIDs; a queue's is derived from its row, so it needs no column.
_QUEUE_IDS = uuid.UUID("6a2f0c3e-4c1b-4f7e-9a59-7b3f0e0d5a11")
_DISPLAY_NAME = re.compile(r"^[ ,-.0-9A-Za-z]{2,63}$")
_MEBIBYTE = 1024 * 1024

STATUS: dict[JobStatus, str] = {
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

SaladName = Annotated[
    str, StringConstraints(min_length=2, max_length=63, pattern=r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")
]
DisplayName = Annotated[
    str, StringConstraints(min_length=2, max_length=63, pattern=r"^[ ,-.0-9A-Za-z]+$")
]
Description = Annotated[str, StringConstraints(max_length=500, pattern=r"^.*$")]
JobStatusName = Literal["pending", "running", "succeeded", "cancelled", "failed"]
ActionName = Literal["created", "started", "succeeded", "cancelled", "failed"]


class SaladRequest(BaseModel):
    """A request body: unknown fields are ignored, as SaladCloud does."""

    model_config = ConfigDict(extra="ignore")


class QueuePrototype(SaladRequest):
    """Salad's request to create a queue."""

    name: SaladName
    display_name: DisplayName | None = None
    description: Description | None = None


class QueuePatch(SaladRequest):
    """Salad's merge patch of a queue: a field set to ``null`` is cleared."""

    display_name: DisplayName | None = None
    description: Description | None = None


class QueueJobPrototype(SaladRequest):
    """Salad's request to create a queue job."""

    input: Any = Field(description="The job input. May be any valid JSON.")
    metadata: dict[str, Any] | None = Field(default=None, max_length=20)
    webhook: AnyUrl | None = Field(
        default=None, description="The URL the job's webhook is sent to (HTTP or HTTPS)."
    )


class ProblemDetails(BaseModel):
    """An RFC 7807 problem, as SaladCloud answers errors."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = Field(min_length=1)


class Full(BaseModel):
    """A response shape whose every field is sent, defaults included: the routes drop unset
    fields (so that optional ones with no value are left out), and these have no optional
    ones."""

    def model_post_init(self, context: Any, /) -> None:
        """Count every field as set."""
        self.__pydantic_fields_set__.update(type(self).model_fields)


class QueueJobEvent(BaseModel):
    action: ActionName
    time: datetime


class QueueJob(BaseModel):
    """Salad's QueueJob. Never carries ``webhook``: its published schema gives that field a
    date-time pattern, which the official SDK enforces."""

    id: str
    input: Any
    status: JobStatusName
    events: list[QueueJobEvent]
    create_time: datetime
    update_time: datetime
    metadata: dict[str, Any] = Field(default_factory=dict)
    output: Any = None


class QueueJobCollection(BaseModel):
    items: list[QueueJob]


class InstanceStatusCount(Full):
    allocating_count: int = 0
    creating_count: int = 0
    running_count: int = 0
    stopping_count: int = 0


class ContainerGroupState(Full):
    status: Literal["pending", "running", "stopped", "succeeded", "failed", "deploying"]
    start_time: datetime
    finish_time: datetime
    instance_status_counts: InstanceStatusCount


class ContainerResources(Full):
    cpu: int = Field(ge=1)
    memory: int = Field(ge=1024, description="MB")
    gpu_classes: list[str] = Field(default_factory=list)


class Container(Full):
    image: str
    command: list[str] | None
    resources: ContainerResources


class QueueConnection(Full):
    path: str
    port: int
    queue_name: str


class HttpProbe(Full):
    path: str
    port: int
    scheme: Literal["http"] = "http"
    headers: list[dict[str, str]] = Field(default_factory=list)


class ReadinessProbe(Full):
    http: HttpProbe
    failure_threshold: int = 3
    initial_delay_seconds: int = 0
    period_seconds: int = 1
    success_threshold: int = 1
    timeout_seconds: int = 1


class ContainerGroup(BaseModel):
    """A worker definition bound to a queue, as Salad describes a container group."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    name: str
    display_name: str
    organization_name: str
    project_name: str
    container: Container
    autostart_policy: bool = True
    country_codes: list[str] = Field(default_factory=list)
    current_state: ContainerGroupState
    pending_change: bool = False
    priority: Literal["high", "medium", "low", "batch"] = "high"
    replicas: int
    restart_policy: Literal["always", "on_failure", "never"] = "always"
    version: int
    create_time: datetime
    update_time: datetime
    queue_connection: QueueConnection
    readiness_probe: ReadinessProbe | None = Field(
        default=None, description="Only when the worker has a readiness path."
    )
    scheduled_scaling_enabled: bool = Field(default=False, alias="scheduled-scaling-enabled")
    scaling_actions: list[dict[str, Any]] = Field(default_factory=list, alias="scaling-actions")

    def model_post_init(self, context: Any, /) -> None:
        """Count every field as set but the optional readiness probe."""
        given = "readiness_probe" in self.__pydantic_fields_set__
        self.__pydantic_fields_set__.update(type(self).model_fields)
        if not given:
            self.__pydantic_fields_set__.discard("readiness_probe")


class SaladQueue(BaseModel):
    """Salad's Queue."""

    id: str
    name: str
    display_name: str
    container_groups: list[ContainerGroup]
    create_time: datetime
    update_time: datetime
    description: str = ""
    current_queue_length: int = 0


class QueueCollection(BaseModel):
    items: list[SaladQueue]


class WebhookSecretKey(BaseModel):
    secret_key: Annotated[str, StringConstraints(pattern=r"^[+/=0-9A-Za-z]{44,172}$")]


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
        **_fields(metadata=row.job_metadata or None, output=row.output if done else None),
    )


def job_json(session: Session, row: Job) -> dict[str, Any]:
    """The job's Salad JSON, as the API answers it (for its webhook)."""
    return job(session, row).model_dump(mode="json", exclude_unset=True)


def _container_group(queue: Queue, organization: str, session: Session) -> ContainerGroup | None:
    """The queue's default definition as a container group, when it is an HTTP worker."""
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
    return ContainerGroup(
        id=str(uuid.uuid5(_QUEUE_IDS, f"{queue_id(queue)}::{definition.id}")),
        name=definition.name,
        display_name=definition.name,
        organization_name=organization,
        project_name=queue.project,
        container=Container(
            image=spec["image"],
            command=spec.get("command"),
            resources=ContainerResources(
                cpu=max(1, math.ceil(resources.get("cpus") or 1)),
                memory=max(1024, (memory or 0) // _MEBIBYTE),
            ),
        ),
        current_state=ContainerGroupState(
            status="running" if not queue.paused else "stopped",
            start_time=definition.create_time,
            finish_time=definition.create_time,
            instance_status_counts=InstanceStatusCount(),
        ),
        replicas=int(worker.get("replicas") or 1),
        version=definition.version,
        create_time=definition.create_time,
        update_time=definition.create_time,
        queue_connection=QueueConnection(path=worker["path"], port=port, queue_name=queue.name),
        **_fields(
            readiness_probe=ReadinessProbe(http=HttpProbe(path=readiness, port=port))
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
        .where(col(Job.status).in_(list(WAITING)))
    )
    return int(session.exec(statement).one())


def queue(session: Session, row: Queue, organization: str) -> SaladQueue:
    """The queue as Salad shows it, with its worker container groups and waiting count."""
    group = _container_group(row, organization, session)
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


def page_of_jobs(session: Session, row: Queue, page: int, page_size: int) -> list[Job]:
    """Page ``page`` (from 1) of the queue's jobs, newest first."""
    statement = (
        select(Job)
        .where(Job.project == row.project, Job.queue == row.name)
        .order_by(sa.desc(col(Job.seq)))
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    return list(session.exec(statement).all())
