"""What a database error is called in a log line and an API answer: fixed words that quote
nothing of the driver's message (which may hold a statement and its values)."""

from __future__ import annotations

import sqlite3

import pytest

from orchestrator.rules.outages import busy_reason, outage_reason


class DriverError(Exception):
    """A driver's error as psycopg raises it: a message and a SQLSTATE."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (sqlite3.OperationalError("database is locked"), "the database is locked"),
        (
            DriverError("canceling statement due to lock timeout", "55P03"),
            "a lock was not available",
        ),
        (
            DriverError("canceling statement due to statement timeout", "57014"),
            "a statement timed out",
        ),
        (DriverError("deadlock detected", "40P01"), "a deadlock was broken"),
    ],
)
def test_a_database_that_answered_too_late_is_busy(error: Exception, reason: str) -> None:
    assert busy_reason(error) == reason


@pytest.mark.parametrize(
    "error",
    [
        sqlite3.OperationalError("no such table: secret_table"),
        DriverError('relation "x" does not exist', "42P01"),
        DriverError("connection refused"),
    ],
)
def test_a_bug_or_an_outage_is_not_busy(error: Exception) -> None:
    assert busy_reason(error) is None


def test_an_outage_reason_quotes_nothing_of_an_unknown_message() -> None:
    error = DriverError("SELECT password FROM users WHERE token = 'hunter2'")
    assert outage_reason(error) == "DriverError"
    assert (
        outage_reason(DriverError("could not connect: Connection refused")) == "connection refused"
    )
