"""GA4GH TES 1.1 shapes (``/ga4gh/tes/v1``): the task a client posts, as the spec's OpenAPI
document names its fields, enums and defaults, and the views the service answers with.

Validation here is the spec's plus what this server needs to run a task safely (absolute paths,
bounded tags); each refusal names its field. The URL schemes it supports are configured, so the
service checks them (``rules.tes_storage``). Fields the spec marks read-only (``id``,
``state``, ``logs``, ``creation_time``) and fields it does not know are ignored in a posted
task, as TES clients send them back and forth.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from orchestrator.rules.definition_spec import RESERVED_ENV_PREFIX
from orchestrator.rules.fields import Text

# What ``GET /tasks`` returns at most, and without ``page_size`` ("must be less than 2048.
# Defaults to 256", the spec says).
MAX_PAGE_SIZE = 2047
DEFAULT_PAGE_SIZE = 256
# Tags are stored one row each, indexed by (key, value) for the list filter: both are bounded
# so an index entry stays within PostgreSQL's btree row limit (255 characters of at most 4 bytes).
MAX_TAGS = 100
MAX_TAG_CHARS = 255
# A task's name is indexed for ``name_prefix``.
MAX_NAME_CHARS = 255
# Executors, inputs, outputs and volumes of one task (the body size bounds them anyway).
MAX_EXECUTORS = 100
MAX_FILES = 1000
# POSIX pattern characters (IEEE Std 1003.1-2017, 2.13): an output path holding one is a pattern.
WILDCARDS = frozenset("*?[")
# ``resources.backend_parameters`` keys this server knows: none (it has one kind of machine).
# Unknown keys are dropped from the stored task (the spec: "not store or return unsupported
# keys"), or refused when ``backend_parameters_strict`` is true.
BACKEND_PARAMETERS: tuple[str, ...] = ()


class TesState(StrEnum):
    """``tesState``."""

    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    PREEMPTED = "PREEMPTED"
    CANCELING = "CANCELING"


class TesFileType(StrEnum):
    """``tesFileType``."""

    FILE = "FILE"
    DIRECTORY = "DIRECTORY"


class TesView(StrEnum):
    """The ``view`` query parameter: how much of a task is shown."""

    MINIMAL = "MINIMAL"
    BASIC = "BASIC"
    FULL = "FULL"


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path (starting with '/')")
    return value


AbsolutePath = Annotated[Text, AfterValidator(_absolute)]
TagText = Annotated[Text, StringConstraints(max_length=MAX_TAG_CHARS)]


class _Lenient(BaseModel):
    # Unknown and read-only fields are ignored (clients echo what they got).
    model_config = ConfigDict(extra="ignore")


class TesExecutor(_Lenient):
    """``tesExecutor``: one container run, in order."""

    image: Annotated[Text, StringConstraints(min_length=1, pattern=r"^\S+$")]
    command: Annotated[list[Text], Field(min_length=1)]
    workdir: AbsolutePath | None = None
    stdin: AbsolutePath | None = None
    stdout: AbsolutePath | None = None
    stderr: AbsolutePath | None = None
    env: dict[Text, Text] | None = None
    ignore_error: bool = False

    @field_validator("env")
    @classmethod
    def _not_reserved(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name in value or {}:
            if name.upper().startswith(RESERVED_ENV_PREFIX):
                raise ValueError(f"{name}: names starting with {RESERVED_ENV_PREFIX} are reserved")
            if not name or "=" in name:
                raise ValueError(f"{name!r}: not a valid environment variable name")
        return value


class TesInput(_Lenient):
    """``tesInput``: a file (or directory) put at ``path`` before the first executor."""

    name: Text | None = None
    description: Text | None = None
    url: Text | None = None
    path: AbsolutePath
    type: TesFileType = TesFileType.FILE
    content: Text | None = None
    streamable: bool = False

    @field_validator("url")
    @classmethod
    def _bare_path(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return value
        # The spec lists a bare absolute path as a URL form: it is a file:// URL. Which schemes
        # this server supports is the service's check (``rules.tes_storage``: configured).
        return "file://" + value if value.startswith("/") else value

    @model_validator(mode="after")
    def _has_source(self) -> TesInput:
        if self.content:
            if self.type is TesFileType.DIRECTORY:
                raise ValueError("content: a DIRECTORY input cannot have content")
            return self
        if not self.url:
            raise ValueError("url: required unless content is set")
        return self


class TesOutput(_Lenient):
    """``tesOutput``: a file (or directory, or a wildcard's matches) collected after the last
    executor and written to ``url``."""

    name: Text | None = None
    description: Text | None = None
    url: Text
    path: AbsolutePath
    path_prefix: Text | None = None
    type: TesFileType = TesFileType.FILE

    @field_validator("url")
    @classmethod
    def _bare_path(cls, value: str) -> str:
        return "file://" + value if value.startswith("/") else value

    @model_validator(mode="after")
    def _prefix_of_pattern(self) -> TesOutput:
        if WILDCARDS & set(self.path):
            if not self.path_prefix:
                raise ValueError("path_prefix: required when path contains wildcards")
            if not self.path.startswith(self.path_prefix):
                raise ValueError("path_prefix: must be a prefix of path")
        return self


class TesResources(_Lenient):
    """``tesResources``: recorded as given; ``cpu_cores`` and ``ram_gb`` become the containers'
    limits, ``disk_gb`` cannot be enforced (overlay2 has no size limit) and is only recorded."""

    cpu_cores: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    preemptible: bool | None = None
    ram_gb: Annotated[float, Field(gt=0, le=1_000_000)] | None = None
    disk_gb: Annotated[float, Field(ge=0, le=1_000_000_000)] | None = None
    zones: list[Text] | None = None
    backend_parameters: dict[Text, Text] | None = None
    backend_parameters_strict: bool = False

    @model_validator(mode="after")
    def _known_parameters(self) -> TesResources:
        known = {key.lower() for key in BACKEND_PARAMETERS}
        unknown = sorted(k for k in self.backend_parameters or {} if k.lower() not in known)
        if unknown and self.backend_parameters_strict:
            names = ", ".join(BACKEND_PARAMETERS) or "none"
            raise ValueError(
                f"backend_parameters: {', '.join(unknown)} not supported with "
                f"backend_parameters_strict (supported: {names})"
            )
        if self.backend_parameters is not None:
            self.backend_parameters = {
                key: value for key, value in self.backend_parameters.items() if key.lower() in known
            }
        return self


class TesTaskCreate(_Lenient):
    """``tesTask`` as posted (``POST /tasks``)."""

    name: Annotated[Text, StringConstraints(max_length=MAX_NAME_CHARS)] | None = None
    description: Text | None = None
    inputs: Annotated[list[TesInput], Field(max_length=MAX_FILES)] | None = None
    outputs: Annotated[list[TesOutput], Field(max_length=MAX_FILES)] | None = None
    resources: TesResources | None = None
    executors: Annotated[list[TesExecutor], Field(min_length=1, max_length=MAX_EXECUTORS)]
    volumes: Annotated[list[AbsolutePath], Field(max_length=MAX_FILES)] | None = None
    tags: Annotated[dict[TagText, TagText], Field(max_length=MAX_TAGS)] | None = None

    def stored(self) -> dict[str, Any]:
        """The task as ``job.container["tes"]`` keeps it: the spec's field names, defaults
        filled, fields not given left out."""
        return self.model_dump(mode="json", exclude_none=True)


class TesCreateTaskResponse(BaseModel):
    """``tesCreateTaskResponse``."""

    id: str


class TesCancelTaskResponse(BaseModel):
    """``tesCancelTaskResponse``: an empty object."""


class TesServiceType(BaseModel):
    group: str
    artifact: str
    version: str


class TesOrganization(BaseModel):
    name: str
    url: str


class TesServiceInfo(BaseModel):
    """``tesServiceInfo``: GA4GH service-info with the storage this server reads and writes."""

    id: str
    name: str
    type: TesServiceType
    description: str
    organization: TesOrganization
    version: str
    storage: list[str]
    tesResources_backend_parameters: list[str]  # the spec's name


class TesListTasksResponse(BaseModel):
    """``tesListTasksResponse``; ``tasks`` are shown in the requested view."""

    tasks: list[dict[str, Any]]
    next_page_token: str | None = None


@dataclass(frozen=True)
class ExecutorLogRecord:
    """What the runner reports of one executor (tes-run's ``ExecutorOutcome``, converted by
    the glue): times aware UTC, ``exit_code`` None when it never ran to an exit, the stdout
    and stderr tails."""

    index: int
    start_time: datetime
    end_time: datetime | None
    exit_code: int | None
    stdout: str
    stderr: str


@dataclass(frozen=True)
class OutputFileRecord:
    """One output file written (tes-run's ``OutputFile``)."""

    url: str
    path: str
    size_bytes: int
