"""Why a database is unreachable, in a few fixed words: an outage's log line says this, never
the driver's message, which may quote a statement or the values it bound."""

from __future__ import annotations

OUTAGE_REASONS = (
    ("connection refused", "connection refused"),
    ("not currently accepting connections", "not accepting connections"),
    ("the database system is", "the server is starting up or shutting down"),
    ("terminating connection", "the server ended the connection"),
    ("server closed the connection", "the server closed the connection"),
    ("timeout expired", "connection timed out"),
    ("could not translate host name", "host name not found"),
    ("too many clients", "too many connections"),
    ("authentication failed", "authentication failed"),
    ("unable to open database file", "cannot open the database file"),
)


def outage_reason(error: BaseException) -> str:
    """Why the database is unreachable, in a few words that quote nothing from ``error``
    (a SQLAlchemy error or the driver's own)."""
    driver_error = getattr(error, "orig", None) or error
    message = str(driver_error).lower()
    for fragment, reason in OUTAGE_REASONS:
        if fragment in message:
            return reason
    return type(driver_error).__name__


# A database that answered too late: SQLite's busy timeout ran out, or PostgreSQL gave up on a
# lock, a statement timeout or a deadlock (by SQLSTATE). The request may be tried again.
BUSY_MESSAGES = (
    ("database is locked", "the database is locked"),
    ("database table is locked", "the database is locked"),
)
BUSY_SQLSTATES = {
    "55P03": "a lock was not available",
    "57014": "a statement timed out",
    "40P01": "a deadlock was broken",
    "40001": "a serialization failure",
}


def busy_reason(error: BaseException) -> str | None:
    """Why the database answered too late, in a few fixed words; None when ``error`` (a
    SQLAlchemy error or the driver's own) is something else, such as a bug in a statement."""
    driver_error = getattr(error, "orig", None) or error
    sqlstate = getattr(driver_error, "sqlstate", None)
    if sqlstate in BUSY_SQLSTATES:
        return BUSY_SQLSTATES[sqlstate]
    message = str(driver_error).lower()
    for fragment, reason in BUSY_MESSAGES:
        if fragment in message:
            return reason
    return None
