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
from orchestrator.rules.dependencies import (
    MAX_DEPENDENCIES,
    Condition,
    DependencyType,
    input_sources,
    releases,
)
from orchestrator.rules.input_limits import InputLimits, json_size
from orchestrator.rules.reasons import FailureReason
from orchestrator.rules.states import TERMINAL, EventType, JobStatus
from orchestrator.schemas.jobs import DependencyCreate, DependencyPublic
from orchestrator.storage.models import Job, JobDependency, utcnow
from orchestrator.wakeups.hub import Hub

# The session's queue of jobs that ended and whose dependents are still to settle, while
# ``ended`` works through them (a failure cascading down a chain is a loop, not a recursion).
_ENDED = "orchestrator.dependencies.ended"
# Dependents read per statement (bound parameters: PostgreSQL takes at most 65,535).
_CHUNK = 1000
# Where a session keeps the ids of jobs known to have no dependents: {id}.
_NO_DEPENDENTS = "orchestrator.dependencies.no_dependents"


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
    session: Session,
    project: str,
    depends_on: Sequence[DependencyCreate],
    document: Any,
    array_size: int | None,
) -> list[str] | None:
    """Refuse ``depends_on`` naming more than ``MAX_DEPENDENCIES`` jobs (422) or a job that is
    not in ``project`` (404, as any job of another project); a typed dependency on a
    submission that is not an array (``array_size`` None), or an ``N_TO_N`` one on a job that
    is not an array of that size (422). The ids whose outputs make the input
    (``input: {"from": [...]}``, each among the untyped ``depends_on``), or None."""
    if len(depends_on) > MAX_DEPENDENCIES:
        raise LimitExceeded(
            f"depends_on: {len(depends_on)} jobs is over the limit of {MAX_DEPENDENCIES}",
            field="depends_on",
        )
    ids = [dependency.job for dependency in depends_on if dependency.job is not None]
    sizes: dict[str, tuple[int | None, int | None]] = {}
    if ids:
        rows = session.exec(
            select(Job.id, Job.array_size, Job.array_index).where(
                Job.project == project, col(Job.id).in_(ids)
            )
        ).all()
        sizes = {job_id: (size, index) for job_id, size, index in rows}
        for job_id in ids:
            if job_id not in sizes:
                raise NotFound(f"depends_on: job '{job_id}' not found", field="depends_on")
    for position, dependency in enumerate(depends_on):
        if dependency.type is None:
            continue
        field = f"depends_on.{position}.type"
        if array_size is None:
            raise InvalidRequest(
                f"{field}: {dependency.type} waits child for child: it needs `array` on this "
                "submission",
                field=field,
            )
        if dependency.type is DependencyType.N_TO_N:
            assert dependency.job is not None
            size, index = sizes[dependency.job]
            if size != array_size or index is not None:
                raise InvalidRequest(
                    f"{field}: N_TO_N needs job '{dependency.job}' to be an array job of "
                    f"{array_size} children, as this one",
                    field=field,
                )
    whole = [d.job for d in depends_on if d.type is None and d.job is not None]
    return input_sources(document, whole)


def waits_whole(depends_on: Sequence[DependencyCreate]) -> list[DependencyCreate]:
    """The dependencies a job (an array: its parent) waits for as a whole: the untyped ones."""
    return [dependency for dependency in depends_on if dependency.type is None]


def link(session: Session, job: Job, depends_on: Sequence[DependencyCreate]) -> None:
    """Write the new ``job``'s ``depends_on`` as it was given, which the job shows. The links
    of an array's child-to-child forms are the parent's record of them (a ``SEQUENTIAL`` one
    names the array itself); its children wait through links of their own
    (``attach_children``), and no end settles a parent through them."""
    for position, dependency in enumerate(depends_on):
        session.add(
            JobDependency(
                job_id=job.id,
                dependency_id=dependency.job or job.id,
                position=position,
                release_on=dependency.on,
                type=dependency.type,
            )
        )


def attach(
    session: Session,
    hub: Hub | None,
    job: Job,
    depends_on: Sequence[DependencyCreate],
    move: Move,
) -> None:
    """Settle the new ``job`` (stored ``pending``, its events up to ``created`` recorded,
    linked by ``link``) against the dependencies it waits for as a whole: move it on at once
    if they all ended already, queued (or scheduled), or failed if one it needs to succeed
    did not. Else it stays ``pending``.

    The dependencies are locked first: one ending now either commits before this reads it
    (ended) or waits for this link to commit and then finds it."""
    ids = sorted(dependency.job for dependency in depends_on if dependency.job is not None)
    rows = session.execute(
        select(Job.id, Job.status, Job.output)
        .where(Job.project == job.project, col(Job.id).in_(ids))
        .order_by(col(Job.id))
        .with_for_update()
    ).all()
    statuses: dict[str, JobStatus] = {job_id: status for job_id, status, _ in rows}
    for dependency in depends_on:
        if dependency.job not in statuses:  # Deleted since ``check``.
            raise NotFound(f"depends_on: job '{dependency.job}' not found", field="depends_on")
    for dependency in depends_on:
        assert dependency.job is not None
        status = statuses[dependency.job]
        if status.terminal and not releases(dependency.on, status):
            _fail(session, hub, job, dependency.job, status, move)
            return
    waiting = [
        dependency.job
        for dependency in depends_on
        if dependency.job is not None and not statuses[dependency.job].terminal
    ]
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


def note_dependents(session: Session, job_ids: Sequence[str]) -> None:
    """Find which of ``job_ids`` (locked by the caller, so no dependent can be linked to them
    before the transaction ends) have dependents, so that ending the others in this
    transaction asks nothing more: a cancel of 10,000 children would otherwise query once per
    child, each query first flushing the child's change."""
    with_dependents: set[str] = set()
    for start in range(0, len(job_ids), _CHUNK):
        chunk = job_ids[start : start + _CHUNK]
        with_dependents.update(
            session.exec(
                select(JobDependency.dependency_id)
                .where(
                    col(JobDependency.dependency_id).in_(chunk),
                    col(JobDependency.type).is_(None),
                )
                .distinct()
            ).all()
        )
    known: set[str] = session.info.setdefault(_NO_DEPENDENTS, set())
    known.update(set(job_ids) - with_dependents)


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
    if dependency_id in session.info.get(_NO_DEPENDENTS, ()):
        return
    conditions = dict(
        session.execute(
            select(JobDependency.job_id, JobDependency.release_on).where(
                JobDependency.dependency_id == dependency_id,
                # A parent's record of its children's forms: they wait through their own.
                col(JobDependency.type).is_(None),
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
        .where(JobDependency.dependency_id == job_id, JobDependency.job_id != job_id)
    ).one()
    return [DependencyPublic.from_row(link, status) for link, status in rows], int(dependents)


def dependents(session: Session, job_id: str, limit: int) -> list[tuple[str, JobStatus]]:
    """The first ``limit`` jobs that depend on ``job_id`` (by id) with their statuses now, read
    through ``ix_job_dependencies_dependency`` (``shown`` counts them all)."""
    rows = session.execute(
        select(JobDependency.job_id, Job.status)
        .join(Job, col(Job.id) == JobDependency.job_id)
        .where(JobDependency.dependency_id == job_id, JobDependency.job_id != job_id)
        .order_by(col(JobDependency.job_id))
        .limit(limit)
    ).all()
    return [(dependent, JobStatus(status)) for dependent, status in rows]


def refuse_unbound(depends_on: Sequence[DependencyCreate]) -> None:
    """A job that waits for its queue's default definition cannot also wait for jobs."""
    if depends_on:
        raise InvalidRequest(
            "depends_on: a job without a definition cannot have dependencies",
            field="depends_on",
        )


def attach_children(
    session: Session, parent: Job, depends_on: Sequence[DependencyCreate]
) -> list[tuple[str, str, JobStatus]]:
    """Link the new array ``parent``'s children (inserted, their events not yet recorded) for
    its child-to-child forms: ``N_TO_N``, child i to child i of the array named; ``SEQUENTIAL``,
    child i to child i-1. Then count each child's open dependencies (its own not yet
    released, and its parent's as one while the parent is pending) and keep those with any
    ``pending``. A few statements, whatever the size. Returns (child, dependency, status) for
    each child whose dependency already ended in a way that fails it (``fail_children``)."""
    connection = session.connection()
    for dependency in depends_on:
        if dependency.type is None:
            continue
        # Which child each child waits for: the same index of the other array, or the one
        # before it in this array.
        if dependency.type is DependencyType.N_TO_N:
            pair = "d.parent_id = :other AND d.array_index = c.array_index"
        else:
            pair = "d.parent_id = :parent AND d.array_index = c.array_index - 1"
        connection.execute(
            sa.text(
                "INSERT INTO job_dependencies (job_id, dependency_id, position, release_on, type) "
                f"SELECT c.id, d.id, 0, :on, NULL FROM jobs AS c JOIN jobs AS d ON {pair} "
                "WHERE c.parent_id = :parent"
            ),
            {"parent": parent.id, "other": dependency.job, "on": str(dependency.on)},
        )
    gate = 1 if parent.status is JobStatus.PENDING else 0
    terminal = ", ".join(f"'{status}'" for status in sorted(TERMINAL))
    unreleased = (
        f"NOT (x.status IN ({terminal}) AND (d.release_on = 'finished' OR x.status = 'succeeded'))"
    )
    connection.execute(
        sa.text(
            "UPDATE jobs SET open_dependencies = :gate + (SELECT count(*) FROM job_dependencies "
            "AS d JOIN jobs AS x ON x.id = d.dependency_id WHERE d.job_id = jobs.id AND "
            f"{unreleased}) WHERE parent_id = :parent"
        ),
        {"gate": gate, "parent": parent.id},
    )
    connection.execute(
        sa.update(Job)
        .where(col(Job.parent_id) == parent.id, col(Job.open_dependencies) > 0)
        .values(status=JobStatus.PENDING)
    )
    doomed = connection.execute(
        sa.text(
            "SELECT d.job_id, d.dependency_id, x.status FROM job_dependencies AS d "
            "JOIN jobs AS c ON c.id = d.job_id JOIN jobs AS x ON x.id = d.dependency_id "
            "WHERE c.parent_id = :parent AND x.status IN ('failed', 'cancelled') "
            "AND d.release_on = 'succeeded' ORDER BY c.seq"
        ),
        {"parent": parent.id},
    ).all()
    first: dict[str, tuple[str, str, JobStatus]] = {}
    for child, dependency_id, status in doomed:
        first.setdefault(child, (child, dependency_id, JobStatus(status)))
    return list(first.values())


def fail_children(
    session: Session, hub: Hub | None, doomed: Sequence[tuple[str, str, JobStatus]], move: Move
) -> None:
    """Fail each child ``attach_children`` found doomed (its events recorded by now), naming
    the dependency that failed it; its own dependents follow, down the chain."""
    for child_id, dependency_id, status in doomed:
        child = session.exec(select(Job).where(Job.id == child_id).with_for_update()).one()
        if child.status is JobStatus.PENDING:
            _fail(session, hub, child, dependency_id, status, move)
