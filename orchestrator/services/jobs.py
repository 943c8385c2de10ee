"""The job service: submit, cancel, and every status change.

Only ``transition`` here changes a job's status: it writes the job and its event in the
caller's transaction (``attempts`` calls it for the runner's side: claims, starts, outcomes,
retries). Runner writes are fenced by (runner, attempt): a runner that no longer holds an
attempt cannot change the job. Which queue and definition a submission binds to is worked out
in ``job_binding``; reads are in ``job_queries``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator import telemetry
from orchestrator.errors import Conflict, InvalidRequest, NotFound
from orchestrator.rules.definition_spec import CONTAINER_FIELDS
from orchestrator.rules.ids import time_ordered_id
from orchestrator.rules.input_limits import InputLimits
from orchestrator.rules.policy import ContainerPolicy
from orchestrator.rules.reasons import FailureReason
from orchestrator.rules.states import WAITING, EventType, JobStatus
from orchestrator.schemas.jobs import JobCreate
from orchestrator.services import (
    arrays,
    definitions,
    dependencies,
    job_binding,
    job_queries,
    job_rows,
    webhooks,
)
from orchestrator.services.audit import SYSTEM, Actor
from orchestrator.storage.db import after_commit
from orchestrator.storage.models import Definition, Job, JobEvent, Queue, utcnow
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
    job with a webhook that ends here gets its webhook message in the same transaction. A
    cancelled job's reason is ``cancelled``, however it was cancelled."""
    if job.status != status and not arrays.can_transition(job, status):
        raise Conflict(f"job {job.id} cannot go from {job.status} to {status}", field="status")
    ends = status.terminal and not job.status.terminal
    if status is JobStatus.CANCELLED:
        changes["reason"] = FailureReason.CANCELLED
    now = utcnow()
    # When it could first run in its state: a retry waits out its backoff (``run_after``).
    before, entered = job.status, max(job.update_time, job.run_after or job.update_time)
    job.status = status
    job.update_time = now
    if status.terminal:
        job.finish_time = now
    for name, value in changes.items():
        setattr(job, name, value)
    _measure(session, job, before, entered, now)
    session.add(job)
    record(session, job, event, detail, hub)
    if ends and job.webhook:
        webhooks.enqueue(session, job, hub)
    if ends:
        dependencies.ended(session, hub, job, transition)
    arrays.child_moved(session, job, before, hub, transition)


def _measure(
    session: Session, job: Job, before: JobStatus, entered: datetime, now: datetime
) -> None:
    """Count the move of ``job`` from ``before`` (runnable in it since ``entered``) to its
    status now, once the transaction commits. An array's parent runs nothing: its children
    are counted, not it."""
    if arrays.is_parent(job):
        return
    labels = (job.project, job.queue)
    status = job.status
    if status is JobStatus.STARTING and before is JobStatus.QUEUED:
        # A queued job changes only when it is claimed: it has waited since ``entered``.
        waited = (now - entered).total_seconds()
        after_commit(session, lambda: telemetry.QUEUE_WAIT.labels(*labels).observe(waited))
    elif status is JobStatus.RUNNING and before is not JobStatus.RUNNING:
        after_commit(session, lambda: telemetry.ATTEMPTS_STARTED.labels(*labels).inc())
    if status.terminal and not before.terminal:
        reason = "" if status is JobStatus.SUCCEEDED else str(job.reason or "")
        ran = (now - job.start_time).total_seconds() if job.start_time else None

        def count() -> None:
            telemetry.JOBS_ENDED.labels(*labels, str(status), reason).inc()
            if ran is not None:
                telemetry.RUN_DURATION.labels(*labels, str(status)).observe(ran)

        after_commit(session, count)


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
    _wake(session, job, event, hub)


def _wake(session: Session, job: Job, event: EventType, hub: Hub | None) -> None:
    """Wake the job's subscribers after commit (a queued job: the runners too; a cancel
    request: the runner that holds it)."""
    if hub is None:
        return
    topics = [job_topic(job.id)]
    if event in (EventType.QUEUED, EventType.REQUEUED):
        topics.append(WORK)
    if event is EventType.CANCEL_REQUESTED:
        topics.append(CANCEL)
    after_commit(session, lambda: hub.publish(*topics))


@dataclass(frozen=True)
class Planned:
    """A submission validated as ``submit`` would store it: the job (in no session), its queue,
    its definition (None: it waits, unbound, for its queue's default) and whether it waits for
    its ``schedule_at``."""

    job: Job
    queue: Queue
    definition: Definition | None
    scheduled: bool


def plan(
    session: Session,
    box: SecretBox,
    project: str,
    request: JobCreate,
    *,
    policy: ContainerPolicy,
    limits: InputLimits,
    job_id: str | None = None,
    api: str | None = None,
    wait_for_definition: bool = False,
) -> Planned:
    """Every check of a submission, and the job it makes; nothing is written (``submit`` stores
    it, a dry run shows it). The arguments are ``submit``'s."""
    queue, definition = job_binding.queue_and_definition(session, project, request)
    # An unbound job has no time of its own: the scheduler would queue it at that time.
    if definition is None and (
        not wait_for_definition or request.schedule_at is not None or request.array is not None
    ):
        raise job_binding.no_definition(queue)
    if definition is not None:
        # Today's container policy first: it may have changed since the registration. The
        # timeout checked is the one the job will run with: its own, else its definition's.
        spec = definitions.current_spec(definition)
        timeout = request.timeout if request.timeout is not None else spec["timeout"]
        policy.check({key: spec[key] for key in CONTAINER_FIELDS}, timeout=timeout)
        bound = job_binding.bind(
            definition,
            parameters=request.parameters,
            env=request.env,
            secret_env=sorted(request.secret_env),
            command=request.command,
            timeout=request.timeout,
            limits=limits,
            implicit=arrays.KEPT if request.array is not None else None,
            retry=request.retry_fields(),
        )
    else:
        dependencies.refuse_unbound(request.depends_on)
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
    limits.check_document("input", request.input)
    limits.check_document("metadata", request.metadata)
    limits.check_secrets("secret_env", request.secret_env)
    if request.array is not None:
        arrays.check(request, limits)
    size = request.array.size if request.array is not None else None
    input_from = dependencies.check(session, project, request.depends_on, request.input, size)

    if request.name is not None:
        job_binding.check_name_free(session, project, queue.name, request.name)

    now = utcnow()
    scheduled = request.schedule_at is not None and request.schedule_at > now
    # An unbound job waits as ``scheduled`` with no time: neither the scheduler nor a claim
    # ever takes it, so the claim query stays as it is. A job with dependencies is stored
    # ``pending``; ``dependencies.attach`` moves it on if they all ended already.
    status = JobStatus.SCHEDULED if scheduled or definition is None else JobStatus.QUEUED
    if dependencies.waits_whole(request.depends_on):
        status = JobStatus.PENDING
    webhook, webhook_auth = webhooks.seal_url(
        box, str(request.webhook) if request.webhook else None
    )
    job = Job(
        id=job_id or time_ordered_id(),
        project=project,
        queue=queue.name,
        name=request.name,
        status=status,
        priority=request.priority,
        secret_env_keys=sorted(request.secret_env),
        secret_env_ciphertext=box.encrypt(request.secret_env) if request.secret_env else None,
        input=request.input,
        input_from=input_from,
        job_metadata=request.metadata,
        webhook=webhook,
        webhook_auth_ciphertext=webhook_auth,
        schedule_at=request.schedule_at,
        api=api,
        create_time=now,
        update_time=now,
        array_size=request.array.size if request.array is not None else None,
        unfinished_children=request.array.size if request.array is not None else None,
        **bound,
    )
    return Planned(job, queue, definition, scheduled)


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
    planned = plan(
        session,
        box,
        project,
        request,
        policy=policy,
        limits=limits,
        job_id=job_id,
        api=api,
        wait_for_definition=wait_for_definition,
    )
    definition, queue_name = planned.definition, planned.queue.name
    reference = f"{definition.name}:{definition.version}" if definition is not None else None
    created = {"definition": reference, "queue": queue_name, "actor": actor.record()}
    if request.links_jobs:
        _store_linked(session, hub, planned, request, created)
    else:
        _store(session, hub, planned, request, created)
    # The jobs that will run: an array's children (its parent runs nothing itself).
    runnable = request.array.size if request.array is not None else 1
    after_commit(
        session, lambda: telemetry.JOBS_SUBMITTED.labels(project, queue_name).inc(runnable)
    )
    return planned.job


def _store(
    session: Session,
    hub: Hub | None,
    planned: Planned,
    request: JobCreate,
    created: dict[str, Any],
) -> None:
    """Store a job linked to no other, and its first events, by statements built once: the
    usual submission, whose ORM flush cost more CPU than the database's work."""
    job = planned.job
    try:
        job_rows.insert_job(session, job)
    except sa.exc.IntegrityError as exc:
        raise _name_taken(request, planned.queue.name) from exc
    waiting, detail = _first_wait(planned, request)
    job_rows.insert_events(session, job, [(EventType.CREATED, created), (waiting, detail)])
    # A job waiting for its time or its definition wakes no one: no runner may take it yet.
    if waiting is EventType.QUEUED:
        _wake(session, job, waiting, hub)


def _store_linked(
    session: Session,
    hub: Hub | None,
    planned: Planned,
    request: JobCreate,
    created: dict[str, Any],
) -> None:
    """Store a job with dependencies, or an array (its children too), through the session:
    ``dependencies`` and ``arrays`` move them on in this transaction."""
    job, definition = planned.job, planned.definition
    # Read now: a failed flush rolls the session back and expires what it loaded.
    queue_name = planned.queue.name
    session.add(job)
    try:
        session.flush()
    except sa.exc.IntegrityError as exc:
        raise _name_taken(request, queue_name) from exc
    record(session, job, EventType.CREATED, created)
    whole = dependencies.waits_whole(request.depends_on)
    dependencies.link(session, job, request.depends_on)
    if whole:
        dependencies.attach(session, hub, job, whole, transition)
    else:
        waiting, detail = _first_wait(planned, request)
        record(session, job, waiting, detail, hub if waiting is EventType.QUEUED else None)
    if request.array is not None:
        assert definition is not None
        arrays.insert_children(session, job, arrays.template(definition, request))
        doomed = dependencies.attach_children(session, job, request.depends_on)
        arrays.record_children(session, job)
        dependencies.fail_children(session, hub, doomed, transition)


def _name_taken(request: JobCreate, queue: str) -> Conflict:
    """The error for a job name that another submit took, and committed, between the plan's
    check (``job_binding.check_name_free``) and this one's insert."""
    return Conflict(
        f"an unfinished job named '{request.name}' already exists in queue '{queue}'",
        field="name",
    )


def _first_wait(planned: Planned, request: JobCreate) -> tuple[EventType, dict[str, Any] | None]:
    """The event of the state a new job waits in (but ``pending``: ``dependencies.attach``
    records that) and its detail."""
    if planned.definition is None:
        return EventType.SCHEDULED, {
            "waiting_for": f"a default definition of queue '{planned.queue.name}'"
        }
    if planned.scheduled:
        assert request.schedule_at is not None
        return EventType.SCHEDULED, {"schedule_at": request.schedule_at.isoformat()}
    return EventType.QUEUED, None


def bind_waiting(session: Session, hub: Hub | None, queue: Queue) -> int:
    """Give the queue's default definition to its unbound jobs, as ``submit`` would have, and
    queue them; how many were bound.

    A job the definition cannot take (a required secret it lacks, a parameter without a value)
    is cancelled with the reason. Call it in the transaction that set the default definition.
    """
    definition = job_binding.resolve_definition(session, queue.project, queue, None)
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
            bound = job_binding.bind(
                definition,
                parameters=job.parameters,
                env=job.env,
                secret_env=job.secret_env_keys,
                command=job.command,
                timeout=job.timeout,
                limits=None,
            )
        except InvalidRequest as exc:
            error = f"queue '{queue.name}' default definition {reference}: {exc.message}"
            detail = {"definition": reference, "reason": FailureReason.CANCELLED, "error": error}
            transition(
                session,
                job,
                JobStatus.CANCELLED,
                EventType.CANCELLED,
                detail,
                hub,
                error=error,
            )
            continue
        detail = {"definition": reference}
        transition(session, job, JobStatus.QUEUED, EventType.QUEUED, detail, hub, **bound)
    return len(waiting)


def cancel(
    session: Session, hub: Hub | None, project: str, job_id: str, actor: Actor = SYSTEM
) -> Job:
    """Cancel a waiting job at once; ask the runner to stop a starting or running one (an
    array job: each of its unfinished children)."""
    job = job_queries.get(session, project, job_id)
    if arrays.is_parent(job):
        # Every unfinished child is cancelled; the parent ends with its last child.
        parent, children = arrays.lock_for_cancel(session, job)
        dependencies.note_dependents(session, [child.id for child in children])
        if not parent.cancel_requested:
            parent.cancel_requested = True
            parent.update_time = utcnow()
            session.add(parent)
            detail = {"actor": actor.record(), "children": len(children)}
            record(session, parent, EventType.CANCEL_REQUESTED, detail, hub)
        for child in children:
            cancel_locked(session, hub, child, actor)
        return parent
    return cancel_locked(session, hub, locked_job(session, job.id), actor)


def cancel_locked(session: Session, hub: Hub | None, job: Job, actor: Actor = SYSTEM) -> Job:
    """``cancel`` of a job the caller has locked."""
    if job.status.terminal:
        raise Conflict(f"job {job.id} is already {job.status}", field="status")
    who = {"actor": actor.record()}
    if job.status in WAITING:
        cancelled = {**who, "reason": FailureReason.CANCELLED}
        transition(
            session,
            job,
            JobStatus.CANCELLED,
            EventType.CANCELLED,
            cancelled,
            hub,
        )
    elif not job.cancel_requested:
        job.cancel_requested = True
        job.update_time = utcnow()
        session.add(job)
        record(session, job, EventType.CANCEL_REQUESTED, {"runner": job.runner, **who}, hub)
    return job


def locked_job(session: Session, job_id: str) -> Job:
    """The job, locked until the transaction ends; NotFound if there is none."""
    job = session.exec(select(Job).where(Job.id == job_id).with_for_update()).first()
    if job is None:
        raise NotFound(f"job '{job_id}' not found", field="job")
    return job
