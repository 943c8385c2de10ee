"""The runner's side of a job's life: claiming, starting, finishing, giving back and taking
back attempts, their logs and secrets. Every status change goes through ``jobs.transition``,
the one writer of a job's status."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.rules.definition_spec import RetryPolicy
from orchestrator.rules.reasons import FailureReason
from orchestrator.rules.retry_rules import RetryAction
from orchestrator.rules.states import (
    ACTIVE,
    EventType,
    JobStatus,
)
from orchestrator.services import arrays
from orchestrator.services.jobs import locked_job, record, transition
from orchestrator.storage.db import after_commit, serialize
from orchestrator.storage.models import Job, JobLog, Queue, utcnow
from orchestrator.storage.secret_box import SecretBox
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.topics import job_topic

CLAIM_LOCK = "orchestrator.claim"
# Heads a claim reads before it gives up on this pass (each one a cancel ended meanwhile).
CLAIM_TRIES = 3


def queue_filter(queues: Sequence[str]) -> sa.ColumnElement[bool]:
    """Which queues a runner limited to ``queues`` claims from: ``name`` (in any project) or
    ``project::name``."""
    conditions = []
    for entry in queues:
        project, _, name = entry.rpartition("::")
        if project:
            conditions.append(sa.and_(col(Queue.project) == project, col(Queue.name) == name))
        else:
            conditions.append(col(Queue.name) == name)
    return sa.or_(*conditions)


def _claimable_queues(session: Session, queues: Sequence[str] | None) -> list[Queue]:
    """The queues a claim may take from, highest priority first: not paused, under their
    ``max_concurrency``, and among ``queues`` when given."""
    active = Job.__table__.alias("active")  # type: ignore[attr-defined]
    running = (
        select(sa.func.count())
        .select_from(active)
        .where(
            active.c.project == Queue.project,
            active.c.queue == Queue.name,
            active.c.status.in_(sorted(ACTIVE)),
            # An array parent runs nothing itself: its children count.
            active.c.unfinished_children.is_(None),
        )
        .scalar_subquery()
    )
    statement = (
        select(Queue)
        .where(
            col(Queue.paused).is_(False),
            sa.or_(col(Queue.max_concurrency).is_(None), running < col(Queue.max_concurrency)),
        )
        .order_by(sa.desc(col(Queue.priority)), col(Queue.id))
    )
    if queues:
        statement = statement.where(queue_filter(queues))
    return list(session.exec(statement).all())


def _next_in_queue(session: Session, queue: Queue, now: datetime) -> Job | None:
    """The queue's next runnable job: by job priority, then submit order (``ix_jobs_queue_claim``
    gives this order, so it is one index probe however many jobs wait)."""
    statement = (
        select(Job)
        .where(
            Job.project == queue.project,
            Job.queue == queue.name,
            Job.status == JobStatus.QUEUED,
            sa.or_(col(Job.run_after).is_(None), col(Job.run_after) <= now),
            arrays.NOT_PARENT,
        )
        .order_by(sa.desc(col(Job.priority)), col(Job.seq))
        .limit(1)
    )
    return session.exec(statement).first()


def _best_head(session: Session, queues: Sequence[str] | None, now: datetime) -> Job | None:
    """The next job to claim. Queues of equal priority compete on job priority and submit
    order: each one's next job is taken and the best kept. A higher-priority group with any
    runnable job wins outright."""
    for _, group in groupby(_claimable_queues(session, queues), key=lambda queue: queue.priority):
        heads = [head for queue in group if (head := _next_in_queue(session, queue, now))]
        if heads:
            return min(heads, key=lambda head: (-head.priority, head.seq or 0))
    return None


def claim(
    session: Session, runner: str, hub: Hub | None = None, queues: Sequence[str] | None = None
) -> Job | None:
    """Atomically take the next runnable job for ``runner`` and mark it ``starting``.

    Order: queue priority, job priority, then submit order. Paused queues and queues at their
    ``max_concurrency`` are passed over; ``queues`` limits the claim to those queues.
    """
    serialize(session, CLAIM_LOCK)
    now = utcnow()
    for _ in range(CLAIM_TRIES):
        job = _best_head(session, queues, now)
        if job is None:
            return None
        # The head was read without a lock: lock it and read it afresh, for a cancel may have
        # ended it since (on PostgreSQL the update below would otherwise overwrite the cancel,
        # and the cancelled job would run).
        session.refresh(job, with_for_update=True)
        if job.status is JobStatus.QUEUED:
            break
    else:
        return None
    transition(
        session,
        job,
        JobStatus.STARTING,
        EventType.STARTING,
        {"runner": runner},
        hub,
        attempt=job.attempt + 1,
        runner=runner,
        run_after=None,
        container_id=None,
        exit_code=None,
        error=None,
        output=None,
        reason=None,
    )
    return job


def scheduled_due(session: Session) -> bool:
    """Whether any scheduled job's time has come (a cheap read before ``promote_due``)."""
    statement = select(Job.id).where(
        Job.status == JobStatus.SCHEDULED, col(Job.schedule_at) <= utcnow()
    )
    return session.exec(statement.limit(1)).first() is not None


def promote_due(session: Session, hub: Hub | None = None) -> int:
    """Queue every scheduled job whose time has come; how many were queued."""
    due = session.exec(
        select(Job)
        .where(Job.status == JobStatus.SCHEDULED, col(Job.schedule_at) <= utcnow())
        .with_for_update(skip_locked=True)
    ).all()
    for job in due:
        transition(session, job, JobStatus.QUEUED, EventType.QUEUED, hub=hub)
    return len(due)


def next_due(session: Session) -> datetime | None:
    """The earliest future time at which a waiting job becomes runnable (backoff or schedule)."""
    # One statement (a round trip on PostgreSQL): the runner asks after every pass.
    backoff = (
        select(sa.func.min(Job.run_after)).where(Job.status == JobStatus.QUEUED).scalar_subquery()
    )
    scheduled = (
        select(sa.func.min(Job.schedule_at))
        .where(Job.status == JobStatus.SCHEDULED)
        .scalar_subquery()
    )
    times = [t for t in session.execute(sa.select(backoff, scheduled)).one() if t is not None]
    return min(times) if times else None


def held(session: Session, job_id: str, runner: str, attempt: int) -> Job | None:
    """The job, locked, if ``runner`` still holds ``attempt`` of it; else None (fenced out)."""
    job = locked_job(session, job_id)
    if job.runner != runner or job.attempt != attempt or job.status not in ACTIVE:
        return None
    return job


def mark_running(
    session: Session,
    hub: Hub | None,
    job_id: str,
    runner: str,
    attempt: int,
    container_id: str,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Record that the attempt's container started (``detail``: more for the ``started``
    event, e.g. which worker container serves it); False when the runner was fenced out."""
    job = held(session, job_id, runner, attempt)
    if job is None:
        return False
    transition(
        session,
        job,
        JobStatus.RUNNING,
        EventType.STARTED,
        {**(detail or {}), "container_id": container_id, "runner": runner},
        hub,
        container_id=container_id,
        start_time=job.start_time or utcnow(),
    )
    return True


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt came to, as seen by the runner."""

    exit_code: int | None = None
    output: Any = None
    error: str | None = None
    timed_out: bool = False
    cancelled: bool = False
    retryable: bool = True
    # Why the infrastructure, not the job, ended the attempt (e.g. the engine restarted).
    interrupted: FailureReason | None = None
    # Why the attempt failed, where its exit code alone does not say (out of memory, no image).
    reason: FailureReason | None = None
    # The attempt's last log line (masked), for retry rules that match on it.
    log_line: str | None = None

    def failure_reason(self) -> FailureReason | None:
        """Why the attempt did not succeed; None when it succeeded."""
        if self.cancelled:
            return FailureReason.CANCELLED
        if self.interrupted is not None:
            return self.interrupted
        if self.timed_out:
            return FailureReason.TIMED_OUT
        if self.reason is not None:
            return self.reason
        if self.exit_code == 0:
            return None if self.error is None else FailureReason.OUTPUT_INVALID
        if self.exit_code is not None:
            return FailureReason.EXIT_CODE
        # An error with neither an exit code nor a reason given: the runner's own failure.
        return FailureReason.RUNNER_ERROR if self.error is not None else None


@dataclass(frozen=True)
class Outcome:
    """The decision about a finished attempt."""

    status: JobStatus
    retry_delay: float | None = None
    interrupted: bool = False
    reason: FailureReason | None = None
    # Failed by a retry rule's ``fail`` (not by running out of attempts or interruptions).
    ruled: bool = False


def decide(
    result: AttemptResult,
    attempt: int,
    policy: RetryPolicy,
    *,
    interrupted_attempts: int = 0,
    interruption_limit: int = 0,
) -> Outcome:
    """Pure: what a finished attempt means for the job (succeeded, retried, failed, cancelled).

    Attempts the infrastructure interrupted do not count against ``policy.attempts``; a job
    gets up to ``interruption_limit`` of them, unless a retry rule matching the interruption
    says ``fail``. Any other failure is retried as ``policy.retries`` says.
    """
    reason = result.failure_reason()
    if result.cancelled:
        return Outcome(JobStatus.CANCELLED, reason=reason)
    if reason is None:
        return Outcome(JobStatus.SUCCEEDED)
    # A timed-out or interrupted attempt has no exit code of its own: our stop, or the
    # infrastructure's kill, made it. Rules match such an attempt by its reason only.
    code = None if result.timed_out or result.interrupted is not None else result.exit_code
    if result.interrupted is not None:
        if policy.action_for(code, reason, result.log_line) is RetryAction.FAIL:
            return Outcome(JobStatus.FAILED, reason=reason, ruled=True)
        if interrupted_attempts < interruption_limit:
            return Outcome(JobStatus.QUEUED, retry_delay=0.0, interrupted=True, reason=reason)
        return Outcome(JobStatus.FAILED, reason=reason)
    attempt -= interrupted_attempts
    if policy.retries(attempt, code, reason, result.log_line, retryable=result.retryable):
        delay = policy.delay_before(attempt + 1)
        return Outcome(JobStatus.QUEUED, retry_delay=delay, reason=reason)
    return Outcome(JobStatus.FAILED, reason=reason)


def finish(
    session: Session,
    hub: Hub | None,
    job_id: str,
    runner: str,
    attempt: int,
    result: AttemptResult,
    interruption_limit: int = 0,
) -> Job | None:
    """Record a finished attempt and move the job on; None when the runner was fenced out.

    The job keeps the attempt's reason (None when it succeeded) until its next attempt starts.
    """
    job = held(session, job_id, runner, attempt)
    if job is None:
        return None
    if job.cancel_requested:
        result = AttemptResult(**{**result.__dict__, "cancelled": True})
    outcome = decide(
        result,
        attempt,
        RetryPolicy.model_validate(job.container["retry"]),
        interrupted_attempts=job.interrupted_attempts,
        interruption_limit=interruption_limit,
    )
    detail: dict[str, Any] = {"exit_code": result.exit_code}
    if outcome.reason is not None:
        detail["reason"] = outcome.reason
    if result.error:
        detail["error"] = result.error
    if result.timed_out:
        timed_out = {"timeout": job.timeout, "reason": FailureReason.TIMED_OUT}
        record(session, job, EventType.TIMED_OUT, timed_out, hub)
    common = {
        "exit_code": result.exit_code,
        "error": result.error,
        "output": result.output,
        "reason": outcome.reason,
    }
    if result.interrupted is not None and not result.cancelled:
        interrupt(
            session,
            hub,
            job,
            EventType.INTERRUPTED,
            {**detail, "runner": runner},
            requeue=outcome.status is JobStatus.QUEUED,
            ruled=outcome.ruled,
            **common,
        )
    elif outcome.status is JobStatus.QUEUED:
        assert outcome.retry_delay is not None
        record(
            session,
            job,
            EventType.RETRYING,
            {**detail, "next_attempt": attempt + 1, "delay": outcome.retry_delay},
            hub,
        )
        transition(
            session,
            job,
            JobStatus.QUEUED,
            EventType.QUEUED,
            {"attempt": attempt + 1},
            hub,
            run_after=utcnow() + timedelta(seconds=outcome.retry_delay),
            container_id=None,
            **common,
        )
    else:
        event = {
            JobStatus.SUCCEEDED: EventType.SUCCEEDED,
            JobStatus.FAILED: EventType.FAILED,
            JobStatus.CANCELLED: EventType.CANCELLED,
        }[outcome.status]
        transition(session, job, outcome.status, event, detail, hub, **common)
    return job


def requeue(
    session: Session, hub: Hub | None, job_id: str, runner: str, attempt: int, message: str
) -> bool:
    """Give back an attempt that never ran (the engine was down); it does not count, and
    leaves no reason (``message`` says why, in the ``requeued`` event)."""
    job = held(session, job_id, runner, attempt)
    if job is None:
        return False
    if job.cancel_requested:
        cancelled = {"reason": FailureReason.CANCELLED, "error": message}
        transition(session, job, JobStatus.CANCELLED, EventType.CANCELLED, cancelled, hub)
        return True
    transition(
        session,
        job,
        JobStatus.QUEUED,
        EventType.REQUEUED,
        {"error": message},
        hub,
        attempt=attempt - 1,
        runner=None,
        container_id=None,
    )
    return True


def interrupt(
    session: Session,
    hub: Hub | None,
    job: Job,
    event: EventType,
    detail: dict[str, Any],
    *,
    requeue: bool,
    ruled: bool = False,
    **changes: Any,
) -> None:
    """End an attempt the infrastructure interrupted: a new attempt that does not count, or
    (``requeue`` False: the job had its share of interruptions, or a retry rule says
    ``fail``) failed with the reason. ``detail["reason"]`` is the interruption's reason."""
    record(session, job, event, detail, hub)
    if job.cancel_requested:
        cancelled = {**detail, "reason": FailureReason.CANCELLED}
        transition(
            session, job, JobStatus.CANCELLED, EventType.CANCELLED, cancelled, hub, **changes
        )
    elif requeue:
        transition(
            session,
            job,
            JobStatus.QUEUED,
            EventType.QUEUED,
            {"attempt": job.attempt + 1, "reason": detail["reason"]},
            hub,
            interrupted_attempts=job.interrupted_attempts + 1,
            runner=None,
            container_id=None,
            run_after=None,
            **changes,
        )
    else:
        error = changes.pop("error", None) or f"the attempt was interrupted: {detail['reason']}"
        if ruled:
            error += " (a retry rule fails the job on this reason)"
        else:
            count = job.interrupted_attempts + 1
            error += f" (the job was interrupted {count} times; giving up)"
        transition(
            session, job, JobStatus.FAILED, EventType.FAILED, detail, hub, error=error, **changes
        )


def recover(
    session: Session,
    hub: Hub | None,
    runner: str,
    reason: FailureReason,
    interruption_limit: int,
) -> list[str]:
    """Take back every job the (lost) ``runner`` holds: a new attempt, or failed past the
    interruption limit. The runner's own writes are fenced out from now on."""
    jobs = session.exec(
        select(Job)
        .where(Job.runner == runner, col(Job.status).in_(ACTIVE))
        .with_for_update(skip_locked=True)
    ).all()
    for job in jobs:
        detail = {"reason": reason, "runner": runner, "lost_attempt": job.attempt}
        outcome = _after_interruption(job, reason, interruption_limit)
        interrupt(
            session,
            hub,
            job,
            EventType.RUNNER_LOST,
            detail,
            requeue=outcome.status is JobStatus.QUEUED,
            ruled=outcome.ruled,
            error=f"the runner '{runner}' holding the attempt was lost",
            reason=reason,
        )
    return [job.id for job in jobs]


def _after_interruption(job: Job, reason: FailureReason, interruption_limit: int) -> Outcome:
    """What an interruption with no exit code of its own (a lost runner) means for the job.
    A job stored with no retry policy has the default one: taking a job back never fails for
    want of it, as it did not before retry rules took part."""
    return decide(
        AttemptResult(interrupted=reason),
        job.attempt,
        RetryPolicy.model_validate(job.container.get("retry", {})),
        interrupted_attempts=job.interrupted_attempts,
        interruption_limit=interruption_limit,
    )


def cancel_requested(session: Session, runner: str) -> list[str]:
    """Ids of the jobs held by ``runner`` whose cancel has been requested."""
    statement = select(Job.id).where(
        Job.runner == runner, col(Job.cancel_requested).is_(True), col(Job.status).in_(ACTIVE)
    )
    return list(session.exec(statement).all())


def append_logs(
    session: Session,
    hub: Hub | None,
    job_id: str,
    attempt: int,
    chunks: list[tuple[datetime, str]],
    stream: int | None = None,
) -> None:
    """Store log chunks (already masked) of one ``stream`` (None: the orchestrator's own text,
    or not known) and wake the job's followers after commit."""
    session.add_all(
        JobLog(job_id=job_id, attempt=attempt, time=t, text=text, stream=stream)
        for t, text in chunks
    )
    if hub is not None:
        after_commit(session, lambda: hub.publish(job_topic(job_id)))


def secret_values(job: Job, box: SecretBox) -> dict[str, str]:
    """The job's secret env, decrypted (for the container's environment and log masking)."""
    return box.decrypt(job.secret_env_ciphertext) if job.secret_env_ciphertext else {}


def held_by(session: Session, runner: str) -> list[Job]:
    """The jobs ``runner`` holds (starting or running), for adoption after a restart."""
    statement = select(Job).where(Job.runner == runner, col(Job.status).in_(ACTIVE))
    return list(session.exec(statement).all())


def active_attempts(session: Session) -> set[tuple[str, int]]:
    """(job id, attempt) of every attempt some runner holds (starting or running): their
    containers and directories are not strays, whichever runner made them."""
    statement = select(Job.id, Job.attempt).where(col(Job.status).in_(ACTIVE))
    return {(job_id, attempt) for job_id, attempt in session.exec(statement).all()}


def busy_projects(session: Session) -> set[str]:
    """Projects with a job queued, starting or running: their networks are about to be used."""
    statement = select(Job.project).where(col(Job.status).in_(ACTIVE | {JobStatus.QUEUED}))
    return set(session.exec(statement.distinct()).all())


def existing(session: Session, job_ids: set[str]) -> set[str]:
    """Which of ``job_ids`` are jobs of this database."""
    if not job_ids:
        return set()
    statement = select(Job.id).where(col(Job.id).in_(job_ids))
    return set(session.exec(statement).all())


def last_log_time(session: Session, job_id: str, attempt: int) -> datetime | None:
    """The time stored with the attempt's last log batch: the runner's resume point, where
    Docker's output of the attempt is not stored yet (it may go back: see ``LogPump``)."""
    statement = (
        select(JobLog.time)
        .where(JobLog.job_id == job_id, JobLog.attempt == attempt)
        .order_by(col(JobLog.id).desc())
        .limit(1)
    )
    return session.exec(statement).first()
