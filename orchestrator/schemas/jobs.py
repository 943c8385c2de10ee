"""Jobs: a submission, a job as shown (secret values as ***) and its events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    Field,
    StringConstraints,
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
from orchestrator.rules.states import JobStatus
from orchestrator.schemas.common import NAMED_KEYS_ONLY, Duration, Priority, Request, Time
from orchestrator.storage.models import (
    Job,
    JobEvent,
)


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
