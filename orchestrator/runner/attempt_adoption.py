"""What a restarted runner finds of an attempt it held: the container made by an attempt whose
container id was never recorded, and where supervision of an adopted attempt picks up (the
log's resume point, the attempt's clock, the bytes of its log stored already).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.docker.spec import (
    INSTALLATION_LABEL,
    LABEL_PREFIX,
    TES_EXECUTOR_LABEL,
    ContainerState,
)
from orchestrator.runner.log_pump import resume_since
from orchestrator.services import attempts, job_queries
from orchestrator.storage.models import Job, utcnow

if TYPE_CHECKING:
    from orchestrator.runner.context import AttemptContext


@dataclass(frozen=True)
class Resumption:
    """Where supervision of an adopted attempt picks up: ``since``, Docker's time (ns) to read
    the output from; ``started``, the attempt's start on the monotonic clock; ``stored``, bytes
    of its log stored already, so that it keeps its budget."""

    since: int | None
    started: float
    stored: int


def resumption(context: AttemptContext, job: Job) -> Resumption:
    """Where supervision of ``job``'s attempt, recorded as running, picks up."""
    with context.db.read() as session:
        resume = attempts.last_log_time(session, job.id, job.attempt)
    started = time.monotonic()
    if job.start_time is not None:
        started -= (utcnow() - job.start_time).total_seconds()
    return Resumption(
        since=resume_since(resume), started=started, stored=_stored_log_bytes(context, job)
    )


def _stored_log_bytes(context: AttemptContext, job: Job) -> int:
    """Bytes of the attempt's log stored already."""
    total = after = 0
    with context.db.read() as session:
        while rows := job_queries.logs(session, job.id, after, job.attempt):
            total += sum(len(row.text.encode()) for row in rows)
            assert rows[-1].id is not None
            after = rows[-1].id
    return total


def started_container(context: AttemptContext, job: Job) -> ContainerState | None:
    """The container that ``job``'s attempt started (running or exited), found by its labels
    in this installation; the attempt's other containers (never started, extra, or a TES
    task's executors) are removed. None if it started none."""
    engine = context.engine
    labels = {
        f"{LABEL_PREFIX}job-id": job.id,
        f"{LABEL_PREFIX}attempt": str(job.attempt),
    }
    started: ContainerState | None = None
    for container_id in engine.list_labelled(labels):
        state = engine.state(container_id)
        if state is None:
            continue
        if state.labels.get(INSTALLATION_LABEL, context.installation) != context.installation:
            continue
        # A TES task's executor is never the attempt's container: a restarted runner cannot
        # resume the task's run, so what it left is removed (``tes_run``).
        if state.never_started or started is not None or TES_EXECUTOR_LABEL in state.labels:
            engine.remove(container_id)
        else:
            started = state
    return started
