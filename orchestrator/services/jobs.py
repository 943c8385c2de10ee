"""The job service: submit, read, list, cancel, and every status change.

Only ``transition`` here changes a job's status: it writes the job and its event in the
caller's transaction (``attempts`` calls it for the runner's side: claims, starts, outcomes,
retries). Runner writes are fenced by (runner, attempt): a runner that no longer holds an
attempt cannot change the job.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.errors import Conflict, InvalidRequest, NotFound
from orchestrator.rules.definition_spec import CONTAINER_FIELDS, RESERVED_ENV_PREFIX
from orchestrator.rules.fields import MAX_INT, storable
from orchestrator.rules.input_limits import InputLimits
from orchestrator.rules.policy import ContainerPolicy
from orchestrator.rules.states import (
    UNFINISHED,
    WAITING,
    EventType,
    JobStatus,
    can_transition,
)
from orchestrator.rules.templating import substitute
from orchestrator.schemas.jobs import JobCreate
from orchestrator.services import definitions, projects, webhooks
from orchestrator.services.audit import SYSTEM, Actor
from orchestrator.storage.db import after_commit
from orchestrator.storage.models import Definition, Job, JobEvent, JobLog, Queue, utcnow
from orchestrator.storage.secret_box import SecretBox
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.topics import CANCEL, WORK, job_topic

# The definition columns of a job that waits for its queue's default definition.
UNBOUND_NAME = ""
UNBOUND_VERSION = 0


def transition(
    session: Session,
    job: Job,
    status: JobStatus,
    event: EventType,
    detail: dict[str, Any] | None = None,
    hub: Hub | None = None,
    **changes: Any,
) -> None:
    """Move ``job`` to ``status`` (checked against the life cycle) and append its event; a
    job with a webhook that ends here gets its webhook message in the same transaction."""
    if job.status != status and not can_transition(job.status, status):
        raise Conflict(f"job {job.id} cannot go from {job.status} to {status}", field="status")
    ends = status.terminal and not job.status.terminal
    now = utcnow()
    job.status = status
    job.update_time = now
    if status.terminal:
        job.finish_time = now
    for name, value in changes.items():
        setattr(job, name, value)
    session.add(job)
    record(session, job, event, detail, hub)
    if ends and job.webhook:
        webhooks.enqueue(session, job, hub)


def record(
    session: Session,
    job: Job,
    event: EventType,
    detail: dict[str, Any] | None = None,
    hub: Hub | None = None,
) -> None:
    """Append an event to the job (no status change); subscribers are woken after commit."""
    session.add(
        JobEvent(
            job_id=job.id,
            type=event,
            attempt=job.attempt,
            status=job.status,
            detail=detail or {},
        )
    )
    if hub is not None:
        topics = [job_topic(job.id)]
        if event in (EventType.QUEUED, EventType.REQUEUED):
            topics.append(WORK)
        if event is EventType.CANCEL_REQUESTED:
            topics.append(CANCEL)
        after_commit(session, lambda: hub.publish(*topics))


def _resolve_definition(
    session: Session, project: str, queue: Queue, reference: str | None
) -> Definition | None:
    """The definition a job of ``queue`` runs: ``reference``, else the queue's default; None
    when neither is set. The one place a job's definition is chosen."""
    reference = reference or queue.default_definition
    if reference is None:
        return None
    name, version = definitions.parse_reference(reference)
    return definitions.get(session, project, name, version)


def _queue(session: Session, project: str, name: str) -> Queue:
    """The queue a job goes to (read here: the queue service sits above this one)."""
    queue = None
    if storable(name):
        statement = select(Queue).where(Queue.project == project, Queue.name == name)
        queue = session.exec(statement).first()
    if queue is None:
        # A missing project is the error to report; looked up only now, a query saved per job.
        projects.get(session, project)
        raise NotFound(f"queue '{name}' not found in project '{project}'", field="queue")
    return queue


def _queue_and_definition(
    session: Session, project: str, request: JobCreate
) -> tuple[Queue, Definition | None]:
    """A submission's queue and the definition its job runs (as ``_resolve_definition``).

    When the submission names its definition (the usual case) both come from one query, the
    definition joined to the queue; else, or when that query misses, they are looked up one
    after the other, which also says what is missing: the project, the queue or the definition.
    """
    reference = _matchable_reference(request.definition)
    if reference is None or not storable(request.queue):
        queue = _queue(session, project, request.queue)
        return queue, _resolve_definition(session, project, queue, request.definition)
    name, version = reference
    joined = sa.and_(col(Definition.project) == project, col(Definition.name) == name)
    if version is not None:
        joined = sa.and_(joined, col(Definition.version) == version)
    row = session.exec(
        select(Queue, Definition)
        .outerjoin(Definition, joined)
        .where(Queue.project == project, Queue.name == request.queue)
        # The latest version, when the reference names none.
        .order_by(sa.desc(col(Definition.version)))
        .limit(1)
    ).first()
    if row is None:
        queue = _queue(session, project, request.queue)
        return queue, _resolve_definition(session, project, queue, request.definition)
    queue, found = row
    # An outer join's missing definition is None, whatever the row's type says.
    definition: Definition | None = found
    if definition is None:
        definition = definitions.get(session, project, name, version)
    return queue, definition


def _matchable_reference(reference: str | None) -> tuple[str, int | None] | None:
    """``reference`` as (name, version), when it is one a stored definition could have."""
    if reference is None:
        return None
    try:
        name, version = definitions.parse_reference(reference)
    except InvalidRequest:
        return None
    if not storable(name) or (version is not None and not 1 <= version <= MAX_INT):
        return None
    return name, version


def _no_definition(queue: Queue) -> InvalidRequest:
    return InvalidRequest(
        f"definition is required: queue '{queue.name}' has no default definition",
        field="definition",
    )


def _binding(
    definition: Definition,
    *,
    parameters: dict[str, Any],
    env: dict[str, str],
    secret_env: Sequence[str],
    command: list[str] | None,
    timeout: float | None,
    limits: InputLimits | None,
) -> dict[str, Any]:
    """The job's columns that come from its definition, merged with the submission's own
    values (checked: reserved and required env, counts, ``Param::`` substitution)."""
    spec = definitions.current_spec(definition)
    reference = f"{definition.name}:{definition.version}"
    _check_env(env, secret_env, spec["secrets"], reference)
    merged_parameters = {**spec["parameters"], **parameters}
    merged_env = {**spec["env"], **env}
    if limits is not None:
        limits.check_counts(
            len(merged_parameters),
            len(merged_env) + len(secret_env),
            " with the definition's defaults",
        )
    template = command if command is not None else spec["command"]
    substituted = None
    if template is not None:
        field = "command" if command is not None else f"definition {reference} command"
        substituted = substitute(template, merged_parameters, field=field)
    return {
        "definition_name": definition.name,
        "definition_version": definition.version,
        "max_attempts": spec["retry"]["attempts"],
        "command": substituted,
        "parameters": merged_parameters,
        "env": merged_env,
        "container": {key: spec[key] for key in CONTAINER_FIELDS},
        "timeout": timeout if timeout is not None else spec["timeout"],
    }


def _check_env(
    env: dict[str, str], secret_env: Sequence[str], declared_secrets: Sequence[str], definition: str
) -> None:
    for field, names in (("env", env), ("secret_env", secret_env)):
        for name in names:
            if name.upper().startswith(RESERVED_ENV_PREFIX):
                raise InvalidRequest(
                    f"{field}.{name}: names starting with {RESERVED_ENV_PREFIX} are reserved",
                    field=f"{field}.{name}",
                )
    for name in env:
        if name in secret_env:
            raise InvalidRequest(
                f"env.{name}: also given in secret_env; give it in one of them",
                field=f"env.{name}",
            )
    for name in declared_secrets:
        if name not in secret_env:
            raise InvalidRequest(
                f"secret_env.{name}: required by definition '{definition}'",
                field=f"secret_env.{name}",
            )


def submit(
    session: Session,
    box: SecretBox,
    hub: Hub | None,
    project: str,
    request: JobCreate,
    *,
    policy: ContainerPolicy,
    limits: InputLimits,
    actor: Actor = SYSTEM,
    job_id: str | None = None,
    api: str | None = None,
    wait_for_definition: bool = False,
) -> Job:
    """Validate a submission against its definition and store it, queued or scheduled.

    The definition is checked against today's container policy (it may have changed since the
    definition was registered), and the submission against the input limits. ``job_id`` lets an
    adapter choose the id (a drop-in API that puts it in the job's environment); else a UUID.
    ``api`` marks a job submitted through a drop-in API (its webhook speaks that API). With
    ``wait_for_definition``, a job whose queue has no default definition (and that names none)
    is stored waiting, unbound, until the queue gets one (``bind_waiting``); else it is refused.
    """
    queue, definition = _queue_and_definition(session, project, request)
    # An unbound job has no time of its own: the scheduler would queue it at that time.
    if definition is None and (not wait_for_definition or request.schedule_at is not None):
        raise _no_definition(queue)
    if definition is not None:
        # Today's container policy first: it may have changed since the registration.
        spec = definitions.current_spec(definition)
        policy.check({key: spec[key] for key in CONTAINER_FIELDS})
        bound = _binding(
            definition,
            parameters=request.parameters,
            env=request.env,
            secret_env=sorted(request.secret_env),
            command=request.command,
            timeout=request.timeout,
            limits=limits,
        )
        reference = f"{definition.name}:{definition.version}"
    else:
        # Unbound: the submission's own values, merged with the definition's when it is bound.
        limits.check_counts(len(request.parameters), len(request.env) + len(request.secret_env))
        bound = {
            "definition_name": UNBOUND_NAME,
            "definition_version": UNBOUND_VERSION,
            "max_attempts": 1,
            "command": request.command,
            "parameters": request.parameters,
            "env": request.env,
            "container": {},
            "timeout": request.timeout,
        }
        reference = None
    limits.check_document("input", request.input)
    limits.check_document("metadata", request.metadata)
    limits.check_secrets("secret_env", request.secret_env)

    if request.name is not None:
        _check_name_free(session, project, queue.name, request.name)

    now = utcnow()
    scheduled = request.schedule_at is not None and request.schedule_at > now
    webhook, webhook_auth = webhooks.seal_url(
        box, str(request.webhook) if request.webhook else None
    )
    job = Job(
        id=job_id or str(uuid.uuid4()),
        project=project,
        queue=queue.name,
        name=request.name,
        # An unbound job waits as ``scheduled`` with no time: neither the scheduler nor a
        # claim ever takes it, so the claim query stays as it is.
        status=JobStatus.SCHEDULED if scheduled or definition is None else JobStatus.QUEUED,
        priority=request.priority,
        secret_env_keys=sorted(request.secret_env),
        secret_env_ciphertext=box.encrypt(request.secret_env) if request.secret_env else None,
        input=request.input,
        job_metadata=request.metadata,
        webhook=webhook,
        webhook_auth_ciphertext=webhook_auth,
        schedule_at=request.schedule_at,
        api=api,
        create_time=now,
        update_time=now,
        **bound,
    )
    session.add(job)
    try:
        session.flush()
    except sa.exc.IntegrityError as exc:
        raise Conflict(
            f"an unfinished job named '{request.name}' already exists in queue '{queue.name}'",
            field="name",
        ) from exc
    record(
        session,
        job,
        EventType.CREATED,
        {"definition": reference, "queue": queue.name, "actor": actor.record()},
    )
    if definition is None:
        detail = {"waiting_for": f"a default definition of queue '{queue.name}'"}
        record(session, job, EventType.SCHEDULED, detail)
    elif scheduled:
        assert request.schedule_at is not None
        record(session, job, EventType.SCHEDULED, {"schedule_at": request.schedule_at.isoformat()})
    else:
        record(session, job, EventType.QUEUED, hub=hub)
    return job


def bind_waiting(session: Session, hub: Hub | None, queue: Queue) -> int:
    """Give the queue's default definition to its unbound jobs, as ``submit`` would have, and
    queue them; how many were bound.

    A job the definition cannot take (a required secret it lacks, a parameter without a value)
    is cancelled with the reason. Call it in the transaction that set the default definition.
    """
    definition = _resolve_definition(session, queue.project, queue, None)
    if definition is None:
        return 0
    waiting = session.exec(
        select(Job)
        .where(
            Job.project == queue.project,
            Job.queue == queue.name,
            Job.status == JobStatus.SCHEDULED,
            Job.definition_version == UNBOUND_VERSION,
        )
        .order_by(col(Job.seq))
        .with_for_update()
    ).all()
    reference = f"{definition.name}:{definition.version}"
    for job in waiting:
        try:
            bound = _binding(
                definition,
                parameters=job.parameters,
                env=job.env,
                secret_env=job.secret_env_keys,
                command=job.command,
                timeout=job.timeout,
                limits=None,
            )
        except InvalidRequest as exc:
            detail = {"definition": reference, "reason": exc.message}
            error = f"queue '{queue.name}' default definition {reference}: {exc.message}"
            transition(
                session, job, JobStatus.CANCELLED, EventType.CANCELLED, detail, hub, error=error
            )
            continue
        detail = {"definition": reference}
        transition(session, job, JobStatus.QUEUED, EventType.QUEUED, detail, hub, **bound)
    return len(waiting)


def _check_name_free(session: Session, project: str, queue: str, name: str) -> None:
    taken = session.exec(
        select(Job.id).where(
            Job.project == project,
            Job.queue == queue,
            Job.name == name,
            col(Job.status).in_(UNFINISHED),
        )
    ).first()
    if taken is not None:
        raise Conflict(
            f"an unfinished job named '{name}' already exists in queue '{queue}' ({taken})",
            field="name",
        )


def get(session: Session, project: str, job_id: str) -> Job:
    """The job; NotFound names it."""
    job = None
    if storable(job_id):
        job = session.exec(select(Job).where(Job.id == job_id, Job.project == project)).first()
    if job is None:
        raise NotFound(f"job '{job_id}' not found in project '{project}'", field="job")
    return job


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(str(seq).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        seq = int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except ValueError:
        seq = -1
    if not 0 < seq < 2**62:
        raise InvalidRequest("cursor: not a cursor returned by this API", field="cursor")
    return seq


def list_jobs(
    session: Session,
    project: str,
    *,
    queue: str | None = None,
    status: JobStatus | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    """A page of the project's jobs, newest first, and the cursor of the next page."""
    projects.get(session, project)
    statement = select(Job).where(Job.project == project)
    if queue is not None:
        statement = statement.where(Job.queue == queue)
    if status is not None:
        statement = statement.where(Job.status == status)
    if cursor is not None:
        statement = statement.where(col(Job.seq) < _decode_cursor(cursor))
    rows = list(session.exec(statement.order_by(sa.desc(col(Job.seq))).limit(limit + 1)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor(rows[-1].seq) if more and rows[-1].seq is not None else None
    return rows, next_cursor


def events(session: Session, job_id: str, after: int = 0) -> list[JobEvent]:
    """The job's events with an id greater than ``after``, oldest first."""
    statement = (
        select(JobEvent)
        .where(JobEvent.job_id == job_id, col(JobEvent.id) > after)
        .order_by(col(JobEvent.id))
    )
    return list(session.exec(statement).all())


def logs(
    session: Session, job_id: str, after: int = 0, attempt: int | None = None, limit: int = 5000
) -> list[JobLog]:
    """Stored log chunks of the job with an id greater than ``after``, oldest first."""
    statement = select(JobLog).where(JobLog.job_id == job_id, col(JobLog.id) > after)
    if attempt is not None:
        statement = statement.where(JobLog.attempt == attempt)
    return list(session.exec(statement.order_by(col(JobLog.id)).limit(limit)).all())


def cancel(
    session: Session, hub: Hub | None, project: str, job_id: str, actor: Actor = SYSTEM
) -> Job:
    """Cancel a waiting job at once; ask the runner to stop a starting or running one."""
    job = locked_job(session, get(session, project, job_id).id)
    if job.status.terminal:
        raise Conflict(f"job {job.id} is already {job.status}", field="status")
    who = {"actor": actor.record()}
    if job.status in WAITING:
        transition(session, job, JobStatus.CANCELLED, EventType.CANCELLED, who, hub)
    elif not job.cancel_requested:
        job.cancel_requested = True
        job.update_time = utcnow()
        session.add(job)
        record(session, job, EventType.CANCEL_REQUESTED, {"runner": job.runner, **who}, hub)
    return job


def locked_job(session: Session, job_id: str) -> Job:
    job = session.exec(select(Job).where(Job.id == job_id).with_for_update()).first()
    if job is None:
        raise NotFound(f"job '{job_id}' not found", field="job")
    return job


# --- runner side -------------------------------------------------------------------------
