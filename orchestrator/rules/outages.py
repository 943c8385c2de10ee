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
