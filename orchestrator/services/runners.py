"""The runner registry: registration, heartbeats, drain requests and recovery of lost runners.

Every runner process has a row in ``runners``, keyed by its name and owned by one run of the
process (``session``). The row's ``state`` is what the runner or a drain request set
(``active``, ``draining``, ``stopped``); a runner whose heartbeat is older than the lease is
reported ``lost``, and the other runners take its jobs back (``attempts.recover``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.errors import Conflict, NotFound
from orchestrator.rules.fields import storable
from orchestrator.rules.reasons import FailureReason
from orchestrator.rules.runner_states import RunnerState, can_runner_transition
from orchestrator.rules.states import ACTIVE
from orchestrator.services import attempts, audit
from orchestrator.services.audit import Actor
from orchestrator.storage.db import after_commit
from orchestrator.storage.models import Installation, Job, RunnerRecord, utcnow
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.topics import control_topic


def installation_id(session: Session) -> str:
    """This database's installation id (made by its migration, never changed)."""
    return session.exec(select(Installation.id)).one()


@dataclass(frozen=True)
class Identity:
    """Who a runner process is: its name, this run of it, where it runs and what it takes."""

    name: str
    session: str
    docker_host: str
    capacity: int
    queues: list[str] | None
    version: str
    hostname: str = socket.gethostname()
    pid: int = os.getpid()


def _stale(row: RunnerRecord, lease: float, now: datetime) -> bool:
    return row.heartbeat_time < now - timedelta(seconds=lease)


def _gone_here(row: RunnerRecord) -> bool:
    """True when the row's process ran on this machine and has exited (e.g. ``kill -9``)."""
    if row.hostname != socket.gethostname():
        return False
    try:
        os.kill(row.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def register(session: Session, identity: Identity, lease: float) -> RunnerRecord:
    """Claim the runner's name for this run of the process.

    A name held by another live process (heartbeat within the lease) is refused: two processes
    under one name would both adopt the same containers. A process that stopped cleanly, whose
    lease ran out, or that died on this machine gives its name up at once.
    """
    now = utcnow()
    row = session.exec(
        select(RunnerRecord).where(RunnerRecord.name == identity.name).with_for_update()
    ).first()
    if (
        row is not None
        # A row without a session stands for a runner of an older release: the name is free.
        and row.session
        and row.session != identity.session
        and row.state != RunnerState.STOPPED
        and not _stale(row, lease, now)
        and not _gone_here(row)
    ):
        age = (now - row.heartbeat_time).total_seconds()
        raise Conflict(
            f"runner name '{identity.name}' is in use by pid {row.pid} on {row.hostname} "
            f"(last heartbeat {age:.0f} s ago); stop it, wait for its lease ({lease:g} s) "
            "to run out, or choose another name",
            field="name",
        )
    if row is None:
        row = RunnerRecord(
            name=identity.name,
            session=identity.session,
            pid=0,
            capacity=0,
            hostname="",
            docker_host="",
            state=RunnerState.ACTIVE,
            version="",
        )
    row.session = identity.session
    row.hostname = identity.hostname
    row.pid = identity.pid
    row.docker_host = identity.docker_host
    row.capacity = identity.capacity
    row.queues = identity.queues
    row.version = identity.version
    _move(row, RunnerState.ACTIVE)
    row.docker = "unknown"
    row.docker_error = None
    row.start_time = now
    row.heartbeat_time = now
    session.add(row)
    return row


def heartbeat(
    session: Session, identity: Identity, docker: str, docker_error: str | None
) -> RunnerState | None:
    """Renew the runner's lease; its state (a drain may have been asked for), or None when
    another process has taken the name over."""
    row = session.exec(
        select(RunnerRecord).where(RunnerRecord.name == identity.name).with_for_update()
    ).first()
    if row is None or row.session != identity.session:
        return None
    row.heartbeat_time = utcnow()
    row.docker = docker
    row.docker_error = docker_error
    session.add(row)
    return row.state


def _move(row: RunnerRecord, state: RunnerState) -> None:
    """Move ``row`` to ``state``: the one writer of ``RunnerRecord.state`` once the row exists.
    Conflict when the registry's table does not allow the move."""
    if row.state != state and not can_runner_transition(row.state, state):
        raise Conflict(f"runner '{row.name}' cannot go from {row.state} to {state}", field="state")
    row.state = state


def set_state(session: Session, identity: Identity, state: RunnerState) -> None:
    """Record the runner's own state change (draining, stopped); nothing when another process
    has taken the name over."""
    row = session.exec(
        select(RunnerRecord)
        .where(RunnerRecord.name == identity.name, RunnerRecord.session == identity.session)
        .with_for_update()
    ).first()
    if row is None:
        return
    _move(row, state)
    row.heartbeat_time = utcnow()
    session.add(row)


def recover_lost(
    session: Session, hub: Hub | None, lease: float, interruption_limit: int
) -> dict[str, list[str]]:
    """Take back the jobs of every runner whose lease ran out: {runner: recovered job ids}.

    Row locks (skipped when another runner holds them) make one runner do each recovery.
    """
    cutoff = utcnow() - timedelta(seconds=lease)
    holders = select(Job.runner).where(col(Job.status).in_(ACTIVE)).distinct()
    lost = session.exec(
        select(RunnerRecord)
        .where(col(RunnerRecord.heartbeat_time) < cutoff, col(RunnerRecord.name).in_(holders))
        .with_for_update(skip_locked=True)
    ).all()
    recovered: dict[str, list[str]] = {}
    for row in lost:
        ids = attempts.recover(
            session, hub, row.name, FailureReason.RUNNER_LOST, interruption_limit
        )
        if ids:
            recovered[row.name] = ids
    return recovered


@dataclass(frozen=True)
class RunnerView:
    """A runner as ``GET /v1/runners`` shows it."""

    record: RunnerRecord
    state: RunnerState
    running: int


def _view(row: RunnerRecord, running: int, lease: float, now: datetime) -> RunnerView:
    state = row.state
    if _stale(row, lease, now) and (state != RunnerState.STOPPED or running):
        state = RunnerState.LOST
    return RunnerView(record=row, state=state, running=running)


def _running_counts(session: Session) -> dict[str, int]:
    statement = (
        select(Job.runner, sa.func.count())
        .where(col(Job.status).in_(ACTIVE), col(Job.runner).is_not(None))
        .group_by(col(Job.runner))
    )
    return {runner: count for runner, count in session.exec(statement).all() if runner}


def list_runners(session: Session, lease: float) -> list[RunnerView]:
    """Every registered runner, by name, with its reported state and running jobs."""
    counts = _running_counts(session)
    now = utcnow()
    rows = session.exec(select(RunnerRecord).order_by(col(RunnerRecord.name))).all()
    return [_view(row, counts.get(row.name, 0), lease, now) for row in rows]


def get(session: Session, name: str, lease: float) -> RunnerView:
    """One runner; NotFound names it."""
    row = session.get(RunnerRecord, name) if storable(name) else None
    if row is None:
        raise NotFound(f"runner '{name}' not found", field="runner")
    return _view(row, _running_counts(session).get(name, 0), lease, utcnow())


def request_drain(
    session: Session, hub: Hub | None, name: str, lease: float, actor: Actor
) -> RunnerView:
    """Ask a runner to stop claiming and finish its jobs; it is woken at once (and sees the
    request at its next heartbeat anyway). Draining a draining runner changes nothing."""
    view = get(session, name, lease)
    if view.state in (RunnerState.STOPPED, RunnerState.LOST):
        raise Conflict(f"runner '{name}' is {view.state}; there is nothing to drain", field="name")
    row = session.exec(
        select(RunnerRecord).where(RunnerRecord.name == name).with_for_update()
    ).one()
    _move(row, RunnerState.DRAINING)
    session.add(row)
    audit.record(session, actor, "runner.drain", f"runner:{name}")
    if hub is not None:
        after_commit(session, lambda: hub.publish(control_topic(name)))
    return _view(row, view.running, lease, utcnow())
