"""Worker container states, as runners record them: SaladCloud's container-group instance states
that have a counterpart here, with the table of their allowed moves.

Who moves a row out of each state (``services.worker_containers`` writes them all, each for the
runner whose container it is):
- ``creating`` (how a row starts, once the container exists): the runner, when the container
  answers its readiness check (-> ``running``) or is removed before it does (-> ``stopping``).
- ``running``: the runner, when it removes the container: idle too long, dead, or the runner
  stopping (-> ``stopping``).
- ``stopping``: the runner, once the container is gone (the row is deleted). A removal that
  failed leaves the row here until the runner's next process removes what it left.

SaladCloud's ``allocating`` and ``downloading`` have no counterpart: a worker container is
created on a host already chosen, and the engine pulls its image before it exists.
"""

from __future__ import annotations

from enum import StrEnum


class WorkerState(StrEnum):
    """A worker container as its runner records it."""

    CREATING = "creating"
    RUNNING = "running"
    STOPPING = "stopping"


WORKER_TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    WorkerState.CREATING: frozenset({WorkerState.RUNNING, WorkerState.STOPPING}),
    WorkerState.RUNNING: frozenset({WorkerState.STOPPING}),
    WorkerState.STOPPING: frozenset(),
}


def can_worker_transition(current: WorkerState, new: WorkerState) -> bool:
    """Whether a worker container's row may go from ``current`` to ``new``."""
    return new in WORKER_TRANSITIONS[current]
