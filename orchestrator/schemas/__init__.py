"""API shapes: what requests may carry and what responses show.

Response shapes are built from table rows by the ``from_row`` constructors; secret values have
no field to live in, so they cannot leak by accident.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from orchestrator.rules.fields import (
    EnvName,
    EnvValue,
    JsonDocument,
    Name,
    ParameterName,
    ParameterValue,
    Text,
)
from orchestrator.rules.masking import MASK, MIN_SECRET_CHARS, public_url
from orchestrator.rules.roles import Role
from orchestrator.rules.states import JobStatus
from orchestrator.rules.units import MAX_DURATION_SECONDS, parse_duration
from orchestrator.storage.models import (
    AuditEvent,
    Definition,
    Job,
    JobEvent,
    Project,
    Queue,
    RunnerRecord,
    Token,
)

Item = TypeVar("Item")


class Request(BaseModel):
    """Unknown fields are refused, so a misspelt field is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


def _parse_time(value: Any) -> Any:
    # Unix seconds (a number) or an RFC 3339 string; a time without an offset is taken as UTC.
    if isinstance(value, bool):
        raise ValueError("must be an RFC 3339 time or unix seconds")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError("is out of range") from None
    return value


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None


class ProjectCreate(Request):
    name: Name
    description: Annotated[Text, StringConstraints(max_length=4096)] = ""


class ProjectPublic(BaseModel):
    name: str
    description: str
    create_time: datetime

    @classmethod
    def from_row(cls, row: Project) -> ProjectPublic:
        return cls(name=row.name, description=row.description, create_time=row.create_time)


DisplayName = Annotated[Text, StringConstraints(max_length=255)]
Description = Annotated[Text, StringConstraints(max_length=4096)]
Priority = Annotated[int, Field(ge=-1_000_000, le=1_000_000)]
Concurrency = Annotated[int, Field(ge=1, le=1_000_000)]


class QueueCreate(Request):
    name: Name
    display_name: DisplayName = ""
    description: Description = ""
    priority: Priority = 0
    max_concurrency: Concurrency | None = None
    paused: bool = False
    default_definition: Text | None = None


class QueueUpdate(Request):
    display_name: DisplayName | None = None
    description: Description | None = None
    priority: Priority | None = None
    max_concurrency: Concurrency | None = None
    paused: bool | None = None
    default_definition: Text | None = None


class QueuePublic(BaseModel):
    project: str
    name: str
    display_name: str
    description: str
    priority: int
    max_concurrency: int | None
    paused: bool
    default_definition: str | None
    current_queue_length: int
    running: int
    create_time: datetime
    update_time: datetime

    @classmethod
    def from_row(cls, row: Queue, *, waiting: int, running: int) -> QueuePublic:
        return cls(
            project=row.project,
            name=row.name,
            display_name=row.display_name or row.name,
            description=row.description,
            priority=row.priority,
            max_concurrency=row.max_concurrency,
            paused=row.paused,
            default_definition=row.default_definition,
            current_queue_length=waiting,
            running=running,
            create_time=row.create_time,
            update_time=row.update_time,
        )


class DefinitionPublic(BaseModel):
    project: str
    name: str
    version: int
    reference: str
    spec: dict[str, Any]
    create_time: datetime

    @classmethod
    def from_row(cls, row: Definition) -> DefinitionPublic:
        return cls(
            project=row.project,
            name=row.name,
            version=row.version,
            reference=f"{row.name}:{row.version}",
            spec=row.spec,
            create_time=row.create_time,
        )


# A dict keyed by a pattern is documented with `patternProperties`, which lets any other key
# through; these dicts refuse keys that do not match, so the document says so.
NAMED_KEYS_ONLY: dict[str, Any] = {"additionalProperties": False}

# The OpenAPI document shows what the before-validators accept, not just the Python type.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION_SECONDS},
                {"type": "string", "pattern": r"^([1-9]\d*(\.\d+)?|([1-9]\d*(ms|s|m|h|d))+)$"},
            ],
            "description": "Seconds, or a duration such as 30s, 10m or 1h30m.",
        },
        mode="validation",
    ),
]
Time = Annotated[
    datetime,
    BeforeValidator(_parse_time),
    AfterValidator(_utc),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
            "description": "An RFC 3339 time (UTC when it has no offset) or unix seconds.",
        },
        mode="validation",
    ),
]


class JobCreate(Request):
    definition: Text | None = None
    queue: Name = "default"
    name: Annotated[Text, StringConstraints(min_length=1, max_length=255)] | None = None
    parameters: dict[ParameterName, ParameterValue] = Field(
        default_factory=dict, json_schema_extra=NAMED_KEYS_ONLY
    )
    command: list[Text] | None = None
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, json_schema_extra=NAMED_KEYS_ONLY)
    secret_env: dict[EnvName, Text] = Field(
        default_factory=dict,
        json_schema_extra=NAMED_KEYS_ONLY,
        description=f"Stored encrypted, shown as ***. Each value at least {MIN_SECRET_CHARS} "
        "characters (a shorter one cannot be masked without revealing it), at most "
        "ORCH_MAX_SECRET_BYTES bytes.",
    )
    input: JsonDocument = None
    metadata: dict[Text, JsonDocument] = Field(default_factory=dict)
    webhook: AnyHttpUrl | None = None
    priority: Priority = 0
    timeout: Duration | None = None
    schedule_at: Time | None = None


class JobPublic(BaseModel):
    id: str
    project: str
    queue: str
    definition: str
    name: str | None
    status: JobStatus
    priority: int
    attempt: int
    max_attempts: int
    interrupted_attempts: int
    command: list[str] | None
    parameters: dict[str, Any]
    env: dict[str, str]
    secret_env: dict[str, str]
    input: Any
    metadata: dict[str, Any]
    output: Any
    exit_code: int | None
    error: str | None
    container_id: str | None
    runner: str | None
    webhook: str | None
    timeout: float | None
    schedule_at: datetime | None
    create_time: datetime
    update_time: datetime
    start_time: datetime | None
    finish_time: datetime | None

    @classmethod
    def from_row(cls, row: Job) -> JobPublic:
        return cls(
            id=row.id,
            project=row.project,
            queue=row.queue,
            definition=f"{row.definition_name}:{row.definition_version}",
            name=row.name,
            status=row.status,
            priority=row.priority,
            attempt=row.attempt,
            max_attempts=row.max_attempts,
            interrupted_attempts=row.interrupted_attempts,
            command=row.command,
            parameters=row.parameters,
            env=row.env,
            secret_env=dict.fromkeys(row.secret_env_keys, MASK),
            input=row.input,
            metadata=row.job_metadata,
            output=row.output,
            exit_code=row.exit_code,
            error=row.error,
            container_id=row.container_id,
            runner=row.runner,
            webhook=public_url(row.webhook) if row.webhook else None,
            timeout=row.timeout,
            schedule_at=row.schedule_at,
            create_time=row.create_time,
            update_time=row.update_time,
            start_time=row.start_time,
            finish_time=row.finish_time,
        )


class JobEventPublic(BaseModel):
    id: int
    job_id: str
    time: datetime
    type: str
    status: JobStatus
    attempt: int
    detail: dict[str, Any]

    @classmethod
    def from_row(cls, row: JobEvent) -> JobEventPublic:
        assert row.id is not None
        return cls(
            id=row.id,
            job_id=row.job_id,
            time=row.time,
            type=row.type,
            status=row.status,
            attempt=row.attempt,
            detail=row.detail,
        )


class ErrorPublic(BaseModel):
    """The body of every error response."""

    code: str = Field(description="A stable error code, e.g. `invalid_request`, `not_found`.")
    message: str = Field(description="What is wrong, in words; never echoes a secret value.")
    field: str | None = Field(
        description="The request part at fault (`body`, `name`, `parameters.frame`...), or null."
    )


class Page(BaseModel, Generic[Item]):
    items: list[Item]
    next_cursor: str | None = None


class Health(BaseModel):
    status: str
    database: str
    docker: str
    docker_error: str | None = None
    docker_unavailable_since: datetime | None = None
    runner: str


class TokenCreate(Request):
    name: Annotated[Text, StringConstraints(min_length=1, max_length=255)]
    role: Role
    project: Name | None = None


class TokenPublic(BaseModel):
    id: str
    name: str
    role: Role
    project: str | None
    prefix: str
    create_time: datetime
    revoke_time: datetime | None

    @classmethod
    def from_row(cls, row: Token) -> TokenPublic:
        return cls(
            id=row.id,
            name=row.name,
            role=Role(row.role),
            project=row.project,
            prefix=row.prefix,
            create_time=row.create_time,
            revoke_time=row.revoke_time,
        )


class TokenCreated(TokenPublic):
    token: str = Field(description="The token itself: shown once, never again.")


class AuditEventPublic(BaseModel):
    id: int
    time: datetime
    project: str | None
    action: str
    resource: str
    actor_id: str | None
    actor_name: str | None
    detail: dict[str, Any]

    @classmethod
    def from_row(cls, row: AuditEvent) -> AuditEventPublic:
        assert row.id is not None
        return cls(
            id=row.id,
            time=row.time,
            project=row.project,
            action=row.action,
            resource=row.resource,
            actor_id=row.actor_id,
            actor_name=row.actor_name,
            detail=row.detail,
        )


# --- schedules ------------------------------------------------------------------------------


def _delay(value: Any) -> Any:
    # A retry delay may be zero ("retry at once"), which a Duration may not.
    if isinstance(value, bool):
        raise ValueError("must be seconds or a duration such as 5m")
    if value in (0, "0", "0s"):
        return 0.0
    return parse_duration(value)


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


Delay = Annotated[
    float,
    BeforeValidator(_delay),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": MAX_DURATION_SECONDS},
                {"type": "string", "pattern": r"^(0|0s|[1-9]\d*(\.\d+)?|([1-9]\d*(ms|s|m|h|d))+)$"},
            ],
            "description": "Seconds (0 for at once), or a duration such as 30s, 5m or 1h.",
        },
        mode="validation",
    ),
]
HttpMethod = Annotated[
    Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    BeforeValidator(_upper),
]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")]
HeaderValue = Annotated[Text, StringConstraints(max_length=8192, pattern=r"^[^\r\n]*$")]


def _aware_or_wall(value: datetime) -> datetime:
    # A time with an offset is an instant (kept in UTC); one without is a wall-clock time in
    # the schedule's time zone, converted by the service, which knows the zone.
    return value if value.tzinfo is None else _utc(value)  # type: ignore[return-value]


LocalTime = Annotated[
    datetime,
    BeforeValidator(_parse_time),
    AfterValidator(_aware_or_wall),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
            "description": "An RFC 3339 time; without an offset, a wall-clock time in the "
            "schedule's timezone; or unix seconds.",
        },
        mode="validation",
    ),
]
OverlapPolicy = Literal["allow", "skip", "replace"]
MissedPolicy = Literal["skip", "run_once"]
ScheduleStatus = Literal["active", "paused", "completed", "failed"]


class HttpTarget(Request):
    """An HTTP request the orchestrator sends at each tick, retried on errors and non-2xx."""

    method: HttpMethod = "POST"
    url: AnyHttpUrl
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    secret_headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        description="Headers stored encrypted and never shown (e.g. Authorization); each value "
        f"at least {MIN_SECRET_CHARS} characters, at most ORCH_MAX_SECRET_BYTES bytes.",
    )
    body: JsonDocument = Field(
        default=None, description="A string is sent as it is; anything else as JSON."
    )
    timeout: Duration | None = None
    retry_delays: Annotated[list[Delay], Field(max_length=20)] | None = Field(
        default=None,
        description="Delays before each retry; default 0, 5m, 15m, 1h, 3h, 6h (7 attempts).",
    )


class ScheduleTarget(Request):
    """Exactly one of ``job`` (a job submission) and ``http`` (an HTTP request)."""

    job: JobCreate | None = None
    http: HttpTarget | None = None


class ScheduleCreate(Request):
    name: Name
    cron: Annotated[Text, StringConstraints(max_length=255)] | None = Field(
        default=None, description="5 fields, or @hourly, @daily, @weekly, @monthly, @yearly."
    )
    run_at: LocalTime | None = Field(
        default=None, description="A one-shot time; cron wins if both."
    )
    timezone: Annotated[Text, StringConstraints(max_length=64)] = "UTC"
    target: ScheduleTarget
    overlap: OverlapPolicy = "allow"
    on_missed: MissedPolicy = "skip"
    missed_window: Duration = 3600.0
    paused: bool = False


class ScheduleUpdate(Request):
    """The fields to change; ``cron: null`` with a ``run_at`` turns a cron schedule into a
    one-shot."""

    cron: Annotated[Text, StringConstraints(max_length=255)] | None = None
    run_at: LocalTime | None = None
    timezone: Annotated[Text, StringConstraints(max_length=64)] | None = None
    target: ScheduleTarget | None = None
    overlap: OverlapPolicy | None = None
    on_missed: MissedPolicy | None = None
    missed_window: Duration | None = None
    paused: bool | None = None


class SchedulePublic(BaseModel):
    id: str
    project: str
    name: str
    cron: str | None
    run_at: datetime | None
    timezone: str
    target: dict[str, Any] = Field(description="As given, with secret values shown as ***.")
    overlap: OverlapPolicy
    on_missed: MissedPolicy
    missed_window: float
    paused: bool
    status: ScheduleStatus
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_outcome: str | None
    create_time: datetime
    update_time: datetime


class ScheduleRunPublic(BaseModel):
    id: int
    schedule: str
    tick: datetime = Field(
        description="The instant the run was due (the trigger time for a "
        "manual run; the first missed instant for a missed record)."
    )
    trigger: str = Field(description="cron, run_at, catch_up or manual.")
    fire_time: datetime
    status: str = Field(
        description="A job run: the job's status (or failed when it could not be submitted); "
        "an HTTP run: pending, running, succeeded, failed or replaced; missed; skipped."
    )
    job_id: str | None
    attempts: int
    next_attempt_at: datetime | None
    status_code: int | None
    duration_ms: float | None
    response_body: str | None
    error: str | None
    attempt_log: list[dict[str, Any]]
    detail: dict[str, Any]
    finish_time: datetime | None


class FireTime(BaseModel):
    local: datetime = Field(description="In the schedule's time zone.")
    utc: datetime


class SchedulePreview(BaseModel):
    schedule: str
    timezone: str
    items: list[FireTime]


class RunnerPublic(BaseModel):
    name: str
    state: str
    hostname: str
    pid: int
    docker_host: str
    docker: str
    docker_error: str | None
    capacity: int
    running: int
    queues: list[str] | None
    version: str
    start_time: datetime
    heartbeat_time: datetime

    @classmethod
    def from_record(cls, row: RunnerRecord, state: str, running: int) -> RunnerPublic:
        """The API shape of a runner's row, its reported state and its running count."""
        return cls(
            name=row.name,
            state=state,
            hostname=row.hostname,
            pid=row.pid,
            docker_host=row.docker_host,
            docker=row.docker,
            docker_error=row.docker_error,
            capacity=row.capacity,
            running=running,
            queues=row.queues,
            version=row.version,
            start_time=row.start_time,
            heartbeat_time=row.heartbeat_time,
        )


# --- webhooks -------------------------------------------------------------------------------


class WebhookAttemptPublic(BaseModel):
    time: datetime
    status_code: int | None = Field(description="The receiver's HTTP status; null: no answer.")
    duration_ms: float
    error: str | None


class WebhookDeliveryPublic(BaseModel):
    """One webhook message sent (or to be sent) for a job; a redelivery is a delivery too."""

    number: int = Field(description="The delivery's number within the job, from 1.")
    message_id: str = Field(description="The `webhook-id` header: the same for a redelivery.")
    event_type: str = Field(description="`job.succeeded`, `job.failed` or `job.cancelled`.")
    url: str = Field(description="The receiver's URL, its userinfo masked.")
    status: str = Field(description="`pending`, `sending`, `delivered` or `failed`.")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[WebhookAttemptPublic]
    redelivery_of: int | None = Field(description="The number of the delivery this repeats.")
    create_time: datetime
    next_attempt_at: datetime | None
    delivered_time: datetime | None


class WebhookSecretPublic(BaseModel):
    secret: str = Field(
        description="The project's Standard Webhooks signing secret (`whsec_` + base64)."
    )
