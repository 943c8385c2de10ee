"""SaladCloud's Queue API shapes, as its OpenAPI document names them: the request bodies (unknown
fields ignored, as SaladCloud does), its RFC 7807 problem, and the queue, job and container
group it answers with. Mapping our rows to them is ``services/salad.py``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AnyUrl, BaseModel, ConfigDict, Field, StringConstraints

SaladName = Annotated[
    str, StringConstraints(min_length=2, max_length=63, pattern=r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")
]
DisplayName = Annotated[
    str, StringConstraints(min_length=2, max_length=63, pattern=r"^[ ,-.0-9A-Za-z]+$")
]
Description = Annotated[str, StringConstraints(max_length=500, pattern=r"^.*$")]
JobStatusName = Literal["pending", "running", "succeeded", "cancelled", "failed"]
ActionName = Literal["created", "started", "succeeded", "cancelled", "failed"]
GroupStatus = Literal["pending", "running", "stopped", "succeeded", "failed", "deploying"]


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
    status: GroupStatus
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
