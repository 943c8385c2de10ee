"""Database tables (SQLModel). Shapes only: the services own every rule about them.

Secret values live only in ``Job.secret_env_ciphertext``, encrypted; API shapes in
``schemas.py`` never carry that column.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from orchestrator.rules.delivery_states import DeliveryStatus
from orchestrator.rules.reasons import FailureReason
from orchestrator.rules.runner_states import RunnerState
from orchestrator.rules.schedule_states import ScheduleRunStatus, ScheduleStatus
from orchestrator.rules.states import UNFINISHED, JobStatus
from orchestrator.rules.worker_states import WorkerState


def utcnow() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (SQLite has no time zones) and always returns aware UTC datetimes."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _time(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kwargs)  # type: ignore[call-overload]


def _status(**kwargs: Any) -> Any:
    status_type = sa.Enum(
        JobStatus,
        native_enum=False,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )
    return Field(sa_type=status_type, **kwargs)  # type: ignore[call-overload]


class StateText(TypeDecorator[str]):
    """A state of one vocabulary (a ``StrEnum``) stored as its plain string in a VARCHAR(16)
    (no CHECK, the type these columns always had) and read back as the member."""

    impl = sa.String(16)
    cache_ok = True

    def __init__(self, vocabulary: type[StrEnum]) -> None:
        super().__init__()
        self.vocabulary = vocabulary

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else self.vocabulary(value).value

    def process_result_value(self, value: str | None, dialect: Any) -> StrEnum | None:
        return None if value is None else self.vocabulary(value)


class ReasonText(StateText):
    """A failure reason (``rules.reasons``), in a VARCHAR(32): its names are longer."""

    impl = sa.String(32)
    cache_ok = True


def _state(vocabulary: type[StrEnum], **kwargs: Any) -> Any:
    return Field(sa_type=StateText(vocabulary), **kwargs)  # type: ignore[call-overload]


def _json(**kwargs: Any) -> Any:
    return Field(sa_type=sa.JSON, **kwargs)  # type: ignore[call-overload]


class Project(SQLModel, table=True):
    __tablename__ = "projects"

    name: str = Field(primary_key=True, max_length=63)
    description: str = ""
    # The Standard Webhooks signing secret ("whsec_..."), encrypted; made on first use.
    webhook_secret_ciphertext: str | None = None
    # The secret the last rotation replaced, encrypted, and when it was replaced: deliveries
    # are signed with it too for ``webhook_secret_grace`` seconds after (``services.webhooks``).
    previous_webhook_secret_ciphertext: str | None = None
    webhook_secret_rotate_time: datetime | None = _time(default=None)
    # Seconds a finished job (and its logs, events, deliveries, schedule runs) is kept; 0 keeps
    # them; None: the server's ``retention`` setting.
    retention: float | None = None
    create_time: datetime = _time(default_factory=utcnow)


class Queue(SQLModel, table=True):
    __tablename__ = "queues"
    __table_args__ = (sa.UniqueConstraint("project", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    project: str = Field(foreign_key="projects.name", max_length=63)
    name: str = Field(max_length=63)
    display_name: str = ""
    description: str = ""
    priority: int = 0
    max_concurrency: int | None = None
    paused: bool = False
    default_definition: str | None = None
    create_time: datetime = _time(default_factory=utcnow)
    update_time: datetime = _time(default_factory=utcnow)


class Definition(SQLModel, table=True):
    __tablename__ = "definitions"
    __table_args__ = (sa.UniqueConstraint("project", "name", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    project: str = Field(foreign_key="projects.name", max_length=63)
    name: str = Field(max_length=63)
    version: int
    spec: dict[str, Any] = _json()
    spec_hash: str = Field(max_length=64)
    create_time: datetime = _time(default_factory=utcnow)


# The unique-name index covers unfinished jobs (``rules.states.UNFINISHED``), in the order of
# the life cycle, so the DDL reads as it always has.
_UNFINISHED = "status IN ({})".format(", ".join(f"'{s}'" for s in JobStatus if s in UNFINISHED))


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        # When the next waiting job becomes runnable (``attempts.next_due``, ``promote_due``).
        sa.Index("ix_jobs_status_run_after", "status", "run_after"),
        sa.Index("ix_jobs_status_schedule_at", "status", "schedule_at"),
        # Retention takes a project's oldest finished jobs from this index.
        sa.Index("ix_jobs_project_finish", "project", "finish_time"),
        # A job list: a project's jobs newest first, or those of one definition or one name.
        sa.Index("ix_jobs_project_seq", "project", "seq"),
        sa.Index("ix_jobs_project_definition", "project", "definition_name", "seq"),
        sa.Index(
            "ix_jobs_project_name",
            "project",
            "name",
            "seq",
            sqlite_where=sa.text("name IS NOT NULL"),
            postgresql_where=sa.text("name IS NOT NULL"),
        ),
        # The claim takes a queue's next job from this index: job priority, then submit order.
        sa.Index(
            "ix_jobs_queue_claim", "project", "queue", "status", sa.text("priority DESC"), "seq"
        ),
        sa.Index(
            "ux_jobs_unfinished_name",
            "project",
            "queue",
            "name",
            unique=True,
            sqlite_where=sa.text(f"name IS NOT NULL AND {_UNFINISHED}"),
            postgresql_where=sa.text(f"name IS NOT NULL AND {_UNFINISHED}"),
        ),
        # An array's children: a page of them (by status or not), their counts by status.
        sa.Index(
            "ix_jobs_parent_seq",
            "parent_id",
            "seq",
            sqlite_where=sa.text("parent_id IS NOT NULL"),
            postgresql_where=sa.text("parent_id IS NOT NULL"),
        ),
        sa.Index(
            "ix_jobs_parent_status",
            "parent_id",
            "status",
            "seq",
            sqlite_where=sa.text("parent_id IS NOT NULL"),
            postgresql_where=sa.text("parent_id IS NOT NULL"),
        ),
    )

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(unique=True, max_length=36)
    project: str = Field(max_length=63)
    queue: str = Field(max_length=63)
    definition_name: str = Field(max_length=63)
    definition_version: int
    name: str | None = Field(default=None, max_length=255)
    status: JobStatus = _status()
    priority: int = 0
    attempt: int = 0
    # Attempts ended by the infrastructure (runner lost, engine restarted), not by the job:
    # they do not count against the retry policy's ``attempts``.
    interrupted_attempts: int = 0
    max_attempts: int = 1
    command: list[str] | None = _json(default=None)
    parameters: dict[str, Any] = _json(default_factory=dict)
    env: dict[str, str] = _json(default_factory=dict)
    secret_env_keys: list[str] = _json(default_factory=list)
    secret_env_ciphertext: str | None = None
    input: Any = _json(default=None)
    job_metadata: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=sa.Column("metadata", sa.JSON, nullable=False),
    )
    container: dict[str, Any] = _json(default_factory=dict)
    output: Any = _json(default=None)
    exit_code: int | None = None
    error: str | None = None
    # Why the last attempt did not succeed (``rules.reasons``); None while it runs or once it
    # succeeded.
    reason: FailureReason | None = Field(  # type: ignore[call-overload]
        default=None, sa_type=ReasonText(FailureReason)
    )
    container_id: str | None = Field(default=None, max_length=64)
    runner: str | None = Field(default=None, max_length=255)
    # The webhook URL as it is shown, its userinfo (user and password) replaced by ``***``; the
    # userinfo itself is encrypted in ``webhook_auth_ciphertext`` (``webhooks.seal_url``).
    webhook: str | None = None
    webhook_auth_ciphertext: str | None = None
    # The drop-in API the job was submitted through (``salad``), whose shape its webhook
    # carries; None for the native API.
    api: str | None = Field(default=None, max_length=16)
    timeout: float | None = None
    cancel_requested: bool = False
    # How many of its dependencies (``JobDependency``) have not ended yet: it waits ``pending``
    # until this is 0 (``services.dependencies`` counts down as each one ends).
    open_dependencies: int = 0
    # The dependencies whose outputs make its input (``input: {"from": [...]}``); its ``input``
    # holds them once they ended. None: its input is its own.
    input_from: list[str] | None = _json(default=None)
    schedule_at: datetime | None = _time(default=None)
    run_after: datetime | None = _time(default=None)
    create_time: datetime = _time(default_factory=utcnow)
    update_time: datetime = _time(default_factory=utcnow)
    start_time: datetime | None = _time(default=None)
    finish_time: datetime | None = _time(default=None)
    # Array jobs (``services.arrays``): a child has its parent's id, its index and the size;
    # a parent has the size and how many children have not ended yet (None on other jobs:
    # what marks a parent, which no runner claims).
    parent_id: str | None = Field(default=None, max_length=36)
    array_index: int | None = None
    array_size: int | None = None
    unfinished_children: int | None = None


class JobEvent(SQLModel, table=True):
    __tablename__ = "job_events"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(index=True, max_length=36)
    time: datetime = _time(default_factory=utcnow)
    type: str = Field(max_length=32)
    attempt: int = 0
    status: JobStatus = _status()
    detail: dict[str, Any] = _json(default_factory=dict)


class JobDependency(SQLModel, table=True):
    """One job (``job_id``) waiting for another of its project (``dependency_id``) to end.

    Written with the dependent at submit; read by the dependency's end through
    ``ix_job_dependencies_dependency`` (its dependents, never a scan of the waiting jobs);
    deleted with the dependent. ``services.dependencies`` owns it."""

    __tablename__ = "job_dependencies"
    __table_args__ = (sa.Index("ix_job_dependencies_dependency", "dependency_id"),)

    job_id: str = Field(primary_key=True, max_length=36)
    dependency_id: str = Field(primary_key=True, max_length=36)
    # Its place in the submission's ``depends_on``, which the job shows in that order.
    position: int
    # ``succeeded``: a dependency that fails or is cancelled fails the job; ``finished``: any end
    # releases it (``rules.dependencies.Condition``).
    release_on: str = Field(max_length=16)
    # An array dependency's form (``N_TO_N``, ``SEQUENTIAL``); None between two plain jobs.
    type: str | None = Field(default=None, max_length=16)


class JobLog(SQLModel, table=True):
    __tablename__ = "job_logs"
    __table_args__ = (sa.Index("ix_job_logs_job", "job_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=36)
    attempt: int
    time: datetime = _time(default_factory=utcnow)
    text: str
    # The stream the text came from (``rules.log_streams``): 1 stdout, 2 stderr; None when not
    # known (stored before 0018) or the orchestrator's own line (a cut marker).
    stream: int | None = Field(default=None, sa_type=sa.SmallInteger)


class QueueSample(SQLModel, table=True):
    """One queue's depth and throughput at one minute, for the console's chart of the last
    hour: written once a minute by ``background.queue_sampler``, pruned after two hours."""

    __tablename__ = "queue_samples"
    __table_args__ = (sa.Index("ix_queue_samples_minute", "minute"),)

    project: str = Field(primary_key=True, max_length=63)
    queue: str = Field(primary_key=True, max_length=63)
    # The minute's start (UTC) the sample was taken at.
    minute: datetime = _time(primary_key=True)
    waiting: int  # queued, at the sample
    running: int  # starting or running, at the sample
    ended: int  # jobs of the queue that ended in the minute before the sample


class Token(SQLModel, table=True):
    """An API token: only its SHA-256 hash is stored; the token itself is shown once."""

    __tablename__ = "tokens"

    id: str = Field(primary_key=True, max_length=36)
    name: str = Field(max_length=255)
    role: str = Field(max_length=16)
    project: str | None = Field(default=None, max_length=63)
    token_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=16)
    create_time: datetime = _time(default_factory=utcnow)
    revoke_time: datetime | None = _time(default=None)


class AuditEvent(SQLModel, table=True):
    """Who did what outside a job's own events: registrations, queue and token changes."""

    __tablename__ = "audit_events"
    __table_args__ = (sa.Index("ix_audit_events_project", "project", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    time: datetime = _time(default_factory=utcnow)
    project: str | None = Field(default=None, max_length=63)
    action: str = Field(max_length=64)
    resource: str = Field(max_length=255)
    actor_id: str | None = Field(default=None, max_length=36)
    actor_name: str | None = Field(default=None, max_length=255)
    detail: dict[str, Any] = _json(default_factory=dict)


class RunnerRecord(SQLModel, table=True):
    """A runner process: registered at its start, kept alive by its heartbeat.

    ``state`` is what the runner (or a drain request) set: ``active``, ``draining`` or
    ``stopped``; a runner whose heartbeat is older than the lease is reported ``lost``.
    ``session`` identifies one run of the process, so two processes never share a name.
    """

    __tablename__ = "runners"

    name: str = Field(primary_key=True, max_length=255)
    session: str = Field(max_length=36)
    hostname: str = Field(max_length=255)
    pid: int
    docker_host: str = Field(max_length=1024)
    capacity: int
    queues: list[str] | None = _json(default=None)
    state: RunnerState = _state(RunnerState)
    docker: str = Field(default="unknown", max_length=16)
    docker_error: str | None = None
    version: str = Field(max_length=32)
    start_time: datetime = _time(default_factory=utcnow)
    heartbeat_time: datetime = _time(default_factory=utcnow)


class WorkerContainer(SQLModel, table=True):
    """An HTTP worker container a runner process keeps (SaladCloud's container-group instance):
    written by that runner as the container is created, gets ready and is removed, and deleted
    once it is gone. ``runner`` and ``session`` are the process's (``RunnerRecord``)."""

    __tablename__ = "worker_containers"
    __table_args__ = (sa.Index("ix_worker_containers_queue", "project", "queue"),)

    container_id: str = Field(primary_key=True, max_length=64)
    runner: str = Field(max_length=255)
    session: str = Field(max_length=36)
    project: str = Field(max_length=63)
    queue: str = Field(max_length=63)
    definition: str = Field(max_length=63)
    definition_version: int
    state: WorkerState = _state(WorkerState)
    create_time: datetime = _time(default_factory=utcnow)
    update_time: datetime = _time(default_factory=utcnow)


class Schedule(SQLModel, table=True):
    """A cron expression (in a time zone) or a one-shot ``run_at`` whose target is a job
    submission or an HTTP request.

    ``target`` holds the target without its secrets (the names stay); the secret values
    (``secret_env`` of a job target, ``secret_headers`` of an HTTP target) are in
    ``secret_ciphertext``, encrypted. ``next_run_at`` is the next tick (UTC); the scheduler
    claims a tick by moving it on in the same transaction that records the run.
    """

    __tablename__ = "schedules"
    __table_args__ = (
        sa.UniqueConstraint("project", "name"),
        sa.Index("ix_schedules_due", "status", "next_run_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    project: str = Field(foreign_key="projects.name", max_length=63)
    name: str = Field(max_length=63)
    cron: str | None = Field(default=None, max_length=255)
    run_at: datetime | None = _time(default=None)
    timezone: str = Field(default="UTC", max_length=64)
    target_kind: str = Field(max_length=8)
    target: dict[str, Any] = _json(default_factory=dict)
    secret_ciphertext: str | None = None
    # The userinfo of a job target's webhook URL, encrypted (the target shows it as ``***``).
    webhook_auth_ciphertext: str | None = None
    overlap: str = Field(default="allow", max_length=8)
    on_missed: str = Field(default="skip", max_length=8)
    missed_window: float = 3600.0
    # Delays (seconds) before each retry of an HTTP target's request.
    retry_delays: list[float] = _json(default_factory=list)
    status: ScheduleStatus = _state(ScheduleStatus, default=ScheduleStatus.ACTIVE)
    next_run_at: datetime | None = _time(default=None)
    last_run_at: datetime | None = _time(default=None)
    last_outcome: str | None = None
    create_time: datetime = _time(default_factory=utcnow)
    update_time: datetime = _time(default_factory=utcnow)


class ScheduleRun(SQLModel, table=True):
    """One firing of a schedule (or a record that a tick was missed or skipped).

    ``(schedule_id, tick)`` is unique: a tick fires once however many schedulers see it. A job
    target's run points at its job; an HTTP target's run carries its attempts: ``status``
    ``pending`` (an attempt is due at ``next_attempt_at``), ``running`` (an attempt is in
    flight until ``lease_until``), then ``succeeded``, ``failed`` or ``replaced``.
    """

    __tablename__ = "schedule_runs"
    __table_args__ = (
        sa.UniqueConstraint("schedule_id", "tick"),
        sa.Index("ix_schedule_runs_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    schedule_id: str = Field(index=True, max_length=36)
    tick: datetime = _time()
    trigger: str = Field(max_length=16)
    fire_time: datetime = _time(default_factory=utcnow)
    status: ScheduleRunStatus = _state(ScheduleRunStatus)
    job_id: str | None = Field(default=None, max_length=36)
    attempts: int = 0
    next_attempt_at: datetime | None = _time(default=None)
    lease_until: datetime | None = _time(default=None)
    status_code: int | None = None
    duration_ms: float | None = None
    response_body: str | None = None
    error: str | None = None
    attempt_log: list[dict[str, Any]] = _json(default_factory=list)
    detail: dict[str, Any] = _json(default_factory=dict)
    finish_time: datetime | None = _time(default=None)


class WebhookDelivery(SQLModel, table=True):
    """One webhook message to send (an outbox row, written with the job's terminal state).

    ``message_id`` is the ``webhook-id`` header: the same for every retry and redelivery of one
    message, so receivers can drop duplicates. ``body`` is fixed when the row is written.
    Retries stop ``webhook_retry_for`` seconds after ``create_time``.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("job_id", "number"),
        sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=36)
    number: int
    project: str = Field(max_length=63)
    message_id: str = Field(max_length=64)
    event_type: str = Field(max_length=32)
    url: str
    body: str
    # Whose key signs it: a drop-in API's (``api_secrets.name``), or None for the project's.
    signing_key: str | None = Field(default=None, max_length=16)
    status: DeliveryStatus = _state(DeliveryStatus, default=DeliveryStatus.PENDING)
    attempts: int = 0
    next_attempt_at: datetime | None = _time(default=None)
    lease_until: datetime | None = _time(default=None)
    last_status_code: int | None = None
    last_error: str | None = None
    attempt_log: list[dict[str, Any]] = _json(default_factory=list)
    redelivery_of: int | None = None
    create_time: datetime = _time(default_factory=utcnow)
    delivered_time: datetime | None = _time(default=None)


class UnsealedWebhookCredentials(SQLModel, table=True):
    """The userinfo of a webhook URL that migration 0007 took out of a row written before it,
    still in the clear (a migration has no key). An API server encrypts it into its job's or
    schedule's ``webhook_auth_ciphertext`` as it starts, and deletes the row."""

    __tablename__ = "unsealed_webhook_credentials"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str | None = Field(default=None, max_length=36)
    schedule_id: str | None = Field(default=None, max_length=36)
    userinfo: str


class Installation(SQLModel, table=True):
    """The one row naming this database's installation (made by migration 0006): every
    container, HTTP worker and run dir the installation makes carries its id."""

    __tablename__ = "installation"

    id: str = Field(primary_key=True, max_length=32)
    create_time: datetime = _time(default_factory=utcnow)


class ApiSecret(SQLModel, table=True):
    """A drop-in API's own secret, encrypted: SaladCloud's organisation webhook secret key
    (``salad``), made on first use."""

    __tablename__ = "api_secrets"

    name: str = Field(primary_key=True, max_length=16)
    secret_ciphertext: str
    # The secret the last rotation replaced, encrypted; the rotation's time is ``update_time``
    # (set only by a rotation). Deliveries are signed with it too for a grace period.
    previous_secret_ciphertext: str | None = None
    create_time: datetime = _time(default_factory=utcnow)
    update_time: datetime = _time(default_factory=utcnow)


class IdempotencyKey(SQLModel, table=True):
    """An ``Idempotency-Key`` a create request was sent with, and the answer it got.

    A key belongs to one project and one route (``scope``); ``fingerprint`` is a keyed digest
    of the request (``SecretBox.digests``: it holds nothing a guess at a secret value could be
    checked against). The row is written in the transaction of what the request created, and
    its answer (``status_code``, ``response_body``, ``response_headers``: what the API showed,
    never a secret value) before that transaction commits. ``services.idempotency`` owns it.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        sa.UniqueConstraint("project", "route", "key", name="uq_idempotency_keys_scope"),
        # Retention finds expired keys by age.
        sa.Index("ix_idempotency_keys_create_time", "create_time"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project: str = Field(max_length=63)
    route: str = Field(max_length=32)
    key: str = Field(max_length=255)
    fingerprint: str = Field(max_length=64)
    status_code: int | None = None
    response_body: str | None = None
    response_headers: dict[str, str] = _json(default_factory=dict)
    create_time: datetime = _time(default_factory=utcnow)


# A task name is compared byte-wise on PostgreSQL, so its ``name_prefix`` range is exact
# whatever the database's collation (SQLite compares text byte-wise already).
TES_NAME_TYPE = sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql")


class TesTask(SQLModel, table=True):
    """A job that is a GA4GH TES task: its TES name, indexed for ``name_prefix``, and its
    project, for the task list (newest first, by the job's ``seq``). The task itself is on the
    job (``job.container["tes"]``); ``services.tes_tasks`` owns these rows."""

    __tablename__ = "tes_tasks"
    __table_args__ = (
        sa.Index("ix_tes_tasks_project_seq", "project", "job_seq"),
        sa.Index(
            "ix_tes_tasks_project_name",
            "project",
            "name",
            "job_seq",
            sqlite_where=sa.text("name IS NOT NULL"),
            postgresql_where=sa.text("name IS NOT NULL"),
        ),
    )

    job_seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    job_id: str = Field(unique=True, max_length=36)
    project: str = Field(max_length=63)
    name: str | None = Field(default=None, sa_type=TES_NAME_TYPE)  # type: ignore[call-overload]


class TesTaskTag(SQLModel, table=True):
    """One tag of a TES task, indexed by (key, value) for the list's ``tag_key``/``tag_value``."""

    __tablename__ = "tes_task_tags"
    __table_args__ = (sa.Index("ix_tes_task_tags_lookup", "project", "key", "value", "job_seq"),)

    job_id: str = Field(primary_key=True, max_length=36)
    key: str = Field(primary_key=True, max_length=255)
    value: str = Field(max_length=255)
    project: str = Field(max_length=63)
    job_seq: int


class TesAttemptLog(SQLModel, table=True):
    """What the runner reported of one attempt of a TES task: the FULL view's ``logs[]`` entry.
    ``executors`` and ``outputs`` are lists of the spec's ``tesExecutorLog`` and
    ``tesOutputFileLog`` (times as RFC 3339 text)."""

    __tablename__ = "tes_attempt_logs"

    job_id: str = Field(primary_key=True, max_length=36)
    attempt: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    start_time: datetime | None = _time(default=None)
    end_time: datetime | None = _time(default=None)
    executors: list[dict[str, Any]] = _json(default_factory=list)
    outputs: list[dict[str, Any]] = _json(default_factory=list)
    system_logs: list[str] = _json(default_factory=list)
