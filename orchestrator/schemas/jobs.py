"""Jobs: a submission, a job as shown (secret values as ***) and its events."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    Field,
    StringConstraints,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from orchestrator.errors import InvalidRequest
from orchestrator.rules.containers import ContainerSpec
from orchestrator.rules.definition_spec import RetryPolicy
from orchestrator.rules.dependencies import MAX_DEPENDENCIES, Condition, DependencyType
from orchestrator.rules.fields import (
    Duration,
    EnvName,
    EnvValue,
    JsonDocument,
    Name,
    ParameterName,
    ParameterValue,
    Text,
)
from orchestrator.rules.masking import MASK, MIN_SECRET_CHARS, public_url
from orchestrator.rules.reasons import FailureReason
from orchestrator.rules.states import JobStatus
from orchestrator.schemas.common import Priority, Request, Time
from orchestrator.storage.models import (
    Job,
    JobDependency,
    JobEvent,
)

JobId = Annotated[Text, StringConstraints(min_length=1, max_length=36)]


class DependencyCreate(Request):
    """One job this one waits for (``depends_on``); on an array submission, or the array's
    children each waiting for a child (``type``)."""

    # Before ``job``, whose check reads it.
    type: DependencyType | None = Field(
        default=None,
        description="Only on an array submission. `N_TO_N`: child i waits for child i of "
        "`job`, an array of the same size; `SEQUENTIAL`: child i waits for child i-1 of this "
        "array. Omitted: the job (every child of an array) waits for the whole of `job`.",
    )
    job: JobId | None = Field(
        default=None,
        validate_default=True,
        description="The id of an existing job of the same project (an array job: the whole "
        "array). Omitted with `SEQUENTIAL`, whose children wait for one another.",
    )
    on: Condition = Field(
        default=Condition.SUCCEEDED,
        description="`succeeded`: the dependency must succeed, else this job fails with "
        "`dependency_failed`; `finished`: any end of the dependency releases this job.",
    )

    @field_validator("job")
    @classmethod
    def _names_its_job(cls, value: str | None, info: ValidationInfo) -> str | None:
        sequential = info.data.get("type") is DependencyType.SEQUENTIAL
        if sequential and value is not None:
            raise ValueError("a SEQUENTIAL dependency names no job (child i waits for child i-1)")
        if not sequential and value is None:
            raise ValueError("required: the id of the job to wait for")
        return value


class ArrayRequest(Request):
    """An array job: one parent and ``size`` children indexed 0..size-1."""

    size: int = Field(
        description="How many children: 2 to ORCH_ARRAY_MAX_SIZE (10,000 by default)."
    )


class ArrayChildren(BaseModel):
    """An array parent's children: how many, and how many are in each status."""

    size: int
    pending: int = 0
    scheduled: int = 0
    queued: int = 0
    starting: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0


class JobCreate(Request):
    definition: Text | None = None
    queue: Name = "default"
    name: Annotated[Text, StringConstraints(min_length=1, max_length=255)] | None = None
    parameters: dict[ParameterName, ParameterValue] = Field(default_factory=dict)
    command: list[Text] | None = None
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    secret_env: dict[EnvName, Text] = Field(
        default_factory=dict,
        description=f"Stored encrypted, shown as ***. Each value at least {MIN_SECRET_CHARS} "
        "characters (a shorter one cannot be masked without revealing it), at most "
        "ORCH_MAX_SECRET_BYTES bytes.",
    )
    input: JsonDocument = None
    metadata: dict[Text, JsonDocument] = Field(default_factory=dict)
    webhook: AnyHttpUrl | None = None
    priority: Priority = 0
    timeout: Duration | None = None
    retry: RetryPolicy | None = Field(
        default=None,
        description="This job's own retry policy, over its definition's (as AWS Batch's "
        "`retryStrategy` on a submit): each field given (`attempts`, `on_exit_codes`, `on`, "
        "`backoff`) replaces the definition's, the others are kept.",
    )
    schedule_at: Time | None = None
    array: ArrayRequest | None = Field(
        default=None,
        description="Make an array job: a parent and `size` children, each a job of its own "
        "with `ORCH_ARRAY_INDEX` and `ORCH_ARRAY_SIZE` in its environment (and "
        "`Param::array_index`, `Param::array_size` in its command).",
    )
    depends_on: list[DependencyCreate] = Field(
        default_factory=list,
        description=f"Jobs this one waits for, `pending`, until they end (at most "
        f'{MAX_DEPENDENCIES}). With any, `input` may be `{{"from": [ids]}}`: the job then '
        'gets its dependencies\' outputs as its input, `{"<id>": <output>, ...}`.',
    )

    @field_validator("depends_on")
    @classmethod
    def _once_each(cls, value: list[DependencyCreate]) -> list[DependencyCreate]:
        ids = [dependency.job or str(dependency.type) for dependency in value]
        if len(set(ids)) != len(ids):
            raise ValueError("a job is named twice")
        return value

    @field_serializer("retry")
    def _retry_as_given(self, retry: RetryPolicy | None) -> dict[str, Any] | None:
        # The fields given, an empty ``on`` included: a schedule stores its job target dumped,
        # and the jobs it fires must lay the same fields over their definition's.
        return None if retry is None else self.retry_fields()

    def retry_fields(self) -> dict[str, Any]:
        """The retry policy's fields this submission sets itself (JSON), to lay over its
        definition's; empty when it sets none."""
        if self.retry is None:
            return {}
        dumped = self.retry.model_dump(mode="json")
        # An empty ``on`` is left out of a dump; given, it clears the definition's rules.
        return {name: dumped.get(name, []) for name in self.retry.model_fields_set}

    @property
    def links_jobs(self) -> bool:
        """Whether the job it makes is linked to others: it depends on some, or it is an array
        (a parent with children)."""
        return bool(self.depends_on) or self.array is not None


class JobSummary(BaseModel):
    """A job as a list shows it: every field of bounded size, none of its documents."""

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
    exit_code: int | None
    error: str | None
    reason: FailureReason | None = Field(
        description="Why the last attempt did not succeed (see the README's failure reasons); "
        "null while it runs or once it succeeded."
    )
    container_id: str | None
    runner: str | None
    webhook: str | None
    timeout: float | None
    schedule_at: datetime | None
    create_time: datetime
    update_time: datetime
    start_time: datetime | None
    finish_time: datetime | None
    parent_id: str | None = Field(default=None, description="An array child's parent.")
    array_index: int | None = Field(default=None, description="An array child's index.")
    array_size: int | None = Field(
        default=None, description="The size of the array this job is the parent or a child of."
    )
    children: ArrayChildren | None = Field(
        default=None, description="An array parent's children, counted by status."
    )

    @classmethod
    def from_row(cls, row: Job, children: ArrayChildren | None = None) -> JobSummary:
        """The summary; reads only the row's ``SUMMARY_COLUMNS``."""
        return cls(**_summary_fields(row), children=children)


class DependencyPublic(BaseModel):
    """A job this one waits for, and where that job is now."""

    job: str
    type: DependencyType | None
    on: Condition
    status: JobStatus | None = Field(
        description="The dependency's status now; null once it was deleted (it had ended)."
    )

    @classmethod
    def from_row(cls, row: JobDependency, status: JobStatus | None) -> DependencyPublic:
        """The link as shown, with its dependency's status."""
        return cls(
            job=row.dependency_id,
            type=DependencyType(row.type) if row.type else None,
            on=Condition(row.release_on),
            status=status,
        )


class JobAttempt(BaseModel):
    """One attempt of a job, as its events tell it: who ran it, when, and how it ended."""

    attempt: int = Field(description="Its number, from 1.")
    runner: str | None = Field(description="The runner that claimed it.")
    container_id: str | None = Field(description="Its container, once started.")
    claim_time: datetime = Field(description="When a runner claimed it.")
    start_time: datetime | None = Field(description="When its container started.")
    end_time: datetime | None = Field(description="When it ended; null while it runs.")
    outcome: str | None = Field(
        description="How it ended: the event that ended it (`succeeded`, `failed`, `retrying`, "
        "`interrupted`, `runner_lost`, `cancelled`); null while it runs."
    )
    exit_code: int | None
    reason: FailureReason | None = Field(description="Why it did not succeed.")
    error: str | None


class JobPublic(JobSummary):
    """A job whole, as ``GET .../jobs/{id}`` and webhooks show it (secret values as ***)."""

    command: list[str] | None
    parameters: dict[str, Any]
    env: dict[str, str]
    secret_env: dict[str, str]
    input: Any
    metadata: dict[str, Any]
    output: Any
    depends_on: list[DependencyPublic] = Field(
        default_factory=list,
        description="The jobs it waits for (or waited for), in the submission's order.",
    )
    dependents: int = Field(default=0, description="How many jobs depend on this one.")
    retry: RetryPolicy | None = Field(
        default=None,
        description="The retry policy its attempts follow: its definition's, with the "
        "submission's own `retry` fields over it.",
    )

    @classmethod
    def from_row(
        cls,
        row: Job,
        children: ArrayChildren | None = None,
        depends_on: list[DependencyPublic] | None = None,
        dependents: int = 0,
    ) -> JobPublic:
        """The job with every field; an array parent's ``children`` counts, and its
        dependencies and dependents, as the caller read them (``services.job_queries.public``)."""
        documents = {name: read(row) for name, (_, read) in DOCUMENTS.items()}
        return cls(
            **_summary_fields(row),
            **documents,
            children=children,
            depends_on=depends_on or [],
            dependents=dependents,
            retry=row.container.get("retry"),
        )


def _summary_fields(row: Job) -> dict[str, Any]:
    return {
        "id": row.id,
        "project": row.project,
        "queue": row.queue,
        "definition": f"{row.definition_name}:{row.definition_version}",
        "name": row.name,
        "status": row.status,
        "priority": row.priority,
        "attempt": row.attempt,
        "max_attempts": row.max_attempts,
        "interrupted_attempts": row.interrupted_attempts,
        "exit_code": row.exit_code,
        "error": row.error,
        "reason": row.reason,
        "container_id": row.container_id,
        "runner": row.runner,
        "webhook": public_url(row.webhook) if row.webhook else None,
        "timeout": row.timeout,
        "schedule_at": row.schedule_at,
        "create_time": row.create_time,
        "update_time": row.update_time,
        "start_time": row.start_time,
        "finish_time": row.finish_time,
        "parent_id": row.parent_id,
        "array_index": row.array_index,
        "array_size": row.array_size,
    }


# The columns a summary reads (``seq`` orders a page and makes its cursor).
SUMMARY_COLUMNS: tuple[Any, ...] = (
    Job.seq, Job.id, Job.project, Job.queue, Job.definition_name, Job.definition_version,
    Job.name, Job.status, Job.priority, Job.attempt, Job.max_attempts,
    Job.interrupted_attempts, Job.exit_code, Job.error, Job.reason, Job.container_id, Job.runner,
    Job.webhook, Job.timeout, Job.schedule_at, Job.create_time, Job.update_time,
    Job.start_time, Job.finish_time, Job.parent_id, Job.array_index, Job.array_size,
)  # fmt: skip

# The fields a list leaves out unless ``?fields=`` names them, each with its column and how it
# is shown. Each may be large: input, metadata and output up to ORCH_MAX_INPUT_BYTES,
# ORCH_MAX_METADATA_BYTES and ORCH_MAX_OUTPUT_BYTES; command, parameters and env are bounded
# only by the request body (ORCH_MAX_BODY_BYTES) and the definition; secret_env's names too.
DOCUMENTS: dict[str, tuple[Any, Callable[[Job], Any]]] = {
    "command": (Job.command, lambda row: row.command),
    "parameters": (Job.parameters, lambda row: row.parameters),
    "env": (Job.env, lambda row: row.env),
    "secret_env": (Job.secret_env_keys, lambda row: dict.fromkeys(row.secret_env_keys, MASK)),
    "input": (Job.input, lambda row: row.input),
    "metadata": (Job.job_metadata, lambda row: row.job_metadata),
    "output": (Job.output, lambda row: row.output),
}


def list_fields(given: list[str] | None) -> tuple[str, ...]:
    """The document fields ``?fields=`` names (comma-separated, or repeated), in their order
    in ``DOCUMENTS``; an unknown name is refused naming ``fields`` and the name (400)."""
    names = {name.strip() for value in given or () for name in value.split(",")} - {""}
    for name in sorted(names):
        if name not in DOCUMENTS:
            raise InvalidRequest(
                f"fields: unknown field '{name}'; a list adds any of "
                f"{', '.join(DOCUMENTS)} (the other fields are always there)",
                field="fields",
            )
    return tuple(name for name in DOCUMENTS if name in names)


class JobListItem(JobSummary):
    """A job in a list: its summary, and the document fields ``?fields=`` names (the others
    are absent, not null)."""

    command: list[str] | None = Field(default=None, description="Only with ?fields=command.")
    parameters: dict[str, Any] | None = Field(
        default=None, description="Only with ?fields=parameters."
    )
    env: dict[str, str] | None = Field(default=None, description="Only with ?fields=env.")
    secret_env: dict[str, str] | None = Field(
        default=None, description="Only with ?fields=secret_env."
    )
    input: Any = Field(default=None, description="Only with ?fields=input.")
    metadata: dict[str, Any] | None = Field(default=None, description="Only with ?fields=metadata.")
    output: Any = Field(default=None, description="Only with ?fields=output.")


def list_item_json(
    row: Job, fields: tuple[str, ...], children: ArrayChildren | None = None
) -> bytes:
    """The job as a list item, as compact UTF-8 JSON: its summary and the named ``fields``
    (reads only those columns of the row); ``children``: an array parent's counts."""
    item = JobSummary.from_row(row, children).model_dump(mode="json")
    for name in fields:
        item[name] = DOCUMENTS[name][1](row)
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()


# Pieces of a page smaller than this are sent together (bytes), larger ones alone.
PAGE_CHUNK_BYTES = 65_536


def page_chunks(items: list[bytes], next_cursor: str | None) -> Iterator[bytes]:
    """A ``Page`` of items that are JSON already, a chunk at a time. It consumes ``items``:
    each is let go once sent, so a page is never held twice (as its items and as one body)."""
    items.reverse()
    buffer = bytearray(b'{"items":[')
    separator = b""
    while items:
        item = items.pop()
        buffer += separator
        separator = b","
        if len(item) >= PAGE_CHUNK_BYTES:
            yield bytes(buffer)
            buffer.clear()
            yield item
        else:
            buffer += item
            if len(buffer) >= PAGE_CHUNK_BYTES:
                yield bytes(buffer)
                buffer.clear()
    buffer += b'],"next_cursor":' + json.dumps(next_cursor).encode() + b"}"
    yield bytes(buffer)


class ContainerResourceLimits(BaseModel):
    cpus: float | None
    memory: int | None = Field(description="Bytes.")
    pids: int | None
    shm_size: int | None = Field(description="Bytes.")
    gpus: int | str | None


class ContainerPreview(BaseModel):
    """A container as the runner creates it, secret values as ***."""

    name: str
    image: str
    command: list[str] | None = Field(description="After parameter substitution.")
    env: dict[str, str] = Field(description="Plain values as given; secret values as ***.")
    labels: dict[str, str]
    working_dir: str | None
    user: str | None
    network: str = Field(description="The project's own network unless the definition names one.")
    volumes: list[str] = Field(description="What is mounted, as `source:/path[:ro]`.")
    privileged: bool
    cap_add: list[str]
    devices: list[str]
    pid: str | None
    ipc: str | None
    userns: str | None
    resources: ContainerResourceLimits

    @classmethod
    def from_spec(cls, spec: ContainerSpec) -> ContainerPreview:
        """The spec as shown (the caller gave it masked secret values)."""
        return cls(
            name=spec.name,
            image=spec.image,
            command=spec.command,
            env=spec.env,
            labels=spec.labels,
            working_dir=spec.working_dir,
            user=spec.user,
            network=spec.network,
            volumes=spec.volumes,
            privileged=spec.privileged,
            cap_add=spec.cap_add,
            devices=spec.devices,
            pid=spec.pid,
            ipc=spec.ipc,
            userns=spec.userns,
            resources=ContainerResourceLimits(
                cpus=spec.cpus,
                memory=spec.memory,
                pids=spec.pids,
                shm_size=spec.shm_size,
                gpus=spec.gpus,
            ),
        )


class JobDryRun(BaseModel):
    """What a submission would make, stored nowhere: the job's queue, definition and status,
    and its first attempt's container. Values a job gets once stored and claimed are shown as
    `<job-id>` and `<runner>`."""

    project: str
    queue: str = Field(description="The queue the job would wait in.")
    definition: str
    name: str | None
    status: JobStatus = Field(
        description="`queued`, `scheduled` until `schedule_at`, or `pending` with `depends_on`."
    )
    schedule_at: datetime | None
    priority: int
    max_attempts: int
    timeout: float | None = Field(description="Seconds.")
    parameters: dict[str, Any] = Field(description="The definition's defaults with the given ones.")
    array_size: int | None = Field(
        description="An array's size; its `container` is then its first child's (index 0)."
    )
    container: ContainerPreview
    worker: dict[str, Any] | None = Field(
        description="An HTTP-worker definition's `worker` options: its jobs are POSTed to "
        "worker containers like `container` shared by the queue's jobs of the definition "
        "(without the per-job `ORCH_JOB_ID`, `ORCH_ATTEMPT`, `ORCH_INPUT`, `ORCH_OUTPUT`)."
    )

    @classmethod
    def from_row(cls, row: Job, container: ContainerSpec) -> JobDryRun:
        """The job a dry run made (in no session) and its container."""
        return cls(
            project=row.project,
            queue=row.queue,
            definition=f"{row.definition_name}:{row.definition_version}",
            name=row.name,
            status=row.status,
            schedule_at=row.schedule_at,
            priority=row.priority,
            max_attempts=row.max_attempts,
            timeout=row.timeout,
            parameters=row.parameters,
            array_size=row.array_size,
            container=ContainerPreview.from_spec(container),
            worker=row.container.get("worker"),
        )


# A line: up to and with its newline (only "\n": a "\r" of a progress bar stays inside).
_LINE = re.compile(r"[^\n]*\n|[^\n]+")
# ``job_logs.stream`` as the API names it.
LOG_STREAMS: dict[int, Literal["stdout", "stderr"]] = {1: "stdout", 2: "stderr"}


class LogLine(BaseModel):
    """One line of a job's output (the last without its newline if the output ended so; a very
    long line in pieces), as ``GET .../logs?format=json`` gives it, one JSON object a line."""

    id: int = Field(description="The stored chunk the line is in (chunks are in order).")
    attempt: int
    stream: Literal["stdout", "stderr"] | None = Field(
        default=None,
        description="The stream the line was written to; null when not known (logs stored "
        "before streams were recorded) or for the orchestrator's own lines (cut markers).",
    )
    text: str = Field(description="The line, with its newline.")

    @classmethod
    def lines(cls, id: int, attempt: int, stream: int | None, text: str) -> list[LogLine]:
        """A stored chunk's lines."""
        name = LOG_STREAMS.get(stream) if stream is not None else None
        return [cls(id=id, attempt=attempt, stream=name, text=line) for line in _LINE.findall(text)]


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
