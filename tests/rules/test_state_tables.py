"""The transition tables of schedules, schedule runs, webhook deliveries and runners: every
state is placed, terminal states have no exits, and the moves the code makes are allowed while
a few it must never make are not."""

from __future__ import annotations

from enum import StrEnum
from typing import get_args

import pytest

from orchestrator.rules.delivery_states import (
    DELIVERY_TRANSITIONS,
    DeliveryStatus,
    can_delivery_transition,
)
from orchestrator.rules.runner_states import (
    RUNNER_TRANSITIONS,
    RunnerProcessState,
    RunnerState,
    can_runner_transition,
)
from orchestrator.rules.schedule_states import (
    FINISHED,
    HTTP_UNFINISHED,
    RUN_TRANSITIONS,
    SCHEDULE_TRANSITIONS,
    ScheduleRunStatus,
    ScheduleStatus,
    can_run_transition,
    can_schedule_transition,
)
from orchestrator.schemas import schedules as schedule_schemas

Table = dict[StrEnum, frozenset[StrEnum]]
TABLES: list[tuple[type[StrEnum], Table]] = [
    (ScheduleStatus, SCHEDULE_TRANSITIONS),  # type: ignore[list-item]
    (ScheduleRunStatus, RUN_TRANSITIONS),  # type: ignore[list-item]
    (DeliveryStatus, DELIVERY_TRANSITIONS),  # type: ignore[list-item]
    (RunnerState, RUNNER_TRANSITIONS),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("vocabulary", "table"), TABLES, ids=lambda v: getattr(v, "__name__", ""))
def test_every_state_is_placed_and_moves_only_within_its_vocabulary(
    vocabulary: type[StrEnum], table: Table
) -> None:
    assert set(table) == set(vocabulary)
    for current, targets in table.items():
        assert targets <= set(vocabulary)
        assert current not in targets  # staying put is not a move


@pytest.mark.parametrize(("vocabulary", "table"), TABLES, ids=lambda v: getattr(v, "__name__", ""))
def test_the_stored_words_fit_their_column(vocabulary: type[StrEnum], table: Table) -> None:
    # The columns are VARCHAR(16); the words are the strings stored before the enums existed.
    assert all(len(state.value) <= 16 for state in vocabulary)
    assert len({state.value for state in vocabulary}) == len(vocabulary)


def test_stored_words_are_the_ones_rows_already_hold() -> None:
    assert [s.value for s in ScheduleStatus] == ["active", "paused", "completed", "failed"]
    assert {s.value for s in ScheduleRunStatus} == {
        "",
        "pending",
        "running",
        "submitted",
        "succeeded",
        "failed",
        "skipped",
        "missed",
        "replaced",
    }
    assert [s.value for s in DeliveryStatus] == ["pending", "sending", "delivered", "failed"]
    assert [s.value for s in RunnerState] == ["active", "draining", "stopped", "lost"]


def test_the_api_lists_the_schedule_words() -> None:
    assert set(get_args(schedule_schemas.ScheduleStatus)) == {s.value for s in ScheduleStatus}


# --- schedules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "new"),
    [
        ("active", "paused"),  # a user pauses
        ("paused", "active"),  # a user resumes
        ("active", "completed"),  # a one-shot's tick is taken
        ("active", "failed"),  # ... and its run failed, or it could not be fired
        ("completed", "active"),  # a new time for a finished one-shot
        ("failed", "paused"),  # a user pauses a finished one
        ("paused", "completed"),  # a one-shot's HTTP run ends after it was paused
        ("completed", "failed"),  # a one-shot run again by hand, and failing
    ],
)
def test_the_schedule_moves_the_code_makes_are_allowed(current: str, new: str) -> None:
    assert can_schedule_transition(ScheduleStatus(current), ScheduleStatus(new))


def test_a_finished_schedule_is_not_terminal_a_new_time_revives_it() -> None:
    assert FINISHED == {ScheduleStatus.COMPLETED, ScheduleStatus.FAILED}
    for finished in FINISHED:
        assert can_schedule_transition(finished, ScheduleStatus.ACTIVE)


# --- schedule runs ---------------------------------------------------------------------------

RUN_TERMINAL = {"submitted", "succeeded", "failed", "skipped", "missed", "replaced"}


def test_run_states_nothing_leaves() -> None:
    ends = {state.value for state, targets in RUN_TRANSITIONS.items() if not targets}
    assert ends == RUN_TERMINAL


def test_a_firing_run_gets_its_first_status_and_is_never_left_firing() -> None:
    firing = ScheduleRunStatus.FIRING
    assert firing.value == ""
    assert RUN_TRANSITIONS[firing] == {
        ScheduleRunStatus.SKIPPED,
        ScheduleRunStatus.SUBMITTED,
        ScheduleRunStatus.FAILED,
        ScheduleRunStatus.PENDING,
    }
    assert not any(firing in targets for targets in RUN_TRANSITIONS.values())


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("pending", "running", True),  # the HTTP executor's claim
        ("running", "pending", True),  # a retry is due
        ("running", "succeeded", True),
        ("pending", "replaced", True),  # overlap replace, or a new target
        ("running", "replaced", True),  # overlap replace
        ("pending", "succeeded", False),  # only an attempt in flight has an outcome
        ("replaced", "running", False),  # a replaced run is never sent again
        ("succeeded", "pending", False),
        ("missed", "pending", False),
        ("submitted", "failed", False),  # a job run's outcome is its job's, not the run's
    ],
)
def test_run_moves(current: str, new: str, allowed: bool) -> None:
    assert can_run_transition(ScheduleRunStatus(current), ScheduleRunStatus(new)) is allowed


def test_http_runs_still_going_are_the_ones_that_can_still_be_replaced() -> None:
    replaceable = {s for s, t in RUN_TRANSITIONS.items() if ScheduleRunStatus.REPLACED in t}
    assert replaceable == HTTP_UNFINISHED


# --- webhook deliveries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("pending", "sending", True),
        ("sending", "delivered", True),
        ("sending", "pending", True),
        ("sending", "failed", True),
        ("pending", "delivered", False),  # not without a send
        ("delivered", "pending", False),  # a redelivery is a new delivery
        ("failed", "sending", False),
    ],
)
def test_delivery_moves(current: str, new: str, allowed: bool) -> None:
    assert can_delivery_transition(DeliveryStatus(current), DeliveryStatus(new)) is allowed


def test_delivered_and_failed_are_terminal() -> None:
    ends = {state for state, targets in DELIVERY_TRANSITIONS.items() if not targets}
    assert ends == {DeliveryStatus.DELIVERED, DeliveryStatus.FAILED}


# --- runners ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("active", "draining", True),
        ("draining", "stopped", True),
        ("active", "stopped", True),
        ("stopped", "active", True),  # a new run of the process registers
        ("draining", "active", True),  # ... after one that died draining
        ("stopped", "draining", False),  # a stopped runner has nothing to drain
        ("active", "lost", False),  # lost is reported, never stored
        ("lost", "active", False),
    ],
)
def test_runner_moves(current: str, new: str, allowed: bool) -> None:
    assert can_runner_transition(RunnerState(current), RunnerState(new)) is allowed


def test_lost_is_never_stored_so_nothing_moves_into_or_out_of_it() -> None:
    assert RUNNER_TRANSITIONS[RunnerState.LOST] == frozenset()
    assert not any(RunnerState.LOST in targets for targets in RUNNER_TRANSITIONS.values())


def test_a_process_reports_itself_in_its_own_words() -> None:
    # Shared words mean the same; the process's own three are never stored in the registry.
    shared = {s.value for s in RunnerProcessState} & {s.value for s in RunnerState}
    assert shared == {"active", "draining", "stopped"}
    assert {s.value for s in RunnerProcessState} - shared == {
        "waiting_for_name",
        "waiting_for_engine",
        "stopping",
    }
