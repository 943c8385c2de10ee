"""Runner states: the registry's, with the table of their allowed transitions, and the words a
runner process reports about itself.

Who moves a registry row out of each state (``services.runners`` writes them all):
- ``active`` (how a runner registers): the runner itself, draining (-> ``draining``) or leaving
  without a drain (-> ``stopped``); a drain request (-> ``draining``).
- ``draining``: the runner, once the drain is over (-> ``stopped``); a new run of the process
  registering under the name after this one died or its lease ran out (-> ``active``).
- ``stopped``: a new run of the process registering under the name (-> ``active``).
- ``lost``: never stored. It is how a row whose heartbeat is older than the lease is reported
  (its stored state is still ``active`` or ``draining``), so nothing moves into or out of it.

``RunnerProcessState`` is a different vocabulary: what one runner process says about itself on
``/healthz``, worked out afresh from its own flags at each call. It shares three words with the
registry but is not stored and has no transitions: ``waiting_for_name`` is a process that has no
row of its own yet, ``waiting_for_engine`` one whose row is ``active`` while its engine is away,
and a process never sees itself ``lost``.
"""

from __future__ import annotations

from enum import StrEnum


class RunnerState(StrEnum):
    """A runner as the registry records (or, for ``lost``, reports) it."""

    ACTIVE = "active"
    DRAINING = "draining"
    STOPPED = "stopped"
    LOST = "lost"


RUNNER_TRANSITIONS: dict[RunnerState, frozenset[RunnerState]] = {
    RunnerState.ACTIVE: frozenset({RunnerState.DRAINING, RunnerState.STOPPED}),
    RunnerState.DRAINING: frozenset({RunnerState.STOPPED, RunnerState.ACTIVE}),
    RunnerState.STOPPED: frozenset({RunnerState.ACTIVE}),
    RunnerState.LOST: frozenset(),
}


def can_runner_transition(current: RunnerState, new: RunnerState) -> bool:
    """Whether a runner's row may go from ``current`` to ``new``."""
    return new in RUNNER_TRANSITIONS[current]


class RunnerProcessState(StrEnum):
    """What a runner process reports about itself (``/healthz``); derived, never stored."""

    ACTIVE = "active"
    WAITING_FOR_NAME = "waiting_for_name"
    WAITING_FOR_ENGINE = "waiting_for_engine"
    DRAINING = "draining"
    # Told to stop (or a loop of it died); its loops are still ending.
    STOPPING = "stopping"
    STOPPED = "stopped"
