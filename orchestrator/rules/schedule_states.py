"""Schedule and schedule-run states, and the tables of their allowed transitions.

Who moves a schedule out of each state (``services.schedules.set_status`` writes them all):
- ``active``: a user's pause (-> ``paused``); the scheduler, once a one-shot's tick (or a cron
  schedule's last) is taken without an HTTP run still to finish (-> ``completed``, or
  ``failed`` when its run failed or was missed), or when the schedule cannot be fired at all
  (-> ``failed``); the HTTP executor, when a one-shot's HTTP run ends (-> ``completed`` or
  ``failed``).
- ``paused``: a user's resume (-> ``active``); the HTTP executor, when the run of a one-shot
  paused after its tick ends (-> ``completed`` or ``failed``); the scheduler setting aside a
  schedule paused while its failed pass ran (-> ``failed``).
- ``completed``, ``failed``: a user's change of time (-> ``active``) or pause (-> ``paused``);
  the HTTP executor, when another run of the one-shot (one triggered by hand) ends
  (-> ``completed`` or ``failed``: a one-shot's status is its last run's outcome). A finished
  schedule is not terminal: a new time makes it live again.

Who moves a run out of each state (``services.schedules.set_run_status`` writes them):
- ``firing`` (stored as ``""``): the scheduler's ``fire``, in the transaction that made the run
  (-> ``skipped`` by overlap ``skip``, ``submitted`` with its job, ``failed`` when the job was
  refused, ``pending`` for an HTTP request); never committed.
- ``pending``: the HTTP executor's claim (-> ``running``); the scheduler's overlap ``replace``
  or a change of the schedule's target (-> ``replaced``).
- ``running``: the HTTP executor recording the attempt, or an attempt whose lease ran out
  (-> ``pending`` for a retry, ``succeeded``, ``failed``); the scheduler's overlap ``replace``
  (-> ``replaced``).
- ``submitted``: nobody; the API shows its job's status instead (the job moves, the run not).
- ``missed`` (written as such: a record of ticks not run), ``skipped``, ``succeeded``,
  ``failed``, ``replaced``: nobody; they are terminal.
"""

from __future__ import annotations

from enum import StrEnum


class ScheduleStatus(StrEnum):
    """Whether a schedule fires."""

    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"


# A schedule whose one-shot (or last cron tick) has had its turn.
FINISHED = frozenset({ScheduleStatus.COMPLETED, ScheduleStatus.FAILED})

# Every move is made by someone (see the module docstring): the table says so explicitly, so
# that a new state has to be placed in it.
SCHEDULE_TRANSITIONS: dict[ScheduleStatus, frozenset[ScheduleStatus]] = {
    ScheduleStatus.ACTIVE: frozenset(
        {ScheduleStatus.PAUSED, ScheduleStatus.COMPLETED, ScheduleStatus.FAILED}
    ),
    ScheduleStatus.PAUSED: frozenset(
        {ScheduleStatus.ACTIVE, ScheduleStatus.COMPLETED, ScheduleStatus.FAILED}
    ),
    ScheduleStatus.COMPLETED: frozenset(
        {ScheduleStatus.ACTIVE, ScheduleStatus.PAUSED, ScheduleStatus.FAILED}
    ),
    ScheduleStatus.FAILED: frozenset(
        {ScheduleStatus.ACTIVE, ScheduleStatus.PAUSED, ScheduleStatus.COMPLETED}
    ),
}


def can_schedule_transition(current: ScheduleStatus, new: ScheduleStatus) -> bool:
    """Whether a schedule may go from ``current`` to ``new``."""
    return new in SCHEDULE_TRANSITIONS[current]


class ScheduleRunStatus(StrEnum):
    """Where one firing of a schedule (or a record of missed ticks) is."""

    # A run being fired: ``fire`` gives it its first real status before its transaction ends.
    FIRING = ""
    PENDING = "pending"
    RUNNING = "running"
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    MISSED = "missed"
    REPLACED = "replaced"


# Runs of HTTP targets that are still going (overlap looks at them).
HTTP_UNFINISHED = frozenset({ScheduleRunStatus.PENDING, ScheduleRunStatus.RUNNING})

RUN_TRANSITIONS: dict[ScheduleRunStatus, frozenset[ScheduleRunStatus]] = {
    ScheduleRunStatus.FIRING: frozenset(
        {
            ScheduleRunStatus.SKIPPED,
            ScheduleRunStatus.SUBMITTED,
            ScheduleRunStatus.FAILED,
            ScheduleRunStatus.PENDING,
        }
    ),
    ScheduleRunStatus.PENDING: frozenset({ScheduleRunStatus.RUNNING, ScheduleRunStatus.REPLACED}),
    ScheduleRunStatus.RUNNING: frozenset(
        {
            ScheduleRunStatus.PENDING,
            ScheduleRunStatus.SUCCEEDED,
            ScheduleRunStatus.FAILED,
            ScheduleRunStatus.REPLACED,
        }
    ),
    ScheduleRunStatus.SUBMITTED: frozenset(),
    ScheduleRunStatus.SUCCEEDED: frozenset(),
    ScheduleRunStatus.FAILED: frozenset(),
    ScheduleRunStatus.SKIPPED: frozenset(),
    ScheduleRunStatus.MISSED: frozenset(),
    ScheduleRunStatus.REPLACED: frozenset(),
}


def can_run_transition(current: ScheduleRunStatus, new: ScheduleRunStatus) -> bool:
    """Whether a schedule run may go from ``current`` to ``new``."""
    return new in RUN_TRANSITIONS[current]
