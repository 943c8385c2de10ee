"""Daestro's client API shapes: the submit body (a definition as ``project::name:version``, a
queue as ``project::queue``, ``container_env`` entries that may be ``sensitive``), its
``{"ok": ...}`` envelopes and its job states. The routes are ``api/compat/daestro.py``."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from orchestrator.errors import InvalidRequest
from orchestrator.rules.fields import (
    NAME_PATTERN,
    EnvName,
    EnvValue,
    ParameterName,
    ParameterValue,
    Text,
)
from orchestrator.schemas.common import Request as StrictRequest
from orchestrator.schemas.common import Time

_NAME = NAME_PATTERN.removeprefix("^").removesuffix("$")
DEFINITION_PATTERN = rf"^(?P<project>{_NAME})::(?P<name>{_NAME})(?::(?P<version>[0-9]{{1,10}}))?$"
QUEUE_PATTERN = rf"^(?P<project>{_NAME})::(?P<name>{_NAME})$"

DaestroState = Literal[
    "submitted",
    "pending",
    "runnable",
    "starting",
    "running",
    "cancelling",
    "cancelled",
    "timeout",
    "completed",
    "failed",
    "error",
]


def parse_definition(text: str) -> tuple[str, str, int | None]:
    """``project::name:version`` (or ``project::name``, the latest) -> (project, name, version)."""
    match = re.fullmatch(DEFINITION_PATTERN, text)
    if match is None:
        raise InvalidRequest(
            "job_definition: must be 'project_code::job_definition_name:version' "
            "(e.g. 'my-project::hello-world:1')",
            field="job_definition",
        )
    version = match.group("version")
    return match.group("project"), match.group("name"), int(version) if version else None


def parse_queue(text: str) -> tuple[str, str]:
    """``project::queue`` -> (project, queue)."""
    match = re.fullmatch(QUEUE_PATTERN, text)
    if match is None:
        raise InvalidRequest(
            "job_queue: must be 'project_code::job_queue_name' "
            "(e.g. 'my-project::first-job-queue')",
            field="job_queue",
        )
    return match.group("project"), match.group("name")


def _definition_text(text: str) -> str:
    try:
        parse_definition(text)
    except InvalidRequest as exc:
        raise ValueError(exc.message.removeprefix("job_definition: ")) from None
    return text


def _queue_text(text: str) -> str:
    try:
        parse_queue(text)
    except InvalidRequest as exc:
        raise ValueError(exc.message.removeprefix("job_queue: ")) from None
    return text


DefinitionText = Annotated[
    str,
    AfterValidator(_definition_text),
    Field(
        json_schema_extra={"pattern": DEFINITION_PATTERN},
        description="`project_code::job_definition_name:version` (no version: the latest).",
    ),
]
QueueText = Annotated[
    str,
    AfterValidator(_queue_text),
    Field(json_schema_extra={"pattern": QUEUE_PATTERN}, description="`project_code::queue_name`"),
]
JobName = Annotated[Text, StringConstraints(min_length=1, max_length=255)]


class DaestroEnvValue(StrictRequest):
    """One ``container_env`` entry: a sensitive value is stored encrypted and never shown."""

    value: EnvValue
    sensitive: bool = False


class DaestroJobCreate(StrictRequest):
    """Daestro's Job Submit body."""

    job_definition: DefinitionText
    job_queue: QueueText
    name: JobName | None = Field(
        default=None, description="Unique among the queue's unfinished jobs."
    )
    container_cmd: list[Text] | None = Field(
        default=None, description="Replaces the definition's command; `Param::name` placeholders."
    )
    container_cmd_parameter: dict[ParameterName, ParameterValue] | None = None
    container_env: dict[EnvName, DaestroEnvValue] | None = None
    schedule_at: Time | None = None


class DaestroError(BaseModel):
    """Daestro's error envelope."""

    ok: Literal[False] = False
    message: str = Field(description="What was wrong, naming the field.")


class DaestroJobId(BaseModel):
    """The id of a submitted job."""

    id: str


class DaestroAccepted(BaseModel):
    """Daestro's answer to a submit."""

    ok: Literal[True] = True
    data: DaestroJobId


class DaestroJob(BaseModel):
    """A job as Daestro shows it; ``system_note`` says why it failed (null otherwise)."""

    id: str
    name: str | None
    state: DaestroState
    system_note: str | None
    schedule_at: datetime | None
    created_at: datetime
    updated_at: datetime


class DaestroJobResponse(BaseModel):
    """Daestro's envelope around one job."""

    ok: Literal[True] = True
    data: DaestroJob
