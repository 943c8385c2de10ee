"""Job dependencies: a job waits, ``pending``, until the jobs it names end.

Owns ``job_dependencies`` and a job's ``open_dependencies``. ``attach`` links a new job to its
dependencies at submit; ``ended`` is called by ``jobs.transition`` as any job ends and releases
or fails that job's dependents in the same transaction, so no end can be lost between two
transactions (a crash rolls back both or neither). It finds them through the index on the
dependency, never by scanning waiting jobs. Status changes go through the ``move`` it is
handed (``jobs.transition``, which calls ``ended`` back: this module cannot import it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.errors import InvalidRequest, LimitExceeded, NotFound
from orchestrator.rules.dependencies import MAX_DEPENDENCIES, Condition, input_sources, releases
from orchestrator.rules.input_limits import InputLimits, json_size
from orchestrator.rules.reasons import FailureReason
from orchestrator.rules.states import EventType, JobStatus
from orchestrator.schemas.jobs import DependencyCreate, DependencyPublic
from orchestrator.storage.models import Job, JobDependency, utcnow
from orchestrator.wakeups.hub import Hub

# The session's queue of jobs that ended and whose dependents are still to settle, while
# ``ended`` works through them (a failure cascading down a chain is a loop, not a recursion).
_ENDED = "orchestrator.dependencies.ended"
# Dependents read per statement (bound parameters: PostgreSQL takes at most 65,535).
_CHUNK = 1000


class Move(Protocol):
    """``jobs.transition``'s signature: the one writer of a job's status."""

    def __call__(
        self,
        session: Session,
        job: Job,
        status: JobStatus,
        event: EventType,
        detail: dict[str, Any] | None = None,
        hub: Hub | None = None,
        **changes: Any,
    ) -> None: ...


def check(
    session: Session, project: str, depends_on: Sequence[DependencyCreate], document: Any
) -> list[str] | None:
    """Refuse ``depends_on`` naming more than ``MAX_DEPENDENCIES`` jobs (422) or a job that is
    not in ``project`` (404, as any job of another project); the ids whose outputs make the
    input (``input: {"from": [...]}``, each among ``depends_on``), or None."""
    if len(depends_on) > MAX_DEPENDENCIES:
        raise LimitExceeded(
            f"depends_on: {len(depends_on)} jobs is over the limit of {MAX_DEPENDENCIES}",
            field="depends_on",
        )
    ids = [dependency.job for dependency in depends_on]
    if ids:
        found = set(
            session.exec(select(Job.id).where(Job.project == project, col(Job.id).in_(ids))).all()
        )
        for job_id in ids:
            if job_id not in found:
                raise NotFound(f"depends_on: job '{job_id}' not found", field="depends_on")
    return input_sources(document, ids)


def attach(
    session: Session,
    hub: Hub | None,
    job: Job,
    depends_on: Sequence[DependencyCreate],
    move: Move,
) -> None:
    """Link the new ``job`` (stored ``pending``, its events up to ``created`` recorded) to its
    dependencies, and move it on at once if they all ended already: queued (or scheduled),
    or failed if one it needs to succeed did not. Else it stays ``pending``.

    The dependencies are locked first: one ending now either commits before this reads it
    (ended) or waits for this link to commit and then finds it."""
    ids = sorted(dependency.job for dependency in depends_on)
    rows = session.execute(
        select(Job.id, Job.status, Job.output)
        .where(Job.project == job.project, col(Job.id).in_(ids))
        .order_by(col(Job.id))
        .with_for_update()
    ).all()
    statuses: dict[str, JobStatus] = {job_id: status for job_id, status, _ in rows}
    for position, dependency in enumerate(depends_on):
        if dependency.job not in statuses:  # Deleted since ``check``.
            raise NotFound(f"depends_on: job '{dependency.job}' not found", field="depends_on")
        session.add(
            JobDependency(
                job_id=job.id,
                dependency_id=dependency.job,
                position=position,
                release_on=dependency.on,
                type=dependency.type,
            )
        )
    for dependency in depends_on:
        status = statuses[dependency.job]
        if status.terminal and not releases(dependency.on, status):
            _fail(session, hub, job, dependency.job, status, move)
            return
    waiting = [dependency.job for dependency in depends_on if not statuses[dependency.job].terminal]
    job.open_dependencies = len(waiting)
    if job.input_from is not None:
        job.input = {}
        for job_id, status, output in rows:
            if status.terminal:
                _collect(job, job_id, output)
    if waiting:
        move(session, job, JobStatus.PENDING, EventType.PENDING, {"waiting_for": waiting}, hub)
    else:
        _release(session, hub, job, None, move)


def ended(session: Session, hub: Hub | None, job: Job, move: Move) -> None:
    """Settle the dependents of ``job``, which just ended (called by ``jobs.transition``): each
    one whose condition its end breaks fails with ``dependency_failed`` (and its own dependents
    after it, down the chain); each one it was the last open dependency of is released."""
    queue: deque[tuple[str, JobStatus, Any]] | None = session.info.get(_ENDED)
    if queue is not None:
        # A dependent this loop failed: its own dependents wait their turn in the loop.
        queue.append((job.id, job.status, job.output))
        return
    queue = session.info[_ENDED] = deque([(job.id, job.status, job.output)])
    try:
        while queue:
            dependency_id, status, output = queue.popleft()
            _settle(session, hub, dependency_id, status, output, move)
    finally:
        session.info.pop(_ENDED, None)


def _settle(
    session: Session,
    hub: Hub | None,
    dependency_id: str,
    status: JobStatus,
    output: Any,
    move: Move,
) -> None:
    conditions = dict(
        session.execute(
            select(JobDependency.job_id, JobDependency.release_on).where(
                JobDependency.dependency_id == dependency_id
            )
        ).all()
    )
    ids = sorted(conditions)
    # By id, a chunk at a time: each row found through the jobs' unique index on id. A
    # subquery here let the planner walk every pending job instead (``status`` is indexed).
    dependents = [
        job
        for start in range(0, len(ids), _CHUNK)
        for job in session.exec(
            select(Job)
            .where(col(Job.id).in_(ids[start : start + _CHUNK]), Job.status == JobStatus.PENDING)
            .order_by(col(Job.id))
            .with_for_update()
        ).all()
    ]
    for dependent in dependents:
        if not releases(Condition(conditions[dependent.id]), status):
            _fail(session, hub, dependent, dependency_id, status, move)
            continue
        dependent.open_dependencies -= 1
        _collect(dependent, dependency_id, output)
        if dependent.open_dependencies > 0:
            session.add(dependent)
        else:
            _release(session, hub, dependent, dependency_id, move)


def _fail(
    session: Session,
    hub: Hub | None,
    job: Job,
    dependency_id: str,
    status: JobStatus,
    move: Move,
) -> None:
    error = f"dependency {dependency_id} {status}"
    detail = {
        "reason": FailureReason.DEPENDENCY_FAILED,
        "dependency": dependency_id,
        "dependency_status": status,
    }
    reason = FailureReason.DEPENDENCY_FAILED
    move(session, job, JobStatus.FAILED, EventType.FAILED, detail, hub, reason=reason, error=error)


def _release(session: Session, hub: Hub | None, job: Job, by: str | None, move: Move) -> None:
    """Queue ``job`` (scheduled if its ``schedule_at`` is still ahead), its input made of its
    dependencies' outputs if it asked for them; ``by``: the dependency whose end released it
    (None: they had all ended when it was submitted)."""
    changes: dict[str, Any] = {"open_dependencies": 0}
    detail: dict[str, Any] = {"released_by": by} if by else {"dependencies": "ended"}
    if job.schedule_at is not None and job.schedule_at > utcnow():
        detail["schedule_at"] = job.schedule_at.isoformat()
        move(session, job, JobStatus.SCHEDULED, EventType.SCHEDULED, detail, hub, **changes)
    else:
        move(session, job, JobStatus.QUEUED, EventType.QUEUED, detail, hub, **changes)


def _collect(job: Job, dependency_id: str, output: Any) -> None:
    """Put the output of ``dependency_id``, which ended, in ``job``'s input if it reads it: the
    input fills in as its dependencies end, so it never needs one of them again (one that is
    deleted later leaves it whole)."""
    if job.input_from is None or dependency_id not in job.input_from:
        return
    collected = {**(job.input or {}), dependency_id: output}
    job.input = {key: collected[key] for key in job.input_from if key in collected}


def input_refused(job: Job, limits: InputLimits) -> str | None:
    """Why the runner must not start ``job``: its input made of its dependencies' outputs is
    over ``ORCH_MAX_INPUT_BYTES`` (checked here: the outputs are known only once they ended);
    None when it may start."""
    if job.input_from is None:
        return None
    size = json_size(job.input)
    if size <= limits.max_input_bytes:
        return None
    return (
        f"input: the outputs of {', '.join(job.input_from)} make {size} bytes of JSON, over "
        f"the limit of {limits.max_input_bytes} bytes (ORCH_MAX_INPUT_BYTES)"
    )


def shown(session: Session, job_id: str) -> tuple[list[DependencyPublic], int]:
    """The job's dependencies (with their statuses now, in its ``depends_on`` order) and how
    many jobs depend on it."""
    rows = session.execute(
        select(JobDependency, Job.status)
        .outerjoin(Job, col(Job.id) == JobDependency.dependency_id)
        .where(JobDependency.job_id == job_id)
        .order_by(col(JobDependency.position))
    ).all()
    dependents = session.exec(
        select(sa.func.count())
        .select_from(JobDependency)
        .where(JobDependency.dependency_id == job_id)
    ).one()
    return [DependencyPublic.from_row(link, status) for link, status in rows], int(dependents)


def refuse_unbound(depends_on: Sequence[DependencyCreate]) -> None:
    """A job that waits for its queue's default definition cannot also wait for jobs."""
    if depends_on:
        raise InvalidRequest(
            "depends_on: a job without a definition cannot have dependencies",
            field="depends_on",
        )
