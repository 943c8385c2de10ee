"""Job states, event types and the one table of allowed transitions.

Who moves a job out of each state:
- ``pending``: the end of its last open dependency (``services.dependencies``, in that job's
  ending transaction): to ``queued`` (or ``scheduled`` until ``schedule_at``), or to ``failed``
  when a dependency it needs to succeed did not; or a cancel.
- ``scheduled``: the scheduler (at ``schedule_at``), or a cancel.
- ``queued``: a runner's claim, or a cancel.
- ``starting``: the runner that claimed it (container started, start failed, engine down), or a
  cancel it carries out.
- ``running``: the runner that holds it (exit, timeout, cancel).
- ``succeeded``, ``failed``, ``cancelled``: nobody; they are terminal.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """Where a job is in its life cycle."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for states nothing leaves."""
        return self in TERMINAL


class EventType(StrEnum):
    """What an event on a job records."""

    CREATED = "created"
    PENDING = "pending"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    STARTING = "starting"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    REQUEUED = "requeued"
    INTERRUPTED = "interrupted"
    RUNNER_LOST = "runner_lost"
    TIMED_OUT = "timed_out"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELLED = "cancelled"
    WEBHOOK_DELIVERED = "webhook_delivered"
    WEBHOOK_FAILED = "webhook_failed"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
WAITING = frozenset({JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.QUEUED})
ACTIVE = frozenset({JobStatus.STARTING, JobStatus.RUNNING})
# Not finished: waiting or active (a job name is unique among these in its queue).
UNFINISHED = WAITING | ACTIVE

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset(
        {JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.SCHEDULED: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    JobStatus.QUEUED: frozenset({JobStatus.STARTING, JobStatus.CANCELLED}),
    JobStatus.STARTING: frozenset(
        {JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.QUEUED, JobStatus.CANCELLED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def can_transition(current: JobStatus, new: JobStatus) -> bool:
    """Whether the life cycle allows ``current`` -> ``new``."""
    return new in TRANSITIONS[current]
