"""GA4GH TES tasks as our jobs: create one (a job of the reserved definition ``tes``, version
0, in the TES queue), read, list and cancel them, and record what the runner reports of their
attempts (the FULL view's ``logs[]``).

A task's id is its job's id. The validated task is ``job.container["tes"]``; the job's
ordinary container fields come from the first executor and the resources, so the container
policy and the runner see an ordinary job. Status changes stay the jobs service's: a TES state
is read from the job (``tes_states``). The views are ``tes_views``'.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator import telemetry
from orchestrator.errors import Conflict, InvalidRequest, LimitExceeded, NotFound
from orchestrator.rules.definition_spec import DefinitionSpec
from orchestrator.rules.fields import storable
from orchestrator.rules.ids import time_ordered_id
from orchestrator.rules.input_limits import InputLimits
from orchestrator.rules.policy import ContainerPolicy
from orchestrator.rules.project_caps import ProjectCaps
from orchestrator.rules.states import EventType, JobStatus
from orchestrator.rules.tes_storage import TesStorage
from orchestrator.schemas.queues import QueueCreate
from orchestrator.schemas.tes import (
    ExecutorLogRecord,
    OutputFileRecord,
    TesState,
    TesTaskCreate,
)
from orchestrator.services import jobs, projects, queues, tes_states
from orchestrator.services.audit import Actor
from orchestrator.storage.db import after_commit, serialize
from orchestrator.storage.models import (
    Job,
    Queue,
    TesAttemptLog,
    TesTask,
    TesTaskTag,
    utcnow,
)
from orchestrator.wakeups.hub import Hub

# The definition columns of a job that is a TES task: a name a registered definition may
# share, but version 0, which no registered version has (they start at 1).
TES_DEFINITION = "tes"
TES_VERSION = 0
GIB = 1024**3
# Past the last character there is: a name range's upper bound for ``name_prefix``.
LAST_CHARACTER = "\U0010ffff"


def is_task(job: Job) -> bool:
    """Whether ``job`` is a TES task."""
    return job.definition_name == TES_DEFINITION and job.definition_version == TES_VERSION


def ensure_queue(
    session: Session, project: str, name: str, actor: Actor, *, caps: ProjectCaps
) -> Queue:
    """The project's TES queue, created on first use. Two first uses at once make one queue:
    the check and the insert are serialized as ``queues.create`` serializes them."""
    serialize(session, f"cap:queues:{project}")
    found = session.exec(select(Queue).where(Queue.project == project, Queue.name == name)).first()
    if found is not None:
        return found
    description = "GA4GH TES tasks (made on the first task)"
    return queues.create(
        session, project, QueueCreate(name=name, description=description), actor, caps=caps
    )


def _container(task: TesTaskCreate) -> dict[str, Any]:
    """The job's ordinary container fields: the first executor's image and working directory,
    the resources as limits (``disk_gb`` cannot be one: recorded only), and the task."""
    first = task.executors[0]
    resources: dict[str, Any] = {}
    if task.resources is not None and task.resources.cpu_cores is not None:
        resources["cpus"] = float(task.resources.cpu_cores)
    if task.resources is not None and task.resources.ram_gb is not None:
        resources["memory"] = max(1, int(task.resources.ram_gb * GIB))
    spec = DefinitionSpec(
        name=TES_DEFINITION,
        image=first.image,
        command=first.command,
        resources=resources,  # type: ignore[arg-type]
        working_dir=first.workdir,
    )
    return spec.container_options()


def create(
    session: Session,
    hub: Hub | None,
    project: str,
    queue_name: str,
    task: TesTaskCreate,
    *,
    policy: ContainerPolicy,
    limits: InputLimits,
    caps: ProjectCaps,
    storage: TesStorage,
    actor: Actor,
) -> Job:
    """Store ``task`` as a queued job of ``project``'s TES queue (made if missing); every
    executor's image and the resources are checked against the container policy, every input
    and output URL against the storage this server supports."""
    projects.get(session, project)
    check_urls(task, storage)
    container = _checked_container(task, policy, limits)
    queue = ensure_queue(session, project, queue_name, actor, caps=caps)
    return _insert(session, hub, queue, task, container, actor)


def resubmit(
    session: Session,
    hub: Hub | None,
    original: Job,
    *,
    policy: ContainerPolicy,
    limits: InputLimits,
    storage: TesStorage,
    actor: Actor,
) -> Job:
    """A new task like the job ``original`` (a TES task), in its queue, checked as a new task
    is (today's policy and storage)."""
    task = TesTaskCreate.model_validate(original.container["tes"])
    check_urls(task, storage)
    container = _checked_container(task, policy, limits)
    queue = queues.get(session, original.project, original.queue)
    return _insert(session, hub, queue, task, container, actor)


def check_urls(task: TesTaskCreate, storage: TesStorage) -> None:
    """Every input's and output's URL is one this server supports (a 400 naming the first
    that is not)."""
    urls = [(f"inputs.{i}.url", item.url, False) for i, item in enumerate(task.inputs or [])]
    urls += [(f"outputs.{i}.url", item.url, True) for i, item in enumerate(task.outputs or [])]
    for name, url, output in urls:
        refusal = storage.refusal(url, output=output) if url else None
        if refusal is not None:
            raise InvalidRequest(f"{name}: {refusal}", field=name)


def _checked_container(
    task: TesTaskCreate, policy: ContainerPolicy, limits: InputLimits
) -> dict[str, Any]:
    """The job's container fields, each executor's image and the resources checked against the
    container policy (403 naming the setting), and each executor's env against the input
    limits (``ORCH_MAX_ENV``: a 400 naming the executor's env)."""
    container = _container(task)
    for index, executor in enumerate(task.executors):
        policy.check({**container, "image": executor.image})
        try:
            limits.check_counts(0, len(executor.env or {}))
        except LimitExceeded as exc:
            # A bad task, as TES clients expect one (a 400), naming the executor's env.
            field = f"executors.{index}.env"
            raise InvalidRequest(f"{field}: {exc.message}", field=field) from None
    return container


def _insert(
    session: Session,
    hub: Hub | None,
    queue: Queue,
    task: TesTaskCreate,
    container: dict[str, Any],
    actor: Actor,
) -> Job:
    """The task's job, queued, with its name and tags indexed."""
    project, queue_name = queue.project, queue.name
    now = utcnow()
    job = Job(
        id=time_ordered_id(),
        project=project,
        queue=queue_name,
        definition_name=TES_DEFINITION,
        definition_version=TES_VERSION,
        status=JobStatus.QUEUED,
        # A task is not retried (an interrupted attempt still goes back to the queue).
        max_attempts=1,
        command=task.executors[0].command,
        env=dict(task.executors[0].env or {}),
        container={**container, "tes": task.stored()},
        create_time=now,
        update_time=now,
    )
    session.add(job)
    session.flush()
    assert job.seq is not None
    session.add(TesTask(job_seq=job.seq, job_id=job.id, project=project, name=task.name))
    for key, value in (task.tags or {}).items():
        session.add(
            TesTaskTag(job_id=job.id, key=key, value=value, project=project, job_seq=job.seq)
        )
    detail = {"definition": None, "queue": queue_name, "actor": actor.record(), "api": "tes"}
    jobs.record(session, job, EventType.CREATED, detail)
    jobs.record(session, job, EventType.QUEUED, hub=hub)
    after_commit(session, lambda: telemetry.JOBS_SUBMITTED.labels(project, queue_name).inc())
    return job


def get(session: Session, project: str, task_id: str) -> Job:
    """The task's job; NotFound (naming ``id``) for an unknown id, another project's task, or
    a job that is not a TES task."""
    job = None
    if storable(task_id) and len(task_id) <= 36:
        job = session.exec(
            select(Job)
            .join(TesTask, col(TesTask.job_seq) == col(Job.seq))
            .where(Job.id == task_id, TesTask.project == project)
        ).first()
    if job is None:
        raise NotFound(f"task '{task_id}' not found", field="id")
    return job


def cancel(session: Session, hub: Hub | None, project: str, task_id: str, actor: Actor) -> None:
    """Cancel the task: a queued one at once, a running one is stopped (CANCELING until its
    runner has stopped it); a finished one stays as it is."""
    job = get(session, project, task_id)
    try:
        jobs.cancel_locked(session, hub, jobs.locked_job(session, job.id), actor)
    except Conflict:
        pass  # it finished meanwhile: nothing to cancel


def encode_page_token(seq: int) -> str:
    """An opaque page token: the last task's sequence number."""
    return base64.urlsafe_b64encode(f"tes:{seq}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    """The sequence number a page token carries; 400 naming ``page_token`` for any other text."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        seq = int(text.removeprefix("tes:")) if text.startswith("tes:") else -1
    except ValueError:
        seq = -1
    if not 0 < seq < 2**62:
        raise InvalidRequest("page_token: not a token returned by this API", field="page_token")
    return seq


@dataclass(frozen=True)
class TaskFilter:
    """The list's filters: ``tags`` as the spec builds them from ``tag_key``/``tag_value``
    (an empty value: any value of the key)."""

    name_prefix: str | None = None
    state: TesState | None = None
    tags: dict[str, str] = field(default_factory=dict)


def tag_filter(keys: Sequence[str], values: Sequence[str]) -> dict[str, str]:
    """``tag_key`` zipped with ``tag_value`` (missing values: any); more values than keys is a
    400 naming ``tag_value``."""
    if len(values) > len(keys):
        raise InvalidRequest(
            "tag_value: more values than tag_key entries (they are paired in order)",
            field="tag_value",
        )
    return {key: values[i] if i < len(values) else "" for i, key in enumerate(keys)}


def page(
    session: Session, project: str, wanted: TaskFilter, size: int, token: str | None
) -> tuple[list[Job], str | None]:
    """A page of the project's tasks, newest first, and the token of the next page (None: it
    is the last). Driven by ``tes_tasks``' indexes: (project, seq) and (project, name, seq);
    each tag pair is a range of the tags' (project, key, value) index."""
    statement = (
        select(Job)
        .join(TesTask, col(TesTask.job_seq) == col(Job.seq))
        .where(TesTask.project == project)
    )
    if token:
        statement = statement.where(col(TesTask.job_seq) < decode_page_token(token))
    if wanted.name_prefix:
        prefix = wanted.name_prefix
        statement = statement.where(
            col(TesTask.name) >= prefix,
            col(TesTask.name) < prefix + LAST_CHARACTER,
            sa.func.substr(col(TesTask.name), 1, len(prefix)) == prefix,
        )
    for key, value in wanted.tags.items():
        tagged = select(TesTaskTag.job_seq).where(
            TesTaskTag.project == project, TesTaskTag.key == key
        )
        if value:
            tagged = tagged.where(TesTaskTag.value == value)
        statement = statement.where(col(TesTask.job_seq).in_(tagged))
    if wanted.state is not None:
        statement = statement.where(tes_states.condition(wanted.state))
    rows = list(
        session.exec(statement.order_by(sa.desc(col(TesTask.job_seq))).limit(size + 1)).all()
    )
    if len(rows) <= size:
        return rows, None
    rows = rows[:size]
    last = rows[-1].seq
    assert last is not None
    return rows, encode_page_token(last)


def attempt_logs(session: Session, job_ids: Sequence[str]) -> dict[str, list[TesAttemptLog]]:
    """The recorded attempts of each job, first attempt first."""
    if not job_ids:
        return {}
    rows = session.exec(
        select(TesAttemptLog)
        .where(col(TesAttemptLog.job_id).in_(list(job_ids)))
        .order_by(col(TesAttemptLog.job_id), col(TesAttemptLog.attempt))
    ).all()
    found: dict[str, list[TesAttemptLog]] = {}
    for row in rows:
        found.setdefault(row.job_id, []).append(row)
    return found


# Recording what the runner reports (the glue calls these, each in a short transaction).


def _attempt_log(session: Session, job_id: str, attempt: int) -> TesAttemptLog:
    """The attempt's log row, locked; made if the runner reports it first."""
    row = session.exec(
        select(TesAttemptLog)
        .where(TesAttemptLog.job_id == job_id, TesAttemptLog.attempt == attempt)
        .with_for_update()
    ).first()
    if row is None:
        if session.exec(select(TesTask.job_seq).where(TesTask.job_id == job_id)).first() is None:
            raise NotFound(f"task '{job_id}' not found", field="id")
        row = TesAttemptLog(job_id=job_id, attempt=attempt)
        session.add(row)
    return row


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _executor_entry(row: TesAttemptLog, index: int) -> list[dict[str, Any]]:
    """A copy of the row's executor logs, long enough to hold ``index`` (a new list: the JSON
    column is only written when it is assigned)."""
    executors = [dict(entry) for entry in row.executors]
    while len(executors) <= index:
        executors.append({})
    return executors


def attempt_started(session: Session, job_id: str, attempt: int, start_time: datetime) -> None:
    """Record that the attempt started (its log's ``start_time``; the first report stays)."""
    row = _attempt_log(session, job_id, attempt)
    if row.start_time is None:
        row.start_time = start_time
    session.add(row)


def executor_started(
    session: Session, job_id: str, attempt: int, index: int, start_time: datetime
) -> None:
    """Record that executor ``index`` of the attempt started."""
    row = _attempt_log(session, job_id, attempt)
    executors = _executor_entry(row, index)
    executors[index] = {**executors[index], "start_time": _time(start_time)}
    row.executors = executors
    session.add(row)


def executor_ended(session: Session, job_id: str, attempt: int, outcome: ExecutorLogRecord) -> None:
    """Record how executor ``outcome.index`` of the attempt ended: times, exit code, and the
    tails of its stdout and stderr."""
    row = _attempt_log(session, job_id, attempt)
    executors = _executor_entry(row, outcome.index)
    entry: dict[str, Any] = {
        "start_time": _time(outcome.start_time),
        "end_time": _time(outcome.end_time),
        "stdout": outcome.stdout,
        "stderr": outcome.stderr,
    }
    if outcome.exit_code is not None:
        entry["exit_code"] = outcome.exit_code
    executors[outcome.index] = {key: value for key, value in entry.items() if value is not None}
    row.executors = executors
    session.add(row)


def attempt_ended(
    session: Session,
    job_id: str,
    attempt: int,
    end_time: datetime,
    outputs: list[OutputFileRecord],
    system_logs: list[str],
) -> None:
    """Record the attempt's end: its time, the output files written (``size_bytes`` as the
    spec's int64-as-string) and the system logs."""
    row = _attempt_log(session, job_id, attempt)
    row.end_time = end_time
    row.outputs = [
        {"url": output.url, "path": output.path, "size_bytes": str(output.size_bytes)}
        for output in outputs
    ]
    row.system_logs = [*row.system_logs, *system_logs]
    session.add(row)
