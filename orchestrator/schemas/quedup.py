"""Quedup's API shapes: a job (an HTTP request, one-shot or cron), its create and update bodies,
one run's attempt, and its ``{"error": ...}`` body. The routes are ``api/compat/quedup.py``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, AwareDatetime, BaseModel, BeforeValidator, Field, StringConstraints

from orchestrator.rules.fields import Text
from orchestrator.schemas.common import Request as StrictRequest
from orchestrator.schemas.schedules import HeaderName, HeaderValue, HttpMethod

QuedupName = Annotated[Text, StringConstraints(min_length=1, max_length=200)]
CronText = Annotated[Text, StringConstraints(max_length=255)]


def _text_only(value: Any) -> Any:
    # Quedup types the body as a string. A JSON document given as one (an older client's
    # habit) is refused rather than sent as its text: the job would not show what was given.
    if value is not None and not isinstance(value, str):
        raise ValueError(
            "must be a string, as Quedup types it: send a JSON document as its text "
            '(e.g. "{\\"key\\": 1}")'
        )
    return value


# The request body a job sends, as text; null or absent: none.
QuedupBody = Annotated[
    Annotated[str, StringConstraints(max_length=1_000_000)] | None, BeforeValidator(_text_only)
]


class QuedupError(BaseModel):
    """Quedup's error body."""

    error: str = Field(description="What was wrong, naming the field.")


class QuedupJobCreate(StrictRequest):
    """Quedup's CreateJobRequest: ``schedule`` (cron, UTC) wins over ``run_at``."""

    method: HttpMethod
    name: QuedupName = Field(description="Unique among the Quedup jobs.")
    url: AnyHttpUrl
    body: QuedupBody = None
    headers: dict[HeaderName, HeaderValue] | None = None
    run_at: AwareDatetime | None = None
    schedule: CronText | None = None


class QuedupJobUpdate(StrictRequest):
    """The fields to change; ``status`` pauses (``paused``) or resumes (``active``) the job."""

    method: HttpMethod | None = None
    name: QuedupName | None = None
    url: AnyHttpUrl | None = None
    body: QuedupBody = None
    headers: dict[HeaderName, HeaderValue] | None = None
    run_at: AwareDatetime | None = None
    schedule: CronText | None = None
    status: Literal["active", "paused"] | None = None


class QuedupJob(BaseModel):
    """Quedup's Job; credential headers are shown as ***."""

    id: str
    name: str
    method: str
    url: str
    body: str = Field(description="The request body; empty when the job sends none.")
    headers: dict[str, str]
    schedule: str | None
    next_run_at: datetime | None = Field(description="Null once the job is complete.")
    status: Literal["active", "paused", "failed", "completed"]


class QuedupRun(BaseModel):
    """One attempt of one run: when, the response's status code, how long, which attempt."""

    time: datetime
    status: int | None = Field(description="The HTTP status code; null if none came back.")
    duration_ms: float | None
    attempt: int
    error: str | None
