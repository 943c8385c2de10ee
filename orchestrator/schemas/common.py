"""Shapes every resource shares: the strict request base, pages, errors, health, and the
time, duration and naming types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from orchestrator.rules.fields import (
    Text,
)
from orchestrator.rules.loop_states import LoopState

Item = TypeVar("Item")


class Request(BaseModel):
    """Unknown fields are refused, so a misspelt field is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


def parse_time(value: Any) -> Any:
    # Unix seconds (a number) or an RFC 3339 string; a time without an offset is taken as UTC.
    if isinstance(value, bool):
        raise ValueError("must be an RFC 3339 time or unix seconds")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError("is out of range") from None
    return value


def utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None


DisplayName = Annotated[Text, StringConstraints(max_length=255)]
Description = Annotated[Text, StringConstraints(max_length=4096)]
Priority = Annotated[int, Field(ge=-1_000_000, le=1_000_000)]
Concurrency = Annotated[int, Field(ge=1, le=1_000_000)]

Time = Annotated[
    datetime,
    BeforeValidator(parse_time),
    AfterValidator(utc),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
            "description": "An RFC 3339 time (UTC when it has no offset) or unix seconds.",
        },
        mode="validation",
    ),
]


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
    """``/healthz``: ``degraded`` while Docker is away or a background loop has died."""

    status: str
    database: str
    docker: str
    docker_error: str | None = None
    docker_unavailable_since: datetime | None = None
    runner: str
    # Each background loop of the process by name (runner, heartbeat, worker-reaper,
    # scheduler, http-targets, webhook-sender, retention): only ``running`` is well.
    loops: dict[str, LoopState] = Field(default_factory=dict)
