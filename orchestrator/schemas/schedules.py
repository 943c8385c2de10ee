"""Schedules: cron and one-shot targets (a job or an HTTP request), their runs and previews."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from orchestrator.rules.fields import (
    Duration,
    JsonDocument,
    Name,
    Text,
)
from orchestrator.rules.masking import MIN_SECRET_CHARS
from orchestrator.rules.units import MAX_DURATION_SECONDS, parse_duration
from orchestrator.schemas.common import Request, parse_time, utc
from orchestrator.schemas.jobs import JobCreate

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
    return value if value.tzinfo is None else utc(value)  # type: ignore[return-value]


LocalTime = Annotated[
    datetime,
    BeforeValidator(parse_time),
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
# The words of ``rules.schedule_states.ScheduleStatus``, listed as the OpenAPI document shows them.
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
